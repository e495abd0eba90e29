package osslocal_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/aliyun/alibabacloud-oss-go-sdk-v2/oss"
	"github.com/stretchr/testify/require"

	"github.com/velero-etcd/velero-plugin-for-etcd/internal/osslocal"
	"github.com/velero-etcd/velero-plugin-for-etcd/internal/osslocal/osstest"
)

func requireCode(t *testing.T, err error, status int, code string) {
	t.Helper()
	var se *oss.ServiceError
	require.True(t, errors.As(err, &se), "want a service error, got %v", err)
	require.Equal(t, status, se.StatusCode)
	require.Equal(t, code, se.Code)
}

func TestFaultStatus(t *testing.T) {
	env := osstest.Start(t)
	ctx := testCtx(t)
	c := client(env, 1)
	b := oss.Ptr(env.Bucket)
	putErr := func() error {
		_, err := c.PutObject(ctx, &oss.PutObjectRequest{Bucket: b, Key: oss.Ptr("k"), Body: bytes.NewReader([]byte("v"))})
		return err
	}

	env.Server.InjectFault(osslocal.Fault{Op: "PutObject", Nth: 2, Status: 503, Code: "ServiceUnavailable"})
	require.NoError(t, putErr())
	requireCode(t, putErr(), 503, "ServiceUnavailable")
	require.NoError(t, putErr(), "an Nth fault fires once")

	env.Server.InjectFault(osslocal.Fault{Op: "HeadObject", Status: 500})
	for range 2 {
		_, err := c.HeadObject(ctx, &oss.HeadObjectRequest{Bucket: b, Key: oss.Ptr("k")})
		requireCode(t, err, 500, "InternalError")
	}
	env.Server.ClearFaults()
	_, err := c.HeadObject(ctx, &oss.HeadObjectRequest{Bucket: b, Key: oss.Ptr("k")})
	require.NoError(t, err)

	// The SDK's retries absorb a single 500.
	retrying := client(env, 3)
	env.Server.InjectFault(osslocal.Fault{Op: "GetObjectMeta", Nth: 1, Status: 500})
	before := env.Server.RequestCount("GetObjectMeta")
	ok, err := retrying.IsObjectExist(ctx, env.Bucket, "k")
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, before+2, env.Server.RequestCount("GetObjectMeta"))
}

func TestFaultResetDuringUpload(t *testing.T) {
	env := osstest.Start(t)
	ctx := testCtx(t)
	c := client(env, 1)
	data := make([]byte, 1<<20)
	_, _ = rand.Read(data)

	env.Server.InjectFault(osslocal.Fault{Op: "PutObject", Nth: 1, ResetAfter: 64 << 10})
	_, err := c.PutObject(ctx, &oss.PutObjectRequest{Bucket: oss.Ptr(env.Bucket), Key: oss.Ptr("reset"), Body: bytes.NewReader(data)})
	require.Error(t, err)
	var se *oss.ServiceError
	require.False(t, errors.As(err, &se), "a reset is a transport error, got %v", err)
	require.False(t, exists(t, ctx, c, env, "reset"), "no half object after a reset")
	require.Empty(t, tmpFiles(t, env))

	// A multipart upload survives a reset part through the SDK's retries.
	env.Server.InjectFault(osslocal.Fault{Op: "UploadPart", Nth: 2, ResetAfter: 100 << 10})
	big := make([]byte, 3<<20)
	_, _ = rand.Read(big)
	u := client(env, 3).NewUploader(func(o *oss.UploaderOptions) { o.PartSize = 1 << 20; o.ParallelNum = 1 })
	_, err = u.UploadFrom(ctx, &oss.PutObjectRequest{Bucket: oss.Ptr(env.Bucket), Key: oss.Ptr("mp")}, bytes.NewReader(big))
	require.NoError(t, err)
	require.Equal(t, 4, env.Server.RequestCount("UploadPart"))
	require.Equal(t, big, getBody(t, ctx, c, env, "mp"))
	require.Equal(t, 0, env.Server.PendingUploads(env.Bucket))
}

func TestFaultResetDuringDownload(t *testing.T) {
	env := osstest.Start(t)
	ctx := testCtx(t)
	c := client(env, 1)
	data := make([]byte, 1<<20)
	_, _ = rand.Read(data)
	put(t, ctx, c, env, "big", data)

	env.Server.InjectFault(osslocal.Fault{Op: "GetObject", Nth: 1, ResetAfter: 4096})
	res, err := c.GetObject(ctx, &oss.GetObjectRequest{Bucket: oss.Ptr(env.Bucket), Key: oss.Ptr("big")})
	require.NoError(t, err, "headers arrive before the reset")
	require.Equal(t, int64(len(data)), res.ContentLength)
	got, err := io.ReadAll(res.Body)
	res.Body.Close()
	require.Error(t, err)
	require.Len(t, got, 4096)
	require.Equal(t, data[:4096], got)

	require.Equal(t, data, getBody(t, ctx, c, env, "big"), "the next GET is whole")
}

func TestFaultLatency(t *testing.T) {
	env := osstest.Start(t)
	ctx := testCtx(t)
	c := client(env, 1)
	put(t, ctx, c, env, "k", []byte("v"))

	env.Server.InjectFault(osslocal.Fault{Op: "HeadObject", Nth: 1, Latency: 300 * time.Millisecond})
	start := time.Now()
	_, err := c.HeadObject(ctx, &oss.HeadObjectRequest{Bucket: oss.Ptr(env.Bucket), Key: oss.Ptr("k")})
	require.NoError(t, err)
	require.GreaterOrEqual(t, time.Since(start), 300*time.Millisecond)

	env.Server.InjectFault(osslocal.Fault{Op: "HeadObject", Latency: 2 * time.Second})
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	_, err = c.HeadObject(short, &oss.HeadObjectRequest{Bucket: oss.Ptr(env.Bucket), Key: oss.Ptr("k")})
	require.Error(t, err)
	require.ErrorIs(t, err, context.DeadlineExceeded)
}
