// Package osstest starts a local OSS server (osslocal) for tests.
package osstest

import (
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"log"
	"net"
	"net/http/httptest"
	"net/url"
	"testing"

	"github.com/velero-etcd/velero-plugin-for-etcd/internal/osslocal"
	"github.com/velero-etcd/velero-plugin-for-etcd/internal/testpki"
)

// Env is a running local OSS server with one bucket and one credential.
type Env struct {
	Server          *osslocal.Server
	URL             string // "http://127.0.0.1:PORT" (https for StartTLS)
	Host            string // "localhost:PORT", for clients that refuse IP endpoints
	Bucket          string
	AccessKeyID     string
	AccessKeySecret string
	Region          string
	DataDir         string
	CACert          []byte // PEM of the CA that signed the server certificate; StartTLS only
}

const (
	bucketName = "velero"
	region     = "cn-hangzhou"
)

// Start runs a server over HTTP on 127.0.0.1 with a fresh data directory,
// random credentials and the bucket "velero". It stops when the test ends.
func Start(t testing.TB) *Env {
	t.Helper()
	env, ts := newEnv(t)
	ts.Start()
	return finish(t, env, ts)
}

// StartTLS is Start over HTTPS, with a freshly generated CA (Env.CACert) and a
// server certificate for 127.0.0.1 and localhost.
func StartTLS(t testing.TB) *Env {
	t.Helper()
	env, ts := newEnv(t)
	caPEM, cert, err := newCertificates()
	if err != nil {
		t.Fatalf("osstest: generating certificates: %v", err)
	}
	ts.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	ts.StartTLS()
	env.CACert = caPEM
	return finish(t, env, ts)
}

func newEnv(t testing.TB) (*Env, *httptest.Server) {
	env := &Env{
		Bucket:          bucketName,
		AccessKeyID:     "LTAI" + randomString(20),
		AccessKeySecret: randomString(30),
		Region:          region,
		DataDir:         t.TempDir(),
	}
	srv, err := osslocal.New(osslocal.Config{
		DataDir:     env.DataDir,
		Credentials: map[string]string{env.AccessKeyID: env.AccessKeySecret},
		Buckets:     []string{env.Bucket},
		Logger:      log.New(testWriter{t}, "oss-local: ", 0),
	})
	if err != nil {
		t.Fatalf("osstest: %v", err)
	}
	env.Server = srv
	ts := httptest.NewUnstartedServer(srv)
	ts.Config.ErrorLog = log.New(testWriter{t}, "oss-local http: ", 0)
	return env, ts
}

func finish(t testing.TB, env *Env, ts *httptest.Server) *Env {
	t.Cleanup(ts.Close)
	env.URL = ts.URL
	u, err := url.Parse(ts.URL)
	if err != nil {
		t.Fatalf("osstest: %v", err)
	}
	env.Host = net.JoinHostPort("localhost", u.Port())
	return env
}

// testWriter sends server log lines to t.Log, only shown for failed or -v tests.
type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	defer func() { _ = recover() }() // logging after the test ended must not panic
	w.t.Log(string(p[:len(p)-min(len(p), 1)]))
	return len(p), nil
}

func randomString(n int) string {
	const alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	buf := make([]byte, n)
	if _, err := rand.Read(buf); err != nil {
		panic(err)
	}
	for i := range buf {
		buf[i] = alphabet[int(buf[i])%len(alphabet)]
	}
	return string(buf)
}

// newCertificates makes a CA and a server certificate it signs.
func newCertificates() (caPEM []byte, server tls.Certificate, err error) {
	ca, err := testpki.NewCA("osstest CA")
	if err != nil {
		return nil, server, err
	}
	certPEM, keyPEM, err := ca.Issue("localhost", []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, true)
	if err != nil {
		return nil, server, err
	}
	server, err = tls.X509KeyPair(certPEM, keyPEM)
	return ca.PEM, server, err
}
