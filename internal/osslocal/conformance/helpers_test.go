// Package conformance checks the local OSS server (osslocal) against three
// independent official clients: the Go SDK v2, the Go SDK v1 and the Node.js
// ali-oss package.
package conformance

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/aliyun/alibabacloud-oss-go-sdk-v2/oss"
	"github.com/aliyun/alibabacloud-oss-go-sdk-v2/oss/credentials"
	"github.com/stretchr/testify/require"

	"github.com/velero-etcd/velero-plugin-for-etcd/internal/osslocal/osstest"
)

// tricky keys exercise escaping in signatures, paths and listings.
var trickyKeys = []string{
	"plain.txt",
	"dir/sub dir/with space.bin",
	"plus+sign&amp=eq?q#hash",
	"percent%20literal%2F",
	"unicode/日本語/ключ-ü.txt",
	"tilde~star*paren()!'",
	"a//double/slash",
}

func v2Client(env *osstest.Env, version oss.SignatureVersionType, secret string) *oss.Client {
	cfg := oss.LoadDefaultConfig().
		WithCredentialsProvider(credentials.NewStaticCredentialsProvider(env.AccessKeyID, secret)).
		WithRegion(env.Region).
		WithEndpoint(env.URL).
		WithSignatureVersion(version).
		WithRetryMaxAttempts(1)
	return oss.NewClient(cfg)
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func randomBytes(t testing.TB, n int) []byte {
	buf := make([]byte, n)
	_, err := rand.Read(buf)
	require.NoError(t, err)
	return buf
}

func requireServiceError(t *testing.T, err error, status int, code string) {
	t.Helper()
	require.Error(t, err)
	var se *oss.ServiceError
	require.True(t, errors.As(err, &se), "want a service error, got %v", err)
	require.Equal(t, status, se.StatusCode, "status of %v", err)
	require.Equal(t, code, se.Code, "code of %v", err)
	require.NotEmpty(t, se.RequestID)
}

// onlyReader hides every method but Read, so SDKs cannot seek or size it.
type onlyReader struct{ r io.Reader }

func (o onlyReader) Read(p []byte) (int, error) { return o.r.Read(p) }

func nonSeekable(b []byte) io.Reader { return onlyReader{bytes.NewReader(b)} }

func keyName(i int) string { return fmt.Sprintf("bulk/%04d", i) }

func credentialsFor(ak, sk string) credentials.CredentialsProvider {
	return credentials.NewStaticCredentialsProvider(ak, sk)
}

func stsCredentials(ak, sk, token string) credentials.CredentialsProvider {
	return credentials.NewStaticCredentialsProvider(ak, sk, token)
}

func anonymousProvider() credentials.CredentialsProvider {
	return credentials.NewAnonymousCredentialsProvider()
}
