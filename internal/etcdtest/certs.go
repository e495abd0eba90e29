package etcdtest

import (
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"

	"github.com/velero-etcd/velero-plugin-for-etcd/internal/testpki"
)

// certFiles are the generated PKI: files for embed, PEM bytes for clients.
type certFiles struct {
	ca, serverCert, serverKey          string
	caPEM, clientCertPEM, clientKeyPEM []byte
}

// writeCerts generates a CA, a server certificate for 127.0.0.1/localhost (also
// used by peers, hence both key usages) and a client certificate for "root".
func writeCerts(dir string) (*certFiles, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	ca, err := testpki.NewCA("etcdtest CA")
	if err != nil {
		return nil, err
	}
	serverCert, serverKey, err := ca.Issue("etcdtest server", []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}, true)
	if err != nil {
		return nil, err
	}
	clientCert, clientKey, err := ca.Issue("root", []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, false)
	if err != nil {
		return nil, err
	}
	f := &certFiles{
		ca:            filepath.Join(dir, "ca.crt"),
		serverCert:    filepath.Join(dir, "server.crt"),
		serverKey:     filepath.Join(dir, "server.key"),
		caPEM:         ca.PEM,
		clientCertPEM: clientCert,
		clientKeyPEM:  clientKey,
	}
	for path, data := range map[string][]byte{f.ca: f.caPEM, f.serverCert: serverCert, f.serverKey: serverKey} {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			return nil, err
		}
	}
	return f, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

// Certs generates a fresh CA and a client certificate and key (PEM), for tests
// that need real key material without a cluster.
func Certs(t testing.TB) (caPEM, clientCertPEM, clientKeyPEM []byte) {
	t.Helper()
	f, err := writeCerts(t.TempDir())
	if err != nil {
		t.Fatalf("etcdtest: generate certificates: %v", err)
	}
	return f.caPEM, f.clientCertPEM, f.clientKeyPEM
}
