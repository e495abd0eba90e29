package objectstore

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	osscreds "github.com/aliyun/alibabacloud-oss-go-sdk-v2/oss/credentials"
	"github.com/aliyun/credentials-go/credentials/providers"
	"github.com/sirupsen/logrus"
)

// Environment variables of the Alibaba Cloud credential chain. The dotenv
// credentials file uses the same names.
const (
	EnvAccessKeyID     = "ALIBABA_CLOUD_ACCESS_KEY_ID"
	EnvAccessKeySecret = "ALIBABA_CLOUD_ACCESS_KEY_SECRET"
	EnvSecurityToken   = "ALIBABA_CLOUD_SECURITY_TOKEN"
	EnvRoleARN         = "ALIBABA_CLOUD_ROLE_ARN"
	EnvOIDCProviderARN = "ALIBABA_CLOUD_OIDC_PROVIDER_ARN"
	EnvOIDCTokenFile   = "ALIBABA_CLOUD_OIDC_TOKEN_FILE"
	// EnvCredentialsFile names a credentials file: `velero install
	// --secret-file` mounts the Secret at /credentials/cloud and sets it.
	EnvCredentialsFile  = "ALIBABA_CLOUD_CREDENTIALS_FILE"
	iniKeyAccessKeyID   = "access_key_id"
	iniKeyAccessKeySec  = "access_key_secret"
	iniKeySecurityToken = "security_token"
	iniDefaultSection   = "default"

	roleSessionName = "velero-plugin-for-etcd"
)

// credentialsFileRecheck bounds how often a credentials file is stat'ed to
// notice a rotated Secret.
var credentialsFileRecheck = 10 * time.Second

// staticCredentials is one set of keys read from a file or the environment.
type staticCredentials struct {
	accessKeyID, accessKeySecret, securityToken string
}

func (s staticCredentials) oss() osscreds.Credentials {
	return osscreds.Credentials{AccessKeyID: s.accessKeyID, AccessKeySecret: s.accessKeySecret, SecurityToken: s.securityToken}
}

// parseCredentials reads the dotenv form (ALIBABA_CLOUD_ACCESS_KEY_ID=...) or
// the INI form ([default] access_key_id = ...). Errors say what is wrong and on
// which line, never what the line contains.
func parseCredentials(content []byte) (staticCredentials, error) {
	var (
		out       staticCredentials
		section   string
		sawINI    bool
		sawDotenv bool
	)
	sc := bufio.NewScanner(bytes.NewReader(content))
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	lineNo := 0
	for sc.Scan() {
		lineNo++
		line := strings.TrimSpace(strings.TrimSuffix(sc.Text(), "\r"))
		if lineNo == 1 {
			line = strings.TrimPrefix(line, "\uFEFF")
		}
		if line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";") {
			continue
		}
		if strings.HasPrefix(line, "[") {
			if !strings.HasSuffix(line, "]") {
				return out, fmt.Errorf("line %d: unterminated section header", lineNo)
			}
			section = strings.TrimSpace(line[1 : len(line)-1])
			sawINI = true
			continue
		}
		line = strings.TrimSpace(strings.TrimPrefix(line, "export "))
		name, value, ok := strings.Cut(line, "=")
		if !ok {
			return out, fmt.Errorf("line %d: expected KEY=VALUE", lineNo)
		}
		name = strings.TrimSpace(name)
		value, err := unquote(strings.TrimSpace(value))
		if err != nil {
			return out, fmt.Errorf("line %d (%s): %w", lineNo, name, err)
		}
		if sawINI {
			if section != iniDefaultSection {
				continue
			}
			switch strings.ToLower(name) {
			case iniKeyAccessKeyID:
				out.accessKeyID = value
			case iniKeyAccessKeySec:
				out.accessKeySecret = value
			case iniKeySecurityToken:
				out.securityToken = value
			}
			continue
		}
		sawDotenv = true
		switch name {
		case EnvAccessKeyID:
			out.accessKeyID = value
		case EnvAccessKeySecret:
			out.accessKeySecret = value
		case EnvSecurityToken:
			out.securityToken = value
		}
	}
	if err := sc.Err(); err != nil {
		return out, fmt.Errorf("reading: %w", err)
	}
	if sawINI && sawDotenv {
		return out, errors.New("mixes KEY=VALUE lines before a [section] with INI sections")
	}
	idName, secretName := EnvAccessKeyID, EnvAccessKeySecret
	if sawINI {
		idName, secretName = "["+iniDefaultSection+"] "+iniKeyAccessKeyID, "["+iniDefaultSection+"] "+iniKeyAccessKeySec
	}
	switch {
	case out.accessKeyID == "" && out.accessKeySecret == "":
		return out, fmt.Errorf("no credentials found: expected %s and %s", idName, secretName)
	case out.accessKeyID == "":
		return out, fmt.Errorf("%s is missing or empty", idName)
	case out.accessKeySecret == "":
		return out, fmt.Errorf("%s is missing or empty", secretName)
	}
	return out, nil
}

// unquote strips matching quotes, or an inline " #" comment from a bare value.
func unquote(v string) (string, error) {
	if len(v) > 0 && (v[0] == '"' || v[0] == '\'') {
		q := v[0]
		end := strings.IndexByte(v[1:], q)
		if end < 0 {
			return "", errors.New("unterminated quoted value")
		}
		rest := strings.TrimSpace(v[end+2:])
		if rest != "" && !strings.HasPrefix(rest, "#") {
			return "", errors.New("unexpected text after quoted value")
		}
		return v[1 : end+1], nil
	}
	if i := strings.Index(v, " #"); i >= 0 {
		v = strings.TrimSpace(v[:i])
	}
	return v, nil
}

// fileCredentialsProvider serves keys from a credentials file and re-reads it
// when its mtime or size changes, so a rotated Secret takes effect without a
// restart. A rewrite that fails to parse keeps the previous keys.
type fileCredentialsProvider struct {
	path    string
	log     logrus.FieldLogger
	recheck time.Duration
	now     func() time.Time

	mu        sync.Mutex
	creds     staticCredentials
	modTime   time.Time
	size      int64
	lastCheck time.Time
}

func newFileCredentialsProvider(path string, log logrus.FieldLogger) (*fileCredentialsProvider, error) {
	p := &fileCredentialsProvider{path: path, log: log, recheck: credentialsFileRecheck, now: time.Now}
	st, creds, err := loadCredentialsFile(path)
	if err != nil {
		return nil, err
	}
	p.creds, p.modTime, p.size, p.lastCheck = creds, st.ModTime(), st.Size(), p.now()
	return p, nil
}

func loadCredentialsFile(path string) (os.FileInfo, staticCredentials, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, staticCredentials{}, fmt.Errorf("credentials file %q: %w", path, unwrapPathError(err))
	}
	content, err := os.ReadFile(path)
	if err != nil {
		return nil, staticCredentials{}, fmt.Errorf("credentials file %q: %w", path, unwrapPathError(err))
	}
	creds, err := parseCredentials(content)
	if err != nil {
		return nil, staticCredentials{}, fmt.Errorf("credentials file %q: %w", path, err)
	}
	return st, creds, nil
}

// unwrapPathError drops the *PathError wrapper so the path is not printed twice.
func unwrapPathError(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

func (p *fileCredentialsProvider) GetCredentials(context.Context) (osscreds.Credentials, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if now := p.now(); now.Sub(p.lastCheck) >= p.recheck {
		p.lastCheck = now
		p.reloadLocked()
	}
	return p.creds.oss(), nil
}

func (p *fileCredentialsProvider) reloadLocked() {
	st, err := os.Stat(p.path)
	if err != nil {
		p.log.WithError(unwrapPathError(err)).WithField("file", p.path).Warn("Cannot stat OSS credentials file; keeping the credentials loaded before")
		return
	}
	if st.ModTime().Equal(p.modTime) && st.Size() == p.size {
		return
	}
	st, creds, err := loadCredentialsFile(p.path)
	if err != nil {
		p.log.WithError(err).Warn("Cannot reload changed OSS credentials file; keeping the credentials loaded before")
		return
	}
	p.creds, p.modTime, p.size = creds, st.ModTime(), st.Size()
	p.log.WithField("file", p.path).Info("Reloaded changed OSS credentials file")
}

// refreshingProvider adapts a credentials-go provider (RRSA/OIDC, ECS RAM
// role) to the OSS SDK. Those providers cache and refresh their session
// themselves but are not safe for concurrent use, and the SDK asks for
// credentials from every parallel part upload.
type refreshingProvider struct {
	mu       sync.Mutex
	provider providers.CredentialsProvider
}

func (r *refreshingProvider) GetCredentials(ctx context.Context) (osscreds.Credentials, error) {
	if err := ctx.Err(); err != nil {
		return osscreds.Credentials{}, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	c, err := r.provider.GetCredentials()
	if err != nil {
		return osscreds.Credentials{}, fmt.Errorf("getting %s credentials: %w", r.provider.GetProviderName(), err)
	}
	return osscreds.Credentials{AccessKeyID: c.AccessKeyId, AccessKeySecret: c.AccessKeySecret, SecurityToken: c.SecurityToken}, nil
}

type staticProvider staticCredentials

func (s staticProvider) GetCredentials(context.Context) (osscreds.Credentials, error) {
	return staticCredentials(s).oss(), nil
}

// credentialSource is the chosen provider and a description that is safe to log.
type credentialSource struct {
	provider osscreds.CredentialsProvider
	name     string
}

// resolveCredentials applies the documented order: credentials content (from
// InitWithCredentials), the location's credentials file, the file named by
// ALIBABA_CLOUD_CREDENTIALS_FILE, environment keys, RRSA/OIDC, ECS RAM role.
// Nothing is ever written into the process environment: each store keeps its
// own keys.
func resolveCredentials(content []byte, file string, getenv func(string) string, log logrus.FieldLogger) (credentialSource, error) {
	switch {
	case content != nil:
		c, err := parseCredentials(content)
		if err != nil {
			return credentialSource{}, fmt.Errorf("credentials passed to InitWithCredentials: %w", err)
		}
		return credentialSource{staticProvider(c), "credentials content"}, nil
	case file != "":
		p, err := newFileCredentialsProvider(file, log)
		if err != nil {
			return credentialSource{}, err
		}
		return credentialSource{p, "credentials file " + file}, nil
	}
	// A location without spec.credential, on a Velero installed with
	// --secret-file: Velero passes no file, but its pod (and so this plugin
	// process) has the variable. A set variable with no readable file is an
	// error rather than a silent fall through to other credentials.
	if path := getenv(EnvCredentialsFile); path != "" {
		p, err := newFileCredentialsProvider(path, log)
		if err != nil {
			return credentialSource{}, fmt.Errorf("environment variable %s: %w", EnvCredentialsFile, err)
		}
		return credentialSource{p, "credentials file " + path + " (" + EnvCredentialsFile + ")"}, nil
	}

	id, secret := getenv(EnvAccessKeyID), getenv(EnvAccessKeySecret)
	switch {
	case id != "" && secret != "":
		return credentialSource{staticProvider{accessKeyID: id, accessKeySecret: secret, securityToken: getenv(EnvSecurityToken)}, "environment " + EnvAccessKeyID}, nil
	case id != "":
		return credentialSource{}, fmt.Errorf("environment variable %s is set but %s is not", EnvAccessKeyID, EnvAccessKeySecret)
	case secret != "":
		return credentialSource{}, fmt.Errorf("environment variable %s is set but %s is not", EnvAccessKeySecret, EnvAccessKeyID)
	}

	if getenv(EnvOIDCProviderARN) != "" || getenv(EnvOIDCTokenFile) != "" {
		p, err := providers.NewOIDCCredentialsProviderBuilder().
			WithRoleArn(getenv(EnvRoleARN)).
			WithOIDCProviderARN(getenv(EnvOIDCProviderARN)).
			WithOIDCTokenFilePath(getenv(EnvOIDCTokenFile)).
			WithRoleSessionName(roleSessionName).
			Build()
		if err != nil {
			return credentialSource{}, fmt.Errorf("RRSA/OIDC credentials (%s, %s, %s): %w", EnvRoleARN, EnvOIDCProviderARN, EnvOIDCTokenFile, err)
		}
		return credentialSource{&refreshingProvider{provider: p}, "RRSA/OIDC role " + getenv(EnvRoleARN)}, nil
	}

	p, err := providers.NewECSRAMRoleCredentialsProviderBuilder().Build()
	if err != nil {
		return credentialSource{}, fmt.Errorf("no OSS credentials found: set %s (or use InitWithCredentials), %s, %s/%s, RRSA (%s, %s, %s), or run with an ECS RAM role (%w)",
			ConfigCredentialsFile, EnvCredentialsFile, EnvAccessKeyID, EnvAccessKeySecret, EnvRoleARN, EnvOIDCProviderARN, EnvOIDCTokenFile, err)
	}
	return credentialSource{&refreshingProvider{provider: p}, "ECS RAM role"}, nil
}
