package conformance

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"hash/crc64"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aliyun/alibabacloud-oss-go-sdk-v2/oss"
	"github.com/stretchr/testify/require"

	"github.com/velero-etcd/velero-plugin-for-etcd/internal/osslocal/osstest"
)

func TestGoSDKv2(t *testing.T) {
	for _, tc := range []struct {
		name    string
		version oss.SignatureVersionType
	}{{"V4", oss.SignatureVersionV4}, {"V1", oss.SignatureVersionV1}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			env := osstest.Start(t)
			c := v2Client(env, tc.version, env.AccessKeySecret)
			t.Run("Objects", func(t *testing.T) { t.Parallel(); testV2Objects(t, env, c) })
			t.Run("List", func(t *testing.T) { t.Parallel(); testV2List(t, env, c) })
			t.Run("Multipart", func(t *testing.T) { t.Parallel(); testV2Multipart(t, env, c) })
			t.Run("Presign", func(t *testing.T) { t.Parallel(); testV2Presign(t, env, c) })
			t.Run("Auth", func(t *testing.T) { t.Parallel(); testV2Auth(t, env, tc.version) })
		})
	}
}

func testV2Objects(t *testing.T, env *osstest.Env, c *oss.Client) {
	ctx := ctxT(t)
	b := oss.Ptr(env.Bucket)
	for i, key := range trickyKeys {
		data := randomBytes(t, 1000+i*777)
		sum := md5.Sum(data)
		put, err := c.PutObject(ctx, &oss.PutObjectRequest{
			Bucket: b, Key: oss.Ptr("obj/" + key), Body: bytes.NewReader(data),
			ContentType: oss.Ptr("text/x-test"), Metadata: map[string]string{"owner": "conformance"},
		})
		require.NoError(t, err, key)
		require.Equal(t, `"`+strings.ToUpper(hex.EncodeToString(sum[:]))+`"`, oss.ToString(put.ETag))
		require.Equal(t, strconv.FormatUint(crc64.Checksum(data, crc64.MakeTable(crc64.ECMA)), 10), oss.ToString(put.HashCRC64))

		get, err := c.GetObject(ctx, &oss.GetObjectRequest{Bucket: b, Key: oss.Ptr("obj/" + key)})
		require.NoError(t, err, key)
		got, err := io.ReadAll(get.Body)
		require.NoError(t, err)
		require.NoError(t, get.Body.Close())
		require.Equal(t, data, got, key)
		require.Equal(t, "text/x-test", oss.ToString(get.ContentType))
		require.Equal(t, "conformance", get.Metadata["Owner"]+get.Metadata["owner"])

		rng, err := c.GetObject(ctx, &oss.GetObjectRequest{Bucket: b, Key: oss.Ptr("obj/" + key), Range: oss.Ptr("bytes=10-99")})
		require.NoError(t, err)
		got, err = io.ReadAll(rng.Body)
		require.NoError(t, err)
		require.NoError(t, rng.Body.Close())
		require.Equal(t, 206, rng.StatusCode)
		require.Equal(t, data[10:100], got)
		require.Equal(t, "bytes 10-99/"+strconv.Itoa(len(data)), oss.ToString(rng.ContentRange))

		head, err := c.HeadObject(ctx, &oss.HeadObjectRequest{Bucket: b, Key: oss.Ptr("obj/" + key)})
		require.NoError(t, err)
		require.Equal(t, int64(len(data)), head.ContentLength)
		require.Equal(t, put.ETag, head.ETag)

		meta, err := c.GetObjectMeta(ctx, &oss.GetObjectMetaRequest{Bucket: b, Key: oss.Ptr("obj/" + key)})
		require.NoError(t, err)
		require.Equal(t, int64(len(data)), meta.ContentLength)
		require.Equal(t, put.ETag, meta.ETag)

		ok, err := c.IsObjectExist(ctx, env.Bucket, "obj/"+key)
		require.NoError(t, err)
		require.True(t, ok)
	}

	// Suffix range and a range past the end are clamped as OSS does.
	rng, err := c.GetObject(ctx, &oss.GetObjectRequest{Bucket: b, Key: oss.Ptr("obj/plain.txt"), Range: oss.Ptr("bytes=-10")})
	require.NoError(t, err)
	got, _ := io.ReadAll(rng.Body)
	rng.Body.Close()
	require.Len(t, got, 10)

	_, err = c.GetObject(ctx, &oss.GetObjectRequest{Bucket: b, Key: oss.Ptr("obj/missing")})
	requireServiceError(t, err, 404, "NoSuchKey")
	_, err = c.HeadObject(ctx, &oss.HeadObjectRequest{Bucket: b, Key: oss.Ptr("obj/missing")})
	requireServiceError(t, err, 404, "NoSuchKey")
	ok, err := c.IsObjectExist(ctx, env.Bucket, "obj/missing")
	require.NoError(t, err)
	require.False(t, ok)
	_, err = c.GetObject(ctx, &oss.GetObjectRequest{Bucket: oss.Ptr("no-such-bucket"), Key: oss.Ptr("x")})
	requireServiceError(t, err, 404, "NoSuchBucket")

	// Content-MD5 is verified.
	_, err = c.PutObject(ctx, &oss.PutObjectRequest{Bucket: b, Key: oss.Ptr("obj/bad-md5"), Body: strings.NewReader("hello"),
		ContentMD5: oss.Ptr("AAAAAAAAAAAAAAAAAAAAAA==")})
	requireServiceError(t, err, 400, "InvalidDigest")

	// Delete is idempotent.
	for range 2 {
		_, err = c.DeleteObject(ctx, &oss.DeleteObjectRequest{Bucket: b, Key: oss.Ptr("obj/plain.txt")})
		require.NoError(t, err)
	}
	ok, err = c.IsObjectExist(ctx, env.Bucket, "obj/plain.txt")
	require.NoError(t, err)
	require.False(t, ok)

	var del []oss.DeleteObject
	for _, key := range trickyKeys[1:] {
		del = append(del, oss.DeleteObject{Key: oss.Ptr("obj/" + key)})
	}
	del = append(del, oss.DeleteObject{Key: oss.Ptr("obj/never-existed")})
	res, err := c.DeleteMultipleObjects(ctx, &oss.DeleteMultipleObjectsRequest{Bucket: b, Objects: del})
	require.NoError(t, err)
	var deleted []string
	for _, d := range res.DeletedObjects {
		deleted = append(deleted, oss.ToString(d.Key))
	}
	for _, key := range trickyKeys[1:] {
		require.Contains(t, deleted, "obj/"+key)
	}
	res, err = c.DeleteMultipleObjects(ctx, &oss.DeleteMultipleObjectsRequest{Bucket: b, Objects: del, Quiet: true})
	require.NoError(t, err)
	require.Empty(t, res.DeletedObjects)
	lst, err := c.ListObjectsV2(ctx, &oss.ListObjectsV2Request{Bucket: b, Prefix: oss.Ptr("obj/")})
	require.NoError(t, err)
	require.Empty(t, lst.Contents)
}

// putBulk writes n tiny objects concurrently.
func putBulk(t *testing.T, ctx context.Context, n int, put func(ctx context.Context, key string) error) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	sem := make(chan struct{}, 16)
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := put(ctx, keyName(i)); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
}

const bulkCount = 1100

func testV2List(t *testing.T, env *osstest.Env, c *oss.Client) {
	ctx := ctxT(t)
	b := oss.Ptr(env.Bucket)
	putBulk(t, ctx, bulkCount, func(ctx context.Context, key string) error {
		_, err := c.PutObject(ctx, &oss.PutObjectRequest{Bucket: b, Key: oss.Ptr(key), Body: strings.NewReader(key)})
		return err
	})
	for _, key := range []string{"tree/a/1", "tree/a/2", "tree/b/1", "tree/c", "tree/d+e f", "tree/é"} {
		_, err := c.PutObject(ctx, &oss.PutObjectRequest{Bucket: b, Key: oss.Ptr(key), Body: strings.NewReader("x")})
		require.NoError(t, err)
	}

	// Paginate past 1000 keys with the SDK paginator.
	var keys []string
	pages := 0
	p := c.NewListObjectsV2Paginator(&oss.ListObjectsV2Request{Bucket: b, Prefix: oss.Ptr("bulk/"), MaxKeys: 1000})
	for p.HasNext() {
		page, err := p.NextPage(ctx)
		require.NoError(t, err)
		pages++
		for _, o := range page.Contents {
			keys = append(keys, oss.ToString(o.Key))
			require.Equal(t, int64(len(oss.ToString(o.Key))), o.Size)
		}
	}
	require.Equal(t, 2, pages)
	require.Len(t, keys, bulkCount)
	require.True(t, sort.StringsAreSorted(keys))

	// Default max-keys is 100.
	page, err := c.ListObjectsV2(ctx, &oss.ListObjectsV2Request{Bucket: b, Prefix: oss.Ptr("bulk/")})
	require.NoError(t, err)
	require.Len(t, page.Contents, 100)
	require.True(t, page.IsTruncated)
	require.Equal(t, keyName(0), oss.ToString(page.Contents[0].Key))

	// start-after
	page, err = c.ListObjectsV2(ctx, &oss.ListObjectsV2Request{Bucket: b, Prefix: oss.Ptr("bulk/"), StartAfter: oss.Ptr(keyName(1097))})
	require.NoError(t, err)
	require.Len(t, page.Contents, 2)
	require.False(t, page.IsTruncated)

	// Delimiter with paging through common prefixes one at a time.
	var entries []string
	var token *string
	for {
		page, err := c.ListObjectsV2(ctx, &oss.ListObjectsV2Request{Bucket: b, Prefix: oss.Ptr("tree/"), Delimiter: oss.Ptr("/"),
			MaxKeys: 1, ContinuationToken: token})
		require.NoError(t, err)
		for _, cp := range page.CommonPrefixes {
			entries = append(entries, "P:"+oss.ToString(cp.Prefix))
		}
		for _, o := range page.Contents {
			entries = append(entries, "K:"+oss.ToString(o.Key))
		}
		if !page.IsTruncated {
			break
		}
		token = page.NextContinuationToken
	}
	require.Equal(t, []string{"P:tree/a/", "P:tree/b/", "K:tree/c", "K:tree/d+e f", "K:tree/é"}, entries)

	// max-keys over 1000 is refused as by OSS.
	_, err = c.ListObjectsV2(ctx, &oss.ListObjectsV2Request{Bucket: b, MaxKeys: 1001})
	requireServiceError(t, err, 400, "InvalidArgument")
}

func testV2Multipart(t *testing.T, env *osstest.Env, c *oss.Client) {
	ctx := ctxT(t)
	data := randomBytes(t, 20<<20+12345)
	u := c.NewUploader(func(o *oss.UploaderOptions) { o.PartSize = 5 << 20; o.ParallelNum = 3 })
	res, err := u.UploadFrom(ctx, &oss.PutObjectRequest{Bucket: oss.Ptr(env.Bucket), Key: oss.Ptr("mp/big object")}, nonSeekable(data))
	require.NoError(t, err)
	require.NotEmpty(t, oss.ToString(res.UploadId), "an unknown-size reader must go multipart")
	require.Equal(t, strconv.FormatUint(crc64.Checksum(data, crc64.MakeTable(crc64.ECMA)), 10), oss.ToString(res.HashCRC64))
	require.Equal(t, 0, env.Server.PendingUploads(env.Bucket))
	require.GreaterOrEqual(t, env.Server.RequestCount("UploadPart"), 5)

	get, err := c.GetObject(ctx, &oss.GetObjectRequest{Bucket: oss.Ptr(env.Bucket), Key: oss.Ptr("mp/big object")})
	require.NoError(t, err)
	got, err := io.ReadAll(get.Body)
	require.NoError(t, err)
	get.Body.Close()
	require.True(t, bytes.Equal(data, got))
	require.Equal(t, "Multipart", oss.ToString(get.ObjectType))

	// The low-level calls, with errors as OSS gives them.
	key := oss.Ptr("mp/manual")
	b := oss.Ptr(env.Bucket)
	init, err := c.InitiateMultipartUpload(ctx, &oss.InitiateMultipartUploadRequest{Bucket: b, Key: key})
	require.NoError(t, err)
	require.Equal(t, 1, env.Server.PendingUploads(env.Bucket))
	part1 := randomBytes(t, 200<<10)
	part2 := randomBytes(t, 1000)
	p2, err := c.UploadPart(ctx, &oss.UploadPartRequest{Bucket: b, Key: key, UploadId: init.UploadId, PartNumber: 2, Body: bytes.NewReader(part2)})
	require.NoError(t, err)
	p1, err := c.UploadPart(ctx, &oss.UploadPartRequest{Bucket: b, Key: key, UploadId: init.UploadId, PartNumber: 1, Body: bytes.NewReader(part1)})
	require.NoError(t, err)
	parts, err := c.ListParts(ctx, &oss.ListPartsRequest{Bucket: b, Key: key, UploadId: init.UploadId})
	require.NoError(t, err)
	require.Len(t, parts.Parts, 2)
	require.Equal(t, int32(1), parts.Parts[0].PartNumber)
	require.Equal(t, int64(len(part1)), parts.Parts[0].Size)

	complete := func(parts ...oss.UploadPart) error {
		_, err := c.CompleteMultipartUpload(ctx, &oss.CompleteMultipartUploadRequest{Bucket: b, Key: key, UploadId: init.UploadId,
			CompleteMultipartUpload: &oss.CompleteMultipartUpload{Parts: parts}})
		return err
	}
	// The SDK sorts parts, so only a repeated part number reaches the server out of order.
	err = complete(oss.UploadPart{PartNumber: 1, ETag: p1.ETag}, oss.UploadPart{PartNumber: 1, ETag: p1.ETag})
	requireServiceError(t, err, 400, "InvalidPartOrder")
	err = complete(oss.UploadPart{PartNumber: 1, ETag: p2.ETag})
	requireServiceError(t, err, 400, "InvalidPart")
	err = complete(oss.UploadPart{PartNumber: 1, ETag: p1.ETag}, oss.UploadPart{PartNumber: 2, ETag: p2.ETag})
	require.NoError(t, err)
	require.Equal(t, 0, env.Server.PendingUploads(env.Bucket))
	err = complete(oss.UploadPart{PartNumber: 1, ETag: p1.ETag})
	requireServiceError(t, err, 404, "NoSuchUpload")

	get, err = c.GetObject(ctx, &oss.GetObjectRequest{Bucket: b, Key: key})
	require.NoError(t, err)
	got, _ = io.ReadAll(get.Body)
	get.Body.Close()
	require.Equal(t, append(append([]byte{}, part1...), part2...), got)

	// Abort removes the upload; a second abort is NoSuchUpload.
	init, err = c.InitiateMultipartUpload(ctx, &oss.InitiateMultipartUploadRequest{Bucket: b, Key: key})
	require.NoError(t, err)
	_, err = c.UploadPart(ctx, &oss.UploadPartRequest{Bucket: b, Key: key, UploadId: init.UploadId, PartNumber: 1, Body: bytes.NewReader(part2)})
	require.NoError(t, err)
	_, err = c.AbortMultipartUpload(ctx, &oss.AbortMultipartUploadRequest{Bucket: b, Key: key, UploadId: init.UploadId})
	require.NoError(t, err)
	_, err = c.AbortMultipartUpload(ctx, &oss.AbortMultipartUploadRequest{Bucket: b, Key: key, UploadId: init.UploadId})
	requireServiceError(t, err, 404, "NoSuchUpload")
	require.Equal(t, 0, env.Server.PendingUploads(env.Bucket))
}

func testV2Presign(t *testing.T, env *osstest.Env, c *oss.Client) {
	ctx := ctxT(t)
	b := oss.Ptr(env.Bucket)
	const key = "presigned/a b+c.txt"
	_, err := c.PutObject(ctx, &oss.PutObjectRequest{Bucket: b, Key: oss.Ptr(key), Body: strings.NewReader("presigned body")})
	require.NoError(t, err)

	fetch := func(url string) (int, string) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		require.NoError(t, err)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp.StatusCode, string(body)
	}

	ps, err := c.Presign(ctx, &oss.GetObjectRequest{Bucket: b, Key: oss.Ptr(key)}, oss.PresignExpires(10*time.Minute))
	require.NoError(t, err)
	status, body := fetch(ps.URL)
	require.Equal(t, 200, status, body)
	require.Equal(t, "presigned body", body)

	// A tampered signature is refused.
	status, body = fetch(strings.Replace(ps.URL, "presigned/", "presigned/x", 1))
	require.Equal(t, 403, status)
	require.Contains(t, body, "<Code>SignatureDoesNotMatch</Code>")

	// Presigned PUT.
	pp, err := c.Presign(ctx, &oss.PutObjectRequest{Bucket: b, Key: oss.Ptr("presigned/put")}, oss.PresignExpires(time.Minute))
	require.NoError(t, err)
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, pp.URL, strings.NewReader("via presigned put"))
	require.NoError(t, err)
	for k, v := range pp.SignedHeaders {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, 200, resp.StatusCode)

	// Expired.
	ex, err := c.Presign(ctx, &oss.GetObjectRequest{Bucket: b, Key: oss.Ptr(key)}, oss.PresignExpiration(time.Now().Add(time.Second)))
	require.NoError(t, err)
	time.Sleep(2100 * time.Millisecond)
	status, body = fetch(ex.URL)
	require.Equal(t, 403, status)
	require.Contains(t, body, "<Code>AccessDenied</Code>")
}

func testV2Auth(t *testing.T, env *osstest.Env, version oss.SignatureVersionType) {
	ctx := ctxT(t)
	b := oss.Ptr(env.Bucket)
	wrong := v2Client(env, version, env.AccessKeySecret+"x")
	_, err := wrong.PutObject(ctx, &oss.PutObjectRequest{Bucket: b, Key: oss.Ptr("auth"), Body: strings.NewReader("x")})
	requireServiceError(t, err, 403, "SignatureDoesNotMatch")
	_, err = wrong.HeadObject(ctx, &oss.HeadObjectRequest{Bucket: b, Key: oss.Ptr("auth")})
	requireServiceError(t, err, 403, "SignatureDoesNotMatch") // from x-oss-err, HEAD has no body

	unknown := oss.NewClient(oss.LoadDefaultConfig().
		WithCredentialsProvider(credentialsFor("LTAIunknown", env.AccessKeySecret)).
		WithRegion(env.Region).WithEndpoint(env.URL).WithSignatureVersion(version).WithRetryMaxAttempts(1))
	_, err = unknown.GetObject(ctx, &oss.GetObjectRequest{Bucket: b, Key: oss.Ptr("auth")})
	requireServiceError(t, err, 403, "InvalidAccessKeyId")

	anon := oss.NewClient(oss.LoadDefaultConfig().
		WithCredentialsProvider(anonymousProvider()).
		WithRegion(env.Region).WithEndpoint(env.URL).WithSignatureVersion(version).WithRetryMaxAttempts(1))
	_, err = anon.GetObject(ctx, &oss.GetObjectRequest{Bucket: b, Key: oss.Ptr("auth")})
	requireServiceError(t, err, 403, "AccessDenied")

	// A security token is signed like any x-oss- header.
	sts := oss.NewClient(oss.LoadDefaultConfig().
		WithCredentialsProvider(stsCredentials(env.AccessKeyID, env.AccessKeySecret, "token-abc")).
		WithRegion(env.Region).WithEndpoint(env.URL).WithSignatureVersion(version).WithRetryMaxAttempts(1))
	_, err = sts.PutObject(ctx, &oss.PutObjectRequest{Bucket: b, Key: oss.Ptr("auth"), Body: strings.NewReader("x")})
	require.NoError(t, err)
	ps, err := sts.Presign(ctx, &oss.GetObjectRequest{Bucket: b, Key: oss.Ptr("auth")})
	require.NoError(t, err)
	require.Contains(t, ps.URL, "security-token")
	resp, err := http.Get(ps.URL)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, 200, resp.StatusCode)
}
