package objectstore

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"net/url"

	"github.com/aliyun/alibabacloud-oss-go-sdk-v2/oss"
	osscreds "github.com/aliyun/alibabacloud-oss-go-sdk-v2/oss/credentials"
	"github.com/aliyun/alibabacloud-oss-go-sdk-v2/oss/transport"
)

// newHTTPClient builds the SDK's own transport (connect timeout, idle
// read/write deadline on every connection) plus our TLS settings. TLS
// verification stays on unless insecureSkipTLSVerify is set; caCert adds to
// the system roots rather than replacing them.
func newHTTPClient(c *storeConfig) (*http.Client, error) {
	var roots *x509.CertPool
	if len(c.caCert) > 0 {
		pool, err := x509.SystemCertPool()
		if err != nil || pool == nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(c.caCert) {
			return nil, errors.New("config key \"caCert\": no PEM certificate could be parsed")
		}
		roots = pool
	}
	tlsFn := func(t *http.Transport) {
		if t.TLSClientConfig == nil {
			t.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		t.TLSClientConfig.InsecureSkipVerify = c.insecureSkipVerify //nolint:gosec // opt-in by config only
		if roots != nil {
			t.TLSClientConfig.RootCAs = roots
		}
		t.ResponseHeaderTimeout = c.readWriteTimeout
	}
	return transport.NewHttpClient(&transport.Config{
		ConnectTimeout:   &c.connectTimeout,
		ReadWriteTimeout: &c.readWriteTimeout,
	}, tlsFn, transport.ProxyFromEnvironment()), nil
}

func newOSSClient(c *storeConfig, endpoint *url.URL, httpClient *http.Client, creds osscreds.CredentialsProvider) *oss.Client {
	cfg := oss.NewConfig().
		WithRegion(c.region).
		WithEndpoint(endpoint.String()).
		WithCredentialsProvider(creds).
		WithHttpClient(httpClient).
		WithSignatureVersion(c.signatureVersion).
		WithUsePathStyle(c.usePathStyle).
		WithDisableUploadCRC64Check(false).
		WithUserAgent("velero-plugin-for-etcd")
	return oss.NewClient(cfg)
}

// endpointForLog is the endpoint without anything but scheme and host.
func endpointForLog(u *url.URL) string {
	if u == nil {
		return ""
	}
	return fmt.Sprintf("%s://%s", u.Scheme, u.Host)
}
