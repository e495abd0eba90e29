package osslocal_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"hash/crc64"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aliyun/alibabacloud-oss-go-sdk-v2/oss"
	"github.com/aliyun/alibabacloud-oss-go-sdk-v2/oss/credentials"
	"github.com/aliyun/alibabacloud-oss-go-sdk-v2/oss/signer"
	"github.com/stretchr/testify/require"

	"github.com/velero-etcd/velero-plugin-for-etcd/internal/osslocal"
	"github.com/velero-etcd/velero-plugin-for-etcd/internal/osslocal/osstest"
)

func client(env *osstest.Env, retries int) *oss.Client {
	return oss.NewClient(oss.LoadDefaultConfig().
		WithCredentialsProvider(credentials.NewStaticCredentialsProvider(env.AccessKeyID, env.AccessKeySecret)).
		WithRegion(env.Region).WithEndpoint(env.URL).WithRetryMaxAttempts(retries))
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func put(t *testing.T, ctx context.Context, c *oss.Client, env *osstest.Env, key string, body []byte) {
	t.Helper()
	_, err := c.PutObject(ctx, &oss.PutObjectRequest{Bucket: oss.Ptr(env.Bucket), Key: oss.Ptr(key), Body: bytes.NewReader(body)})
	require.NoError(t, err, key)
}

func exists(t *testing.T, ctx context.Context, c *oss.Client, env *osstest.Env, key string) bool {
	t.Helper()
	ok, err := c.IsObjectExist(ctx, env.Bucket, key)
	require.NoError(t, err)
	return ok
}

func getBody(t *testing.T, ctx context.Context, c *oss.Client, env *osstest.Env, key string) []byte {
	t.Helper()
	res, err := c.GetObject(ctx, &oss.GetObjectRequest{Bucket: oss.Ptr(env.Bucket), Key: oss.Ptr(key)})
	require.NoError(t, err, key)
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	return b
}

// tmpFiles lists what is being written in DataDir/tmp.
func tmpFiles(t *testing.T, env *osstest.Env) []string {
	entries, err := os.ReadDir(filepath.Join(env.DataDir, "tmp"))
	require.NoError(t, err)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func TestPathTraversalKeysStayInsideDataDir(t *testing.T) {
	env := osstest.Start(t)
	ctx := testCtx(t)
	c := client(env, 1)
	keys := []string{"../x", "a/../../b", "../../../../../../tmp/escape", "/leading-slash", "./dot", "..", "a/./b/../c"}
	for i, k := range keys {
		put(t, ctx, c, env, k, []byte{byte(i)})
	}
	for i, k := range keys {
		require.Equal(t, []byte{byte(i)}, getBody(t, ctx, c, env, k), k)
	}
	// Every file created lives under DataDir.
	parent := filepath.Dir(env.DataDir)
	err := filepath.Walk(parent, func(path string, info os.FileInfo, err error) error {
		require.NoError(t, err)
		if path != parent && !strings.HasPrefix(path, env.DataDir) {
			t.Errorf("file outside DataDir: %s", path)
		}
		return nil
	})
	require.NoError(t, err)
	res, err := c.ListObjectsV2(ctx, &oss.ListObjectsV2Request{Bucket: oss.Ptr(env.Bucket)})
	require.NoError(t, err)
	var listed []string
	for _, o := range res.Contents {
		listed = append(listed, oss.ToString(o.Key))
	}
	require.ElementsMatch(t, keys, listed)
}

// blockingReader yields first, then blocks until release is closed.
type blockingReader struct {
	first   []byte
	release chan struct{}
	started chan struct{}
}

func (b *blockingReader) Read(p []byte) (int, error) {
	if len(b.first) > 0 {
		n := copy(p, b.first)
		b.first = b.first[n:]
		return n, nil
	}
	select {
	case <-b.started:
	default:
		close(b.started)
	}
	<-b.release
	return 0, io.ErrUnexpectedEOF
}

func TestNoVisibleObjectWhileUploadInFlightOrAfterDisconnect(t *testing.T) {
	env := osstest.Start(t)
	ctx := testCtx(t)
	c := client(env, 1)
	put(t, ctx, c, env, "obj", []byte("old version"))

	body := &blockingReader{first: bytes.Repeat([]byte("n"), 1<<20), release: make(chan struct{}), started: make(chan struct{})}
	putCtx, cancelPut := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		_, err := c.PutObject(putCtx, &oss.PutObjectRequest{Bucket: oss.Ptr(env.Bucket), Key: oss.Ptr("obj"),
			Body: body, ContentLength: oss.Ptr(int64(2 << 20))})
		done <- err
	}()
	<-body.started
	require.Eventually(t, func() bool { return len(tmpFiles(t, env)) == 1 }, 5*time.Second, 10*time.Millisecond,
		"the upload is written to a temp file")
	// Mid-upload, readers see the old version.
	require.Equal(t, []byte("old version"), getBody(t, ctx, c, env, "obj"))

	cancelPut() // the client goes away mid-body
	close(body.release)
	require.Error(t, <-done)
	require.Eventually(t, func() bool { return len(tmpFiles(t, env)) == 0 }, 5*time.Second, 10*time.Millisecond,
		"the temp file of a broken upload is removed")
	require.Equal(t, []byte("old version"), getBody(t, ctx, c, env, "obj"))
	require.False(t, exists(t, ctx, c, env, "never-finished"))
}

func TestPendingUploadsAndRestart(t *testing.T) {
	env := osstest.Start(t)
	ctx := testCtx(t)
	c := client(env, 1)
	b := oss.Ptr(env.Bucket)
	var ids []*string
	for range 3 {
		res, err := c.InitiateMultipartUpload(ctx, &oss.InitiateMultipartUploadRequest{Bucket: b, Key: oss.Ptr("mp")})
		require.NoError(t, err)
		ids = append(ids, res.UploadId)
	}
	require.Equal(t, 3, env.Server.PendingUploads(env.Bucket))
	_, err := c.AbortMultipartUpload(ctx, &oss.AbortMultipartUploadRequest{Bucket: b, Key: oss.Ptr("mp"), UploadId: ids[0]})
	require.NoError(t, err)
	part, err := c.UploadPart(ctx, &oss.UploadPartRequest{Bucket: b, Key: oss.Ptr("mp"), UploadId: ids[1], PartNumber: 1,
		Body: strings.NewReader("only part")})
	require.NoError(t, err)
	_, err = c.CompleteMultipartUpload(ctx, &oss.CompleteMultipartUploadRequest{Bucket: b, Key: oss.Ptr("mp"), UploadId: ids[1],
		CompleteMultipartUpload: &oss.CompleteMultipartUpload{Parts: []oss.UploadPart{{PartNumber: 1, ETag: part.ETag}}}})
	require.NoError(t, err)
	require.Equal(t, 1, env.Server.PendingUploads(env.Bucket))
	require.Equal(t, 0, env.Server.PendingUploads("no-such-bucket"))
	_, err = c.UploadPart(ctx, &oss.UploadPartRequest{Bucket: b, Key: oss.Ptr("mp"), UploadId: ids[2], PartNumber: 3,
		Body: strings.NewReader("pending part")})
	require.NoError(t, err)

	// A new server on the same DataDir keeps objects and pending uploads.
	again, err := osslocal.New(osslocal.Config{DataDir: env.DataDir, Credentials: map[string]string{"a": "b"}})
	require.NoError(t, err)
	require.Equal(t, 1, again.PendingUploads(env.Bucket))
	require.Equal(t, []byte("only part"), getBody(t, ctx, c, env, "mp"))
	require.Equal(t, 1, env.Server.RequestCount("CompleteMultipartUpload"))
}

func TestRawRequests(t *testing.T) {
	env := osstest.Start(t)
	ctx := testCtx(t)
	c := client(env, 1)
	put(t, ctx, c, env, "raw key", []byte("raw"))

	// Anonymous: 403 AccessDenied with the XML error shape.
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, env.URL+"/velero/raw%20key", nil)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, 403, resp.StatusCode)
	require.NotEmpty(t, resp.Header.Get("x-oss-request-id"))
	require.Equal(t, "application/xml", resp.Header.Get("Content-Type"))
	for _, el := range []string{"<Code>AccessDenied</Code>", "<Message>", "<RequestId>", "<HostId>", "<EC>"} {
		require.Contains(t, string(body), el)
	}

	// HEAD errors have no body; the XML is in x-oss-err.
	req, err = http.NewRequestWithContext(ctx, http.MethodHead, env.URL+"/velero/raw%20key", nil)
	require.NoError(t, err)
	resp, err = http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	xmlErr, err := base64.StdEncoding.DecodeString(resp.Header.Get("x-oss-err"))
	require.NoError(t, err)
	require.Contains(t, string(xmlErr), "<Code>AccessDenied</Code>")
	require.NotEmpty(t, resp.Header.Get("x-oss-ec"))

	// A V4 Authorization header written as documented, with spaces after commas.
	req, err = http.NewRequestWithContext(ctx, http.MethodGet, env.URL+"/velero/raw%20key", nil)
	require.NoError(t, err)
	sc := &signer.SigningContext{
		Product: oss.Ptr("oss"), Region: oss.Ptr(env.Region), Bucket: oss.Ptr(env.Bucket), Key: oss.Ptr("raw key"),
		Request: req, Credentials: &credentials.Credentials{AccessKeyID: env.AccessKeyID, AccessKeySecret: env.AccessKeySecret},
	}
	require.NoError(t, (&signer.SignerV4{}).Sign(ctx, sc))
	auth := req.Header.Get("Authorization")
	require.NotContains(t, auth, ", ")
	req.Header.Set("Authorization", strings.ReplaceAll(auth, ",", ", "))
	resp, err = http.DefaultClient.Do(req)
	require.NoError(t, err)
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, 200, resp.StatusCode, string(body))
	require.Equal(t, "raw", string(body))

	ok, err := c.IsBucketExist(ctx, env.Bucket)
	require.NoError(t, err)
	require.True(t, ok)
	ok, err = c.IsBucketExist(ctx, "missing-bucket")
	require.NoError(t, err)
	require.False(t, ok)

	// A stale Date is refused as by OSS.
	req, err = http.NewRequestWithContext(ctx, http.MethodGet, env.URL+"/velero/raw%20key", nil)
	require.NoError(t, err)
	sc = &signer.SigningContext{
		Product: oss.Ptr("oss"), Region: oss.Ptr(env.Region), Bucket: oss.Ptr(env.Bucket), Key: oss.Ptr("raw key"),
		Request: req, Credentials: &credentials.Credentials{AccessKeyID: env.AccessKeyID, AccessKeySecret: env.AccessKeySecret},
		Time: time.Now().Add(-time.Hour),
	}
	require.NoError(t, (&signer.SignerV1{}).Sign(ctx, sc))
	resp, err = http.DefaultClient.Do(req)
	require.NoError(t, err)
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, 403, resp.StatusCode)
	require.Contains(t, string(body), "RequestTimeTooSkewed")
}

func TestStartTLS(t *testing.T) {
	env := osstest.StartTLS(t)
	require.True(t, strings.HasPrefix(env.URL, "https://127.0.0.1:"))
	ctx := testCtx(t)
	pool := x509Pool(t, env.CACert)
	c := oss.NewClient(oss.LoadDefaultConfig().
		WithCredentialsProvider(credentials.NewStaticCredentialsProvider(env.AccessKeyID, env.AccessKeySecret)).
		WithRegion(env.Region).WithEndpoint(env.URL).
		WithHttpClient(&http.Client{Transport: &http.Transport{TLSClientConfig: tlsConfig(pool)}}))
	put(t, ctx, c, env, "tls", []byte("secure"))
	require.Equal(t, []byte("secure"), getBody(t, ctx, c, env, "tls"))
}

// A completed multipart upload is stored as its parts (segments); reads of
// any range, a restart, an overwrite and a delete must not tell.
func TestMultipartSegments(t *testing.T) {
	env := osstest.Start(t)
	ctx := testCtx(t)
	c := client(env, 1)
	b, key := oss.Ptr(env.Bucket), oss.Ptr("seg/obj")
	const partSize = 100 << 10
	want := make([]byte, 2*partSize+777)
	for i := range want {
		want[i] = byte(i*7 + i>>9)
	}
	up, err := c.InitiateMultipartUpload(ctx, &oss.InitiateMultipartUploadRequest{Bucket: b, Key: key})
	require.NoError(t, err)
	var parts []oss.UploadPart
	for n, off := int32(1), 0; off < len(want); n, off = n+1, off+partSize {
		res, err := c.UploadPart(ctx, &oss.UploadPartRequest{Bucket: b, Key: key, UploadId: up.UploadId, PartNumber: n,
			Body: bytes.NewReader(want[off:min(off+partSize, len(want))])})
		require.NoError(t, err)
		parts = append(parts, oss.UploadPart{PartNumber: n, ETag: res.ETag})
	}
	_, err = c.CompleteMultipartUpload(ctx, &oss.CompleteMultipartUploadRequest{Bucket: b, Key: key, UploadId: up.UploadId,
		CompleteMultipartUpload: &oss.CompleteMultipartUpload{Parts: parts}})
	require.NoError(t, err)

	dataFiles := func() []string {
		names, err := filepath.Glob(filepath.Join(env.DataDir, "buckets", env.Bucket, "objects", "*.data"))
		require.NoError(t, err)
		return names
	}
	require.Len(t, dataFiles(), 3, "one data file per part, no copy")

	check := func(c *oss.Client) {
		require.Equal(t, want, getBody(t, ctx, c, env, "seg/obj"))
		for _, r := range [][2]int{{0, 0}, {partSize - 3, partSize + 3}, {partSize, 2 * partSize}, {10, len(want) - 1}, {len(want) - 1, len(want) - 1}} {
			res, err := c.GetObject(ctx, &oss.GetObjectRequest{Bucket: b, Key: key, Range: oss.Ptr(fmt.Sprintf("bytes=%d-%d", r[0], r[1]))})
			require.NoError(t, err)
			got, err := io.ReadAll(res.Body)
			res.Body.Close()
			require.NoError(t, err)
			require.Equal(t, want[r[0]:r[1]+1], got, "range %v", r)
		}
	}
	check(c)

	// The SDK checks the combined CRC64 against the data on a full read.
	res, err := c.GetObject(ctx, &oss.GetObjectRequest{Bucket: b, Key: key})
	require.NoError(t, err)
	res.Body.Close()
	require.Equal(t, strconv.FormatUint(crc64.Checksum(want, crc64.MakeTable(crc64.ECMA)), 10), oss.ToString(res.HashCRC64))

	// A new server on the same DataDir serves the same bytes and keeps the parts.
	again, err := osslocal.New(osslocal.Config{DataDir: env.DataDir, Credentials: map[string]string{env.AccessKeyID: env.AccessKeySecret}})
	require.NoError(t, err)
	ts := httptest.NewServer(again)
	defer ts.Close()
	restarted := *env
	restarted.URL = ts.URL
	check(client(&restarted, 1))
	require.Len(t, dataFiles(), 3)

	put(t, ctx, c, env, "seg/obj", []byte("small now"))
	require.Len(t, dataFiles(), 1, "an overwrite removes the old parts")
	_, err = c.DeleteObject(ctx, &oss.DeleteObjectRequest{Bucket: b, Key: key})
	require.NoError(t, err)
	require.Empty(t, dataFiles())
}
