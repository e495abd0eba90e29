package conformance

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"sort"
	"strings"
	"testing"

	ossv1 "github.com/aliyun/aliyun-oss-go-sdk/oss"
	"github.com/stretchr/testify/require"

	"github.com/velero-etcd/velero-plugin-for-etcd/internal/osslocal/osstest"
)

func TestGoSDKv1(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts []ossv1.ClientOption
	}{
		{"V1", nil},
		{"V4", []ossv1.ClientOption{ossv1.AuthVersion(ossv1.AuthV4), ossv1.Region("cn-hangzhou")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			env := osstest.Start(t)
			bucket := v1Bucket(t, env, env.AccessKeySecret, tc.opts...)
			t.Run("Objects", func(t *testing.T) { t.Parallel(); testV1Objects(t, bucket) })
			t.Run("List", func(t *testing.T) { t.Parallel(); testV1List(t, bucket) })
			t.Run("Multipart", func(t *testing.T) { t.Parallel(); testV1Multipart(t, env, bucket) })
			t.Run("SignURL", func(t *testing.T) { t.Parallel(); testV1SignURL(t, bucket) })
			t.Run("WrongSecret", func(t *testing.T) {
				t.Parallel()
				wrong := v1Bucket(t, env, "not-the-secret", tc.opts...)
				err := wrong.PutObject("x", strings.NewReader("x"), ossv1.WithContext(ctxT(t)))
				requireV1Error(t, err, 403, "SignatureDoesNotMatch")
			})
		})
	}
}

func v1Bucket(t *testing.T, env *osstest.Env, secret string, opts ...ossv1.ClientOption) *ossv1.Bucket {
	opts = append([]ossv1.ClientOption{ossv1.Timeout(10, 60)}, opts...)
	client, err := ossv1.New(env.URL, env.AccessKeyID, secret, opts...)
	require.NoError(t, err)
	b, err := client.Bucket(env.Bucket)
	require.NoError(t, err)
	return b
}

func requireV1Error(t *testing.T, err error, status int, code string) {
	t.Helper()
	var se ossv1.ServiceError
	require.True(t, errors.As(err, &se), "want a service error, got %v", err)
	require.Equal(t, status, se.StatusCode)
	require.Equal(t, code, se.Code)
}

func testV1Objects(t *testing.T, b *ossv1.Bucket) {
	ctx := ossv1.WithContext(ctxT(t))
	for i, key := range trickyKeys {
		key = "obj/" + key
		data := randomBytes(t, 500+i*333)
		require.NoError(t, b.PutObject(key, bytes.NewReader(data), ctx, ossv1.Meta("color", "blue")), key)

		rc, err := b.GetObject(key, ctx)
		require.NoError(t, err, key)
		got, err := io.ReadAll(rc)
		require.NoError(t, err)
		rc.Close()
		require.Equal(t, data, got, key)

		rc, err = b.GetObject(key, ctx, ossv1.Range(5, 54))
		require.NoError(t, err)
		got, _ = io.ReadAll(rc)
		rc.Close()
		require.Equal(t, data[5:55], got)

		h, err := b.GetObjectDetailedMeta(key, ctx)
		require.NoError(t, err, key)
		require.Equal(t, "blue", h.Get("X-Oss-Meta-Color"))
		h, err = b.GetObjectMeta(key, ctx)
		require.NoError(t, err, key)
		require.NotEmpty(t, h.Get("ETag"))

		ok, err := b.IsObjectExist(key, ctx)
		require.NoError(t, err)
		require.True(t, ok)
	}
	ok, err := b.IsObjectExist("obj/missing", ctx)
	require.NoError(t, err)
	require.False(t, ok)
	_, err = b.GetObject("obj/missing", ctx)
	requireV1Error(t, err, 404, "NoSuchKey")

	require.NoError(t, b.DeleteObject("obj/plain.txt", ctx))
	require.NoError(t, b.DeleteObject("obj/plain.txt", ctx))
	var keys []string
	for _, k := range trickyKeys[1:] {
		keys = append(keys, "obj/"+k)
	}
	res, err := b.DeleteObjects(keys, ctx)
	require.NoError(t, err)
	require.ElementsMatch(t, keys, res.DeletedObjects)
	lst, err := b.ListObjectsV2(ctx, ossv1.Prefix("obj/"))
	require.NoError(t, err)
	require.Empty(t, lst.Objects)
}

func testV1List(t *testing.T, b *ossv1.Bucket) {
	ctx := ctxT(t)
	putBulk(t, ctx, bulkCount, func(ctx context.Context, key string) error {
		return b.PutObject(key, strings.NewReader(key), ossv1.WithContext(ctx))
	})
	opt := ossv1.WithContext(ctx)

	var keys []string
	token, pages := "", 0
	for {
		res, err := b.ListObjectsV2(opt, ossv1.Prefix("bulk/"), ossv1.MaxKeys(1000), ossv1.ContinuationToken(token))
		require.NoError(t, err)
		pages++
		for _, o := range res.Objects {
			keys = append(keys, o.Key)
		}
		if !res.IsTruncated {
			break
		}
		token = res.NextContinuationToken
	}
	require.Equal(t, 2, pages)
	require.Len(t, keys, bulkCount)
	require.True(t, sort.StringsAreSorted(keys))

	// The marker-based ListObjects too.
	keys, marker := nil, ""
	for {
		res, err := b.ListObjects(opt, ossv1.Prefix("bulk/"), ossv1.MaxKeys(1000), ossv1.Marker(marker))
		require.NoError(t, err)
		for _, o := range res.Objects {
			keys = append(keys, o.Key)
		}
		if !res.IsTruncated {
			break
		}
		marker = res.NextMarker
	}
	require.Len(t, keys, bulkCount)

	res, err := b.ListObjectsV2(opt, ossv1.Delimiter("/"))
	require.NoError(t, err)
	require.Contains(t, res.CommonPrefixes, "bulk/") // other subtests write alongside
	for _, o := range res.Objects {
		require.NotContains(t, o.Key, "/")
	}
}

func testV1Multipart(t *testing.T, env *osstest.Env, b *ossv1.Bucket) {
	ctx := ossv1.WithContext(ctxT(t))
	const key = "mp/v1 object"
	imur, err := b.InitiateMultipartUpload(key, ctx)
	require.NoError(t, err)
	require.Equal(t, 1, env.Server.PendingUploads(env.Bucket))
	chunks := [][]byte{randomBytes(t, 256<<10), randomBytes(t, 300<<10), randomBytes(t, 10)}
	var parts []ossv1.UploadPart
	for i := len(chunks) - 1; i >= 0; i-- { // any order
		p, err := b.UploadPart(imur, bytes.NewReader(chunks[i]), int64(len(chunks[i])), i+1, ctx)
		require.NoError(t, err)
		parts = append(parts, p)
	}
	sort.Slice(parts, func(i, j int) bool { return parts[i].PartNumber < parts[j].PartNumber })
	_, err = b.CompleteMultipartUpload(imur, parts, ctx)
	require.NoError(t, err)
	require.Equal(t, 0, env.Server.PendingUploads(env.Bucket))

	rc, err := b.GetObject(key, ctx)
	require.NoError(t, err)
	got, _ := io.ReadAll(rc)
	rc.Close()
	require.Equal(t, bytes.Join(chunks, nil), got)
}

func testV1SignURL(t *testing.T, b *ossv1.Bucket) {
	ctx := ctxT(t)
	const key = "signed/a b+c.txt"
	require.NoError(t, b.PutObject(key, strings.NewReader("signed"), ossv1.WithContext(ctx)))
	u, err := b.SignURL(key, ossv1.HTTPGet, 60)
	require.NoError(t, err)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, 200, resp.StatusCode, string(body))
	require.Equal(t, "signed", string(body))

	// The SDK's own GetObjectWithURL.
	rc, err := b.GetObjectWithURL(u, ossv1.WithContext(ctx))
	require.NoError(t, err)
	body, _ = io.ReadAll(rc)
	rc.Close()
	require.Equal(t, "signed", string(body))

	// And a presigned PUT through the SDK.
	pu, err := b.SignURL("signed/put", ossv1.HTTPPut, 60)
	require.NoError(t, err)
	require.NoError(t, b.PutObjectWithURL(pu, strings.NewReader("put via url"), ossv1.WithContext(ctx)))

}
