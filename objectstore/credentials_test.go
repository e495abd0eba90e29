package objectstore

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const (
	testID     = "LTAItestkeyid0001"
	testSecret = "s3cr3t-value-never-print"
	testToken  = "sts-token-never-print"
)

func TestParseCredentialsForms(t *testing.T) {
	for _, tc := range []struct {
		name      string
		content   string
		wantToken string
	}{
		{"dotenv", "ALIBABA_CLOUD_ACCESS_KEY_ID=" + testID + "\nALIBABA_CLOUD_ACCESS_KEY_SECRET=" + testSecret + "\n", ""},
		{"dotenv quoted export comments CRLF",
			"# Alibaba Cloud\r\n\r\nexport ALIBABA_CLOUD_ACCESS_KEY_ID=\"" + testID + "\"\r\n" +
				"ALIBABA_CLOUD_ACCESS_KEY_SECRET='" + testSecret + "' # the secret\r\n" +
				"ALIBABA_CLOUD_SECURITY_TOKEN = " + testToken + "\r\nOTHER=ignored\r\n", testToken},
		{"dotenv BOM", "\uFEFFALIBABA_CLOUD_ACCESS_KEY_ID=" + testID + "\nALIBABA_CLOUD_ACCESS_KEY_SECRET=" + testSecret, ""},
		{"ini", "[default]\naccess_key_id = " + testID + "\naccess_key_secret = " + testSecret + "\nsecurity_token = " + testToken + "\n", testToken},
		{"ini other sections", "; comment\n[other]\naccess_key_id = nope\naccess_key_secret = nope\n[default]\r\naccess_key_id=" + testID + "\r\naccess_key_secret=\"" + testSecret + "\"\r\n", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := parseCredentials([]byte(tc.content))
			require.NoError(t, err)
			assert.Equal(t, testID, c.accessKeyID)
			assert.Equal(t, testSecret, c.accessKeySecret)
			assert.Equal(t, tc.wantToken, c.securityToken)
		})
	}
}

func TestParseCredentialsErrorsNeverEchoValues(t *testing.T) {
	for _, tc := range []struct {
		name, content, want string
	}{
		{"empty", "", "no credentials found"},
		{"only id", "ALIBABA_CLOUD_ACCESS_KEY_ID=" + testID, "ALIBABA_CLOUD_ACCESS_KEY_SECRET is missing"},
		{"only secret", "ALIBABA_CLOUD_ACCESS_KEY_SECRET=" + testSecret, "ALIBABA_CLOUD_ACCESS_KEY_ID is missing"},
		{"no equals", "ALIBABA_CLOUD_ACCESS_KEY_ID=" + testID + "\n" + testSecret + "\n", "line 2: expected KEY=VALUE"},
		{"unterminated quote", "ALIBABA_CLOUD_ACCESS_KEY_SECRET=\"" + testSecret, "line 1 (ALIBABA_CLOUD_ACCESS_KEY_SECRET): unterminated"},
		{"ini without default", "[prod]\naccess_key_id=" + testID + "\naccess_key_secret=" + testSecret, "expected [default] access_key_id"},
		{"ini missing secret", "[default]\naccess_key_id=" + testID, "[default] access_key_secret is missing"},
		{"bad header", "[default\naccess_key_id=" + testID, "line 1: unterminated section header"},
		{"mixed", "ALIBABA_CLOUD_ACCESS_KEY_ID=" + testID + "\n[default]\naccess_key_secret=" + testSecret, "mixes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseCredentials([]byte(tc.content))
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
			assert.NotContains(t, err.Error(), testSecret)
			assert.NotContains(t, err.Error(), testID)
		})
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	require.NoError(t, os.WriteFile(path, []byte(content), 0o600))
}

func TestFileCredentialsProviderReloadsOnChange(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cloud")
	writeFile(t, path, "ALIBABA_CLOUD_ACCESS_KEY_ID=id1\nALIBABA_CLOUD_ACCESS_KEY_SECRET=secret1\n")
	var logs bytes.Buffer
	log := logrus.New()
	log.SetOutput(&logs)

	p, err := newFileCredentialsProvider(path, log)
	require.NoError(t, err)
	now := time.Now()
	p.now = func() time.Time { return now }

	c, _ := p.GetCredentials(context.Background())
	assert.Equal(t, "secret1", c.AccessKeySecret)

	writeFile(t, path, "ALIBABA_CLOUD_ACCESS_KEY_ID=id2\nALIBABA_CLOUD_ACCESS_KEY_SECRET=secret2-longer\nALIBABA_CLOUD_SECURITY_TOKEN=tok2\n")
	c, _ = p.GetCredentials(context.Background())
	assert.Equal(t, "secret1", c.AccessKeySecret, "not re-checked before the interval")

	now = now.Add(credentialsFileRecheck)
	c, _ = p.GetCredentials(context.Background())
	assert.Equal(t, "id2", c.AccessKeyID)
	assert.Equal(t, "secret2-longer", c.AccessKeySecret)
	assert.Equal(t, "tok2", c.SecurityToken)

	// A broken rewrite keeps the last good keys and says so without values.
	writeFile(t, path, "ALIBABA_CLOUD_ACCESS_KEY_ID=id3-but-no-secret-at-all\n")
	now = now.Add(credentialsFileRecheck)
	c, _ = p.GetCredentials(context.Background())
	assert.Equal(t, "secret2-longer", c.AccessKeySecret)
	assert.Contains(t, logs.String(), "keeping the credentials loaded before")
	assert.Contains(t, logs.String(), "Reloaded changed OSS credentials file")
	for _, s := range []string{"secret1", "secret2-longer", "tok2", "id3-but"} {
		assert.NotContains(t, logs.String(), s)
	}
}

func TestResolveCredentialsOrder(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "cloud")
	writeFile(t, file, "[default]\naccess_key_id=fileid\naccess_key_secret=filesecret\n")
	env := map[string]string{EnvAccessKeyID: "envid", EnvAccessKeySecret: "envsecret"}
	getenv := func(k string) string { return env[k] }
	log := logrus.New()
	log.SetOutput(bytes.NewBuffer(nil))

	get := func(src credentialSource) string {
		c, err := src.provider.GetCredentials(context.Background())
		require.NoError(t, err)
		return c.AccessKeyID
	}

	src, err := resolveCredentials([]byte("ALIBABA_CLOUD_ACCESS_KEY_ID=contentid\nALIBABA_CLOUD_ACCESS_KEY_SECRET=x\n"), "", getenv, log)
	require.NoError(t, err)
	assert.Equal(t, "contentid", get(src))

	src, err = resolveCredentials(nil, file, getenv, log)
	require.NoError(t, err)
	assert.Equal(t, "fileid", get(src))

	// velero install --secret-file: the variable names the mounted file,
	// which comes after the location's own file and before the keys.
	mounted := filepath.Join(dir, "mounted")
	writeFile(t, mounted, "ALIBABA_CLOUD_ACCESS_KEY_ID=mountedid\nALIBABA_CLOUD_ACCESS_KEY_SECRET=mountedsecret\n")
	env[EnvCredentialsFile] = mounted
	src, err = resolveCredentials(nil, "", getenv, log)
	require.NoError(t, err)
	assert.Equal(t, "mountedid", get(src))
	assert.Contains(t, src.name, EnvCredentialsFile)
	src, err = resolveCredentials(nil, file, getenv, log)
	require.NoError(t, err)
	assert.Equal(t, "fileid", get(src))
	env[EnvCredentialsFile] = filepath.Join(dir, "not-mounted")
	_, err = resolveCredentials(nil, "", getenv, log)
	require.ErrorContains(t, err, EnvCredentialsFile)
	require.ErrorContains(t, err, "no such file")
	delete(env, EnvCredentialsFile)

	src, err = resolveCredentials(nil, "", getenv, log)
	require.NoError(t, err)
	assert.Equal(t, "envid", get(src))
	_, hasEnv := os.LookupEnv(EnvAccessKeyID)
	assert.False(t, hasEnv && os.Getenv(EnvAccessKeyID) == "fileid", "the file must never be loaded into the environment")

	env = map[string]string{EnvAccessKeyID: "envid"}
	_, err = resolveCredentials(nil, "", getenv, log)
	require.ErrorContains(t, err, EnvAccessKeySecret+" is not")

	env = map[string]string{EnvRoleARN: "acs:ram::1:role/r", EnvOIDCProviderARN: "acs:ram::1:oidc-provider/p", EnvOIDCTokenFile: filepath.Join(dir, "token")}
	src, err = resolveCredentials(nil, "", getenv, log)
	require.NoError(t, err)
	assert.Contains(t, src.name, "RRSA")

	env = map[string]string{EnvOIDCTokenFile: filepath.Join(dir, "token")}
	_, err = resolveCredentials(nil, "", getenv, log)
	require.ErrorContains(t, err, "RRSA/OIDC")

	env = map[string]string{}
	src, err = resolveCredentials(nil, "", getenv, log)
	if os.Getenv("ALIBABA_CLOUD_ECS_METADATA_DISABLED") == "true" {
		require.Error(t, err)
	} else {
		require.NoError(t, err)
		assert.Equal(t, "ECS RAM role", src.name)
	}

	_, err = resolveCredentials(nil, filepath.Join(dir, "missing"), getenv, log)
	require.ErrorContains(t, err, filepath.Join(dir, "missing"))
	require.ErrorContains(t, err, "no such file")
}

func TestFillKeepsErrorWithFullBuffer(t *testing.T) {
	r := &errAtEnd{data: []byte("abcd"), err: assert.AnError}
	buf := make([]byte, 4)
	n, err := fill(r, buf)
	assert.Equal(t, 4, n)
	assert.ErrorIs(t, err, assert.AnError)
}

// errAtEnd returns its data and err from the same Read call.
type errAtEnd struct {
	data []byte
	err  error
}

func (e *errAtEnd) Read(p []byte) (int, error) {
	n := copy(p, e.data)
	e.data = e.data[n:]
	if len(e.data) == 0 {
		return n, e.err
	}
	return n, nil
}
