package objectstore

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sync"

	"github.com/aliyun/alibabacloud-oss-go-sdk-v2/oss"
	osscreds "github.com/aliyun/alibabacloud-oss-go-sdk-v2/oss/credentials"
	"github.com/aliyun/alibabacloud-oss-go-sdk-v2/oss/transport"
)

// newHTTPClient builds the SDK's own transport (connect timeout, idle
// read/write deadline on every connection) plus our TLS settings. TLS
// verification stays on unless insecureSkipTLSVerify is set; caCert adds to
// the system roots rather than replacing them.
func newHTTPClient(c *storeConfig) (oss.HTTPClient, error) {
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
	return bodyReleasingClient{transport.NewHttpClient(&transport.Config{
		ConnectTimeout:   &c.connectTimeout,
		ReadWriteTimeout: &c.readWriteTimeout,
	}, tlsFn, transport.ProxyFromEnvironment())}, nil
}

// bodyReleasingClient returns from Do only once the transport has finished
// with the request body. Without it, when OSS answers (say 503) before the
// whole body is written, the transport goroutine is still reading the body
// while the SDK rewinds that same reader to retry, and an uploader could
// refill a part buffer that is still being sent. The transport always closes
// the body when done; a blocked write ends at the connection's read/write
// deadline, so the wait is bounded.
type bodyReleasingClient struct{ client *http.Client }

func (c bodyReleasingClient) Do(req *http.Request) (*http.Response, error) {
	if req.Body == nil || req.Body == http.NoBody {
		return c.client.Do(req)
	}
	body := &closeNotifyingBody{ReadCloser: req.Body, closed: make(chan struct{})}
	req.Body = body
	resp, err := c.client.Do(req)
	select {
	case <-body.closed:
	case <-req.Context().Done():
	}
	return resp, err
}

type closeNotifyingBody struct {
	io.ReadCloser
	once   sync.Once
	closed chan struct{}
}

func (b *closeNotifyingBody) Close() error {
	err := b.ReadCloser.Close()
	b.once.Do(func() { close(b.closed) })
	return err
}

func newOSSClient(c *storeConfig, endpoint *url.URL, httpClient oss.HTTPClient, creds osscreds.CredentialsProvider) *oss.Client {
	cfg := oss.NewConfig()
	cfg.HttpClient = httpClient
	cfg = cfg.
		WithRegion(c.region).
		WithEndpoint(endpoint.String()).
		WithCredentialsProvider(creds).
		WithSignatureVersion(c.signatureVersion).
		WithUsePathStyle(c.usePathStyle).
		WithDisableUploadCRC64Check(true). // checked by the uploader with crc64ecma (checkCRC)
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
