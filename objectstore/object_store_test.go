package objectstore_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/velero-etcd/velero-plugin-for-etcd/internal/osslocal"
	"github.com/velero-etcd/velero-plugin-for-etcd/internal/osslocal/osstest"
	"github.com/velero-etcd/velero-plugin-for-etcd/objectstore"
)

// ---- helpers ---------------------------------------------------------------

// syncBuffer collects log output from concurrent goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func newLogger(out io.Writer) *logrus.Logger {
	l := logrus.New()
	l.SetOutput(out)
	l.SetLevel(logrus.DebugLevel)
	return l
}

// credentialsFile writes a dotenv credentials file for env and returns its path.
func credentialsFile(t *testing.T, id, secret string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "cloud")
	content := fmt.Sprintf("ALIBABA_CLOUD_ACCESS_KEY_ID=%s\nALIBABA_CLOUD_ACCESS_KEY_SECRET=%s\n", id, secret)
	require.NoError(t, os.WriteFile(path, []byte(content), 0o600))
	return path
}

func baseConfig(t *testing.T, env *osstest.Env, kv ...string) map[string]string {
	t.Helper()
	c := map[string]string{
		objectstore.ConfigBucket:          env.Bucket,
		objectstore.ConfigPrefix:          "p",
		objectstore.ConfigRegion:          env.Region,
		objectstore.ConfigEndpoint:        env.URL,
		objectstore.ConfigCredentialsFile: credentialsFile(t, env.AccessKeyID, env.AccessKeySecret),
	}
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] == "<delete>" {
			delete(c, kv[i])
			continue
		}
		c[kv[i]] = kv[i+1]
	}
	return c
}

func newStore(t *testing.T, env *osstest.Env, kv ...string) (*objectstore.ObjectStore, *syncBuffer) {
	t.Helper()
	logs := &syncBuffer{}
	s := objectstore.New(newLogger(logs))
	require.NoError(t, s.Init(baseConfig(t, env, kv...)))
	return s, logs
}

// genReader is Velero's PutObject body: non-seekable, 16 KiB per Read,
// pseudo-random content of a fixed length, hashed as it goes. With failAt >= 0
// it returns failErr once that many bytes were read (with the last bytes).
type genReader struct {
	remaining int64
	read      int64
	rng       *rand.ChaCha8
	sum       hash.Hash
	failAt    int64
	failErr   error
}

func newGenReader(size int64, seed byte) *genReader {
	var s [32]byte
	s[0] = seed
	return &genReader{remaining: size, rng: rand.NewChaCha8(s), sum: sha256.New(), failAt: -1}
}

func (g *genReader) Read(p []byte) (int, error) {
	if g.failAt >= 0 && g.read >= g.failAt {
		return 0, g.failErr
	}
	if g.remaining == 0 {
		return 0, io.EOF
	}
	n := int64(min(len(p), 16<<10))
	n = min(n, g.remaining)
	if g.failAt >= 0 {
		n = min(n, g.failAt-g.read)
	}
	_, _ = g.rng.Read(p[:n])
	g.sum.Write(p[:n])
	g.remaining -= n
	g.read += n
	if g.failAt >= 0 && g.read >= g.failAt {
		return int(n), g.failErr
	}
	return int(n), nil
}

func (g *genReader) digest() string { return fmt.Sprintf("%x", g.sum.Sum(nil)) }

func objectDigest(t *testing.T, s *objectstore.ObjectStore, bucket, key string) (string, int64) {
	t.Helper()
	rc, err := s.GetObject(bucket, key)
	require.NoError(t, err)
	defer rc.Close()
	h := sha256.New()
	n, err := io.Copy(h, rc)
	require.NoError(t, err)
	return fmt.Sprintf("%x", h.Sum(nil)), n
}

func counts(srv *osslocal.Server) map[string]int {
	m := map[string]int{}
	for _, op := range []string{"PutObject", "InitiateMultipartUpload", "UploadPart", "CompleteMultipartUpload", "AbortMultipartUpload"} {
		m[op] = srv.RequestCount(op)
	}
	return m
}

func delta(before, after map[string]int) map[string]int {
	d := map[string]int{}
	for k, v := range after {
		if v-before[k] != 0 {
			d[k] = v - before[k]
		}
	}
	return d
}

// ---- tests -----------------------------------------------------------------

func TestRoundTrip(t *testing.T) {
	for _, sig := range []string{"v4", "v1"} {
		t.Run(sig, func(t *testing.T) {
			env := osstest.Start(t)
			s, logs := newStore(t, env, objectstore.ConfigSignatureVersion, sig)
			b := env.Bucket

			keys := []string{"p/backups/b1/velero-backup.json", "p/backups/b1/b1.tar.gz", "p/backups/b2/velero-backup.json", "p/restores/r1/log.gz", "p/backups/with space+plus/ü.json"}
			for i, k := range keys {
				require.NoError(t, s.PutObject(b, k, strings.NewReader(fmt.Sprintf("content %d", i))), k)
			}

			ok, err := s.ObjectExists(b, keys[0])
			require.NoError(t, err)
			assert.True(t, ok)
			ok, err = s.ObjectExists(b, "p/backups/nope/velero-backup.json")
			require.NoError(t, err)
			assert.False(t, ok)
			_, err = s.ObjectExists("no-such-bucket", "k")
			require.Error(t, err, "a missing bucket is not a missing object")
			assert.Contains(t, err.Error(), "NoSuchBucket")

			rc, err := s.GetObject(b, keys[4])
			require.NoError(t, err)
			data, err := io.ReadAll(rc)
			require.NoError(t, err)
			require.NoError(t, rc.Close())
			assert.Equal(t, "content 4", string(data))

			_, err = s.GetObject(b, "p/backups/nope/velero-backup.json")
			require.Error(t, err)
			assert.Contains(t, err.Error(), "NoSuchKey")
			assert.Contains(t, err.Error(), "GetObject")
			assert.Contains(t, err.Error(), "p/backups/nope/velero-backup.json")
			assert.Regexp(t, `request id \S+`, err.Error())

			prefixes, err := s.ListCommonPrefixes(b, "p/backups/", "/")
			require.NoError(t, err)
			assert.ElementsMatch(t, []string{"p/backups/b1/", "p/backups/b2/", "p/backups/with space+plus/"}, prefixes)
			top, err := s.ListCommonPrefixes(b, "p/", "/")
			require.NoError(t, err)
			assert.ElementsMatch(t, []string{"p/backups/", "p/restores/"}, top)

			objs, err := s.ListObjects(b, "p/backups/b1/")
			require.NoError(t, err)
			assert.ElementsMatch(t, keys[:2], objs)
			all, err := s.ListObjects(b, "p/")
			require.NoError(t, err)
			assert.ElementsMatch(t, keys, all)

			u, err := s.CreateSignedURL(b, keys[4], 10*time.Minute)
			require.NoError(t, err)
			resp, err := http.Get(u)
			require.NoError(t, err)
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			assert.Equal(t, http.StatusOK, resp.StatusCode, string(body))
			assert.Equal(t, "content 4", string(body))

			require.NoError(t, s.DeleteObject(b, keys[0]))
			require.NoError(t, s.DeleteObject(b, keys[0]), "delete is idempotent")
			require.NoError(t, s.DeleteObject(b, "never/existed"))
			ok, err = s.ObjectExists(b, keys[0])
			require.NoError(t, err)
			assert.False(t, ok)

			assert.NotContains(t, logs.String(), env.AccessKeySecret)
		})
	}
}

func TestInitWithCredentials(t *testing.T) {
	env := osstest.Start(t)
	cfg := baseConfig(t, env, objectstore.ConfigCredentialsFile, "<delete>")
	ini := fmt.Sprintf("[default]\r\naccess_key_id = %s\r\naccess_key_secret = %q\r\n", env.AccessKeyID, env.AccessKeySecret)

	s := objectstore.New(newLogger(io.Discard))
	require.NoError(t, s.InitWithCredentials(cfg, []byte(ini)))
	require.NoError(t, s.PutObject(env.Bucket, "k", strings.NewReader("x")))
	ok, err := s.ObjectExists(env.Bucket, "k")
	require.NoError(t, err)
	assert.True(t, ok)

	// Two stores in one process keep their own credentials.
	other := objectstore.New(newLogger(io.Discard))
	require.NoError(t, other.InitWithCredentials(cfg, []byte("ALIBABA_CLOUD_ACCESS_KEY_ID="+env.AccessKeyID+"\nALIBABA_CLOUD_ACCESS_KEY_SECRET=wrong-secret-value\n")))
	_, err = other.ObjectExists(env.Bucket, "k")
	require.Error(t, err)
	ok, err = s.ObjectExists(env.Bucket, "k")
	require.NoError(t, err)
	assert.True(t, ok)
	assert.Empty(t, os.Getenv(objectstore.EnvAccessKeySecret), "credentials never go into the environment")

	err = objectstore.New(nil).InitWithCredentials(baseConfig(t, env), []byte(ini))
	require.ErrorContains(t, err, "credentialsFile")
}

func TestCredentialsFromEnvironment(t *testing.T) {
	env := osstest.Start(t)
	t.Setenv(objectstore.EnvAccessKeyID, env.AccessKeyID)
	t.Setenv(objectstore.EnvAccessKeySecret, env.AccessKeySecret)
	s := objectstore.New(nil)
	require.NoError(t, s.Init(baseConfig(t, env, objectstore.ConfigCredentialsFile, "<delete>")))
	require.NoError(t, s.PutObject(env.Bucket, "k", strings.NewReader("x")))
}

func TestCredentialsFileRotation(t *testing.T) {
	env := osstest.Start(t)
	// Starts with a wrong secret; the rotated Secret must take effect without a new Init.
	objectstore.SetCredentialsFileRecheckForTest(t, 200*time.Millisecond)
	path := credentialsFile(t, env.AccessKeyID, "old-wrong-secret")
	s := objectstore.New(nil)
	require.NoError(t, s.Init(baseConfig(t, env, objectstore.ConfigCredentialsFile, path)))
	_, err := s.ObjectExists(env.Bucket, "k")
	require.ErrorContains(t, err, "SignatureDoesNotMatch")

	content := fmt.Sprintf("ALIBABA_CLOUD_ACCESS_KEY_ID=%s\nALIBABA_CLOUD_ACCESS_KEY_SECRET=%s\n", env.AccessKeyID, env.AccessKeySecret)
	require.NoError(t, os.WriteFile(path, []byte(content), 0o600))
	future := time.Now().Add(time.Minute)
	require.NoError(t, os.Chtimes(path, future, future))
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err = s.ObjectExists(env.Bucket, "k")
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	require.NoError(t, err, "rotated credentials file not picked up within the re-check interval")
}

func TestSinglePutVersusMultipart(t *testing.T) {
	env := osstest.Start(t)
	s, _ := newStore(t, env, objectstore.ConfigPartSizeMiB, "1")
	b := env.Bucket

	for _, tc := range []struct {
		name      string
		size      int64
		wantParts int
	}{
		{"empty", 0, 0},
		{"small", 40 << 10, 0},
		{"just under a part", 1<<20 - 1, 0},
		{"exactly one part", 1 << 20, 0},
		{"one part and a byte", 1<<20 + 1, 2},
		{"exactly three parts", 3 << 20, 3},
		{"three and a half parts", 3<<20 + 512<<10, 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := counts(env.Server)
			g := newGenReader(tc.size, 7)
			key := "sizes/" + strings.ReplaceAll(tc.name, " ", "-")
			require.NoError(t, s.PutObject(b, key, g))
			d := delta(before, counts(env.Server))
			if tc.wantParts == 0 {
				assert.Equal(t, map[string]int{"PutObject": 1}, d)
			} else {
				assert.Equal(t, map[string]int{"InitiateMultipartUpload": 1, "UploadPart": tc.wantParts, "CompleteMultipartUpload": 1}, d)
			}
			sum, n := objectDigest(t, s, b, key)
			assert.Equal(t, tc.size, n)
			assert.Equal(t, g.digest(), sum)
			assert.Zero(t, env.Server.PendingUploads(b))
		})
	}
}

func TestMultipartLargeNonSeekable(t *testing.T) {
	env := osstest.Start(t)
	s, _ := newStore(t, env, objectstore.ConfigPartSizeMiB, "1", objectstore.ConfigUploadConcurrency, "4")
	before := counts(env.Server)
	g := newGenReader(40<<20+12345, 3)
	require.NoError(t, s.PutObject(env.Bucket, "big/snapshot.db", g))
	d := delta(before, counts(env.Server))
	assert.Equal(t, 41, d["UploadPart"])
	assert.Zero(t, d["PutObject"])
	sum, n := objectDigest(t, s, env.Bucket, "big/snapshot.db")
	assert.Equal(t, int64(40<<20+12345), n)
	assert.Equal(t, g.digest(), sum)
}

func TestBodyReaderErrorLeavesNothing(t *testing.T) {
	env := osstest.Start(t)
	s, _ := newStore(t, env, objectstore.ConfigPartSizeMiB, "1", objectstore.ConfigUploadConcurrency, "3")
	errTrailer := errors.New("snapshot trailer mismatch")
	for _, tc := range []struct {
		name   string
		size   int64
		failAt int64
	}{
		{"within first part", 5 << 20, 300 << 10},
		{"mid-stream", 5 << 20, 3<<20 + 77},
		{"with the last bytes on a part boundary", 4 << 20, 4 << 20},
		{"with the last bytes of a small body", 1000, 1000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			key := "fail/" + strings.ReplaceAll(tc.name, " ", "-")
			g := newGenReader(tc.size, 1)
			g.failAt, g.failErr = tc.failAt, errTrailer
			err := s.PutObjectContext(context.Background(), env.Bucket, key, g)
			require.Error(t, err)
			assert.ErrorIs(t, err, errTrailer)
			assert.Contains(t, err.Error(), "snapshot trailer mismatch")
			assert.Contains(t, err.Error(), key)
			assert.Zero(t, env.Server.PendingUploads(env.Bucket), "no orphan multipart upload")
			ok, err := s.ObjectExists(env.Bucket, key)
			require.NoError(t, err)
			assert.False(t, ok, "no partial object at the key")
		})
	}
}

func TestUploadPartFailureAborts(t *testing.T) {
	env := osstest.Start(t)
	s, logs := newStore(t, env, objectstore.ConfigPartSizeMiB, "1", objectstore.ConfigUploadConcurrency, "2")
	b := env.Bucket

	t.Run("non-retryable 4xx", func(t *testing.T) {
		before := counts(env.Server)
		env.Server.InjectFault(osslocal.Fault{Op: "UploadPart", Nth: 2, Status: 403, Code: "AccessDenied"})
		t.Cleanup(env.Server.ClearFaults)
		err := s.PutObject(b, "inj/403", newGenReader(6<<20, 2))
		require.Error(t, err)
		assert.Contains(t, err.Error(), "AccessDenied")
		assert.Contains(t, err.Error(), "HTTP 403")
		assert.Contains(t, err.Error(), "inj/403")
		assert.Regexp(t, `request id [0-9A-Za-z]+`, err.Error())
		d := delta(before, counts(env.Server))
		assert.Equal(t, 1, d["AbortMultipartUpload"])
		assert.Zero(t, d["CompleteMultipartUpload"])
		assert.Zero(t, env.Server.PendingUploads(b))
		ok, err := s.ObjectExists(b, "inj/403")
		require.NoError(t, err)
		assert.False(t, ok)
	})

	t.Run("5xx beyond retries", func(t *testing.T) {
		env.Server.ClearFaults()
		env.Server.InjectFault(osslocal.Fault{Op: "UploadPart", Nth: 0, Status: 503, Code: "ServiceUnavailable"})
		t.Cleanup(env.Server.ClearFaults)
		err := s.PutObject(b, "inj/503", newGenReader(4<<20, 2))
		require.Error(t, err)
		assert.Contains(t, err.Error(), "ServiceUnavailable")
		assert.Zero(t, env.Server.PendingUploads(b))
		ok, err := s.ObjectExists(b, "inj/503")
		require.NoError(t, err)
		assert.False(t, ok)
	})

	t.Run("transient 5xx is retried", func(t *testing.T) {
		env.Server.ClearFaults()
		env.Server.InjectFault(osslocal.Fault{Op: "UploadPart", Nth: 2, Status: 500, Code: "InternalError"})
		env.Server.InjectFault(osslocal.Fault{Op: "PutObject", Nth: 1, Status: 500, Code: "InternalError"})
		t.Cleanup(env.Server.ClearFaults)
		g := newGenReader(3<<20, 9)
		require.NoError(t, s.PutObject(b, "inj/retried", g))
		sum, _ := objectDigest(t, s, b, "inj/retried")
		assert.Equal(t, g.digest(), sum)
		require.NoError(t, s.PutObject(b, "inj/retried-small", strings.NewReader("small")))
	})

	t.Run("connection reset mid-part", func(t *testing.T) {
		// The SDK retries a reset before any response. Should the response
		// status already be out when the connection breaks, the part fails
		// instead; either way nothing partial may remain.
		env.Server.ClearFaults()
		env.Server.InjectFault(osslocal.Fault{Op: "UploadPart", Nth: 1, ResetAfter: 200 << 10})
		t.Cleanup(env.Server.ClearFaults)
		g := newGenReader(2<<20+5, 11)
		err := s.PutObject(b, "inj/reset", g)
		if err == nil {
			sum, _ := objectDigest(t, s, b, "inj/reset")
			assert.Equal(t, g.digest(), sum)
			return
		}
		t.Logf("upload failed after a reset: %v", err)
		assert.Zero(t, env.Server.PendingUploads(b))
		ok, err := s.ObjectExists(b, "inj/reset")
		require.NoError(t, err)
		assert.False(t, ok)
	})

	// The server stores a flipped bit and reports the CRC64 of what it
	// stored: the upload must fail, name the mismatch, and leave no object
	// and no parts behind.
	t.Run("part corrupted in transit", func(t *testing.T) {
		env.Server.ClearFaults()
		before := counts(env.Server)
		env.Server.InjectFault(osslocal.Fault{Op: "UploadPart", Nth: 2, CorruptBody: true})
		t.Cleanup(env.Server.ClearFaults)
		err := s.PutObject(b, "inj/corrupt-part", newGenReader(3<<20+7, 12))
		require.Error(t, err)
		assert.Contains(t, err.Error(), "CRC64 OSS stored")
		assert.Regexp(t, `part \d+: CRC64`, err.Error()) // which part is second to arrive varies
		assert.Contains(t, err.Error(), "inj/corrupt-part")
		d := delta(before, counts(env.Server))
		assert.Equal(t, 1, d["AbortMultipartUpload"])
		assert.Zero(t, d["CompleteMultipartUpload"])
		assert.Zero(t, env.Server.PendingUploads(b))
		ok, err := s.ObjectExists(b, "inj/corrupt-part")
		require.NoError(t, err)
		assert.False(t, ok)
	})
	t.Run("single put corrupted in transit", func(t *testing.T) {
		env.Server.ClearFaults()
		env.Server.InjectFault(osslocal.Fault{Op: "PutObject", Nth: 1, CorruptBody: true})
		t.Cleanup(env.Server.ClearFaults)
		err := s.PutObject(b, "inj/corrupt-small", strings.NewReader("a small object"))
		require.Error(t, err)
		assert.Contains(t, err.Error(), "CRC64 OSS stored")
		assert.Contains(t, err.Error(), "inj/corrupt-small")
		ok, err := s.ObjectExists(b, "inj/corrupt-small")
		require.NoError(t, err)
		assert.False(t, ok, "a corrupt object must not stay at the key")
	})

	t.Run("complete fails", func(t *testing.T) {
		env.Server.ClearFaults()
		env.Server.InjectFault(osslocal.Fault{Op: "CompleteMultipartUpload", Nth: 0, Status: 400, Code: "InvalidPart"})
		t.Cleanup(env.Server.ClearFaults)
		err := s.PutObject(b, "inj/complete", newGenReader(2<<20+1, 4))
		require.ErrorContains(t, err, "InvalidPart")
		assert.Zero(t, env.Server.PendingUploads(b))
	})
	t.Run("caller deadline expires mid-upload", func(t *testing.T) {
		env.Server.ClearFaults()
		env.Server.InjectFault(osslocal.Fault{Op: "UploadPart", Nth: 0, Latency: 2 * time.Second})
		t.Cleanup(env.Server.ClearFaults)
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		start := time.Now()
		err := s.PutObjectContext(ctx, b, "inj/deadline", newGenReader(3<<20, 4))
		require.Error(t, err)
		assert.Less(t, time.Since(start), 5*time.Second)
		assert.Zero(t, env.Server.PendingUploads(b), "aborted with a fresh context")
		env.Server.ClearFaults()
		ok, err := s.ObjectExists(b, "inj/deadline")
		require.NoError(t, err)
		assert.False(t, ok)
	})
	assert.Contains(t, logs.String(), "Aborted failed OSS multipart upload")
}

func TestServerSideEncryptionAndStorageClassAreSent(t *testing.T) {
	env := osstest.Start(t)
	target, err := url.Parse(env.URL)
	require.NoError(t, err)
	var mu sync.Mutex
	seen := map[string]http.Header{}
	proxy := httputil.NewSingleHostReverseProxy(target)
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		op := r.Method
		switch q := r.URL.Query(); {
		case q.Has("uploads"):
			op = "InitiateMultipartUpload"
		case q.Has("partNumber"):
			op = "UploadPart"
		}
		mu.Lock()
		seen[op] = r.Header.Clone()
		mu.Unlock()
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(front.Close)

	s, _ := newStore(t, env, objectstore.ConfigEndpoint, front.URL, objectstore.ConfigPartSizeMiB, "1",
		objectstore.ConfigServerSideEncryption, "KMS", objectstore.ConfigKMSKeyID, "kms-key-1", objectstore.ConfigStorageClass, "IA")
	require.NoError(t, s.PutObject(env.Bucket, "sse/small", strings.NewReader("x")))
	require.NoError(t, s.PutObject(env.Bucket, "sse/big", newGenReader(2<<20+1, 1)))
	mu.Lock()
	defer mu.Unlock()
	for _, op := range []string{"PUT", "InitiateMultipartUpload"} {
		h := seen[op]
		require.NotNil(t, h, op)
		assert.Equal(t, "KMS", h.Get("x-oss-server-side-encryption"), op)
		assert.Equal(t, "kms-key-1", h.Get("x-oss-server-side-encryption-key-id"), op)
		assert.Equal(t, "IA", h.Get("x-oss-storage-class"), op)
	}
}

func TestWrongSecret(t *testing.T) {
	env := osstest.Start(t)
	const wrong = "definitely-the-wrong-secret"
	s, logs := newStore(t, env, objectstore.ConfigCredentialsFile, credentialsFile(t, env.AccessKeyID, wrong))
	_, err := s.ObjectExists(env.Bucket, "anything")
	require.Error(t, err, "a failed HEAD is never a silent false")
	t.Log(err)
	assert.Contains(t, err.Error(), "SignatureDoesNotMatch")
	assert.Contains(t, err.Error(), "ObjectExists")

	err = s.PutObject(env.Bucket, "k", strings.NewReader("x"))
	require.ErrorContains(t, err, "SignatureDoesNotMatch")
	_, err = s.ListObjects(env.Bucket, "p/")
	require.ErrorContains(t, err, "SignatureDoesNotMatch")
	for _, secret := range []string{wrong, env.AccessKeySecret} {
		assert.NotContains(t, err.Error(), secret)
		assert.NotContains(t, logs.String(), secret)
	}
}

func TestListPagingPastThousand(t *testing.T) {
	env := osstest.Start(t)
	s, _ := newStore(t, env)
	const backups = 1010
	var want []string
	for i := 0; i < backups; i++ {
		want = append(want, fmt.Sprintf("p/backups/b%04d/", i))
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= backups {
					return
				}
				if err := s.PutObject(env.Bucket, want[i]+"velero-backup.json", strings.NewReader("{}")); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	require.NoError(t, s.PutObject(env.Bucket, "p/backups/b0001/b0001.tar.gz", strings.NewReader("x")))

	listsBefore := env.Server.RequestCount("ListObjectsV2")
	prefixes, err := s.ListCommonPrefixes(env.Bucket, "p/backups/", "/")
	require.NoError(t, err)
	sort.Strings(prefixes)
	assert.Equal(t, want, prefixes)
	assert.GreaterOrEqual(t, env.Server.RequestCount("ListObjectsV2")-listsBefore, 2, "must page")

	keys, err := s.ListObjects(env.Bucket, "p/backups/")
	require.NoError(t, err)
	assert.Len(t, keys, backups+1)
}

func TestSignedURLEndpoint(t *testing.T) {
	env := osstest.Start(t)
	for _, sig := range []string{"v4", "v1"} {
		t.Run(sig, func(t *testing.T) {
			// The server is reached by IP; download clients use another name.
			s, _ := newStore(t, env, objectstore.ConfigSignatureVersion, sig, objectstore.ConfigUsePathStyle, "true",
				objectstore.ConfigSignedURLEndpoint, env.Host)
			require.NoError(t, s.PutObject(env.Bucket, "dl/file.gz", strings.NewReader("download me")))
			u, err := s.CreateSignedURL(env.Bucket, "dl/file.gz", time.Minute)
			require.NoError(t, err)
			parsed, err := url.Parse(u)
			require.NoError(t, err)
			assert.Equal(t, env.Host, parsed.Host)
			assert.Equal(t, "http", parsed.Scheme)
			resp, err := http.Get(u)
			require.NoError(t, err)
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			require.Equal(t, http.StatusOK, resp.StatusCode, string(body))
			assert.Equal(t, "download me", string(body))
		})
	}

	s, _ := newStore(t, env, objectstore.ConfigSignedURLEndpoint, "https://downloads.example.com")
	u, err := s.CreateSignedURL(env.Bucket, "dl/file.gz", time.Minute)
	require.NoError(t, err)
	assert.True(t, strings.HasPrefix(u, "https://velero.downloads.example.com/dl/file.gz?"), u)
}

func TestTLS(t *testing.T) {
	env := osstest.StartTLS(t)
	require.True(t, strings.HasPrefix(env.URL, "https://"))

	s, _ := newStore(t, env, objectstore.ConfigCACert, string(env.CACert))
	require.NoError(t, s.PutObject(env.Bucket, "tls/k", strings.NewReader("x")))
	ok, err := s.ObjectExists(env.Bucket, "tls/k")
	require.NoError(t, err)
	assert.True(t, ok)

	s, _ = newStore(t, env, objectstore.ConfigRequestTimeout, "10s")
	_, err = s.ObjectExists(env.Bucket, "tls/k")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "certificate")

	s, _ = newStore(t, env, objectstore.ConfigInsecureSkipTLSVerify, "true")
	ok, err = s.ObjectExists(env.Bucket, "tls/k")
	require.NoError(t, err)
	assert.True(t, ok)

	err = objectstore.New(nil).Init(baseConfig(t, env, objectstore.ConfigCACert, "not a pem"))
	require.ErrorContains(t, err, "caCert")
}

func TestUnreachableEndpointFailsInBoundedTime(t *testing.T) {
	env := osstest.Start(t) // only for its credentials

	closed, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	closedAddr := closed.Addr().String()
	require.NoError(t, closed.Close())

	silent, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { silent.Close() })
	var conns []net.Conn
	var connsMu sync.Mutex
	go func() {
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			connsMu.Lock()
			conns = append(conns, c) // accepted, read nothing, never answered
			connsMu.Unlock()
		}
	}()
	t.Cleanup(func() {
		connsMu.Lock()
		defer connsMu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})

	for _, tc := range []struct {
		name, addr string
	}{
		{"closed port", closedAddr},
		{"listener that never answers", silent.Addr().String()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := newStore(t, env, objectstore.ConfigEndpoint, "http://"+tc.addr,
				objectstore.ConfigConnectTimeout, "1s", objectstore.ConfigReadWriteTimeout, "1s",
				objectstore.ConfigRequestTimeout, "3s", objectstore.ConfigTransferTimeout, "3s")
			ops := map[string]func() error{
				"ObjectExists": func() error { _, err := s.ObjectExists(env.Bucket, "k"); return err },
				"ListObjects":  func() error { _, err := s.ListObjects(env.Bucket, "p/"); return err },
				"PutObject":    func() error { return s.PutObject(env.Bucket, "k", strings.NewReader("x")) },
				"GetObject":    func() error { _, err := s.GetObject(env.Bucket, "k"); return err },
			}
			var wg sync.WaitGroup
			for name, op := range ops {
				wg.Add(1)
				go func() {
					defer wg.Done()
					start := time.Now()
					err := op()
					elapsed := time.Since(start)
					if assert.Error(t, err, name) {
						t.Logf("%s after %s: %v", name, elapsed.Round(time.Millisecond), err)
						assert.Contains(t, err.Error(), name)
					}
					assert.Less(t, elapsed, 6*time.Second, "%s took %s", name, elapsed)
				}()
			}
			wg.Wait()
		})
	}
}

func TestInitErrors(t *testing.T) {
	env := osstest.Start(t)
	dir := t.TempDir()
	malformed := filepath.Join(dir, "malformed")
	require.NoError(t, os.WriteFile(malformed, []byte("ALIBABA_CLOUD_ACCESS_KEY_ID="+env.AccessKeyID+"\n"+env.AccessKeySecret+"\n"), 0o600))

	for _, tc := range []struct {
		name string
		cfg  map[string]string
		want []string
	}{
		{"unknown key", baseConfig(t, env, "endpoitn", "x"), []string{"endpoitn", "valid keys are", "region", "signedUrlEndpoint", "credentialsFile"}},
		{"missing bucket", baseConfig(t, env, objectstore.ConfigBucket, "<delete>"), []string{"bucket"}},
		{"missing region", baseConfig(t, env, objectstore.ConfigRegion, "<delete>"), []string{"region"}},
		{"missing credentials file", baseConfig(t, env, objectstore.ConfigCredentialsFile, filepath.Join(dir, "nope")), []string{filepath.Join(dir, "nope"), "no such file"}},
		{"malformed credentials file", baseConfig(t, env, objectstore.ConfigCredentialsFile, malformed), []string{malformed, "line 2", "KEY=VALUE"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := objectstore.New(nil).Init(tc.cfg)
			require.Error(t, err)
			for _, w := range tc.want {
				assert.Contains(t, err.Error(), w)
			}
			assert.NotContains(t, err.Error(), env.AccessKeySecret)
		})
	}

	var s objectstore.ObjectStore
	_, err := s.ObjectExists("b", "k")
	require.ErrorContains(t, err, "not initialized")
}

// TestNoSecretInErrorsOrLogs runs the failure paths with one captured logger
// and checks no secret appears in any error text or log line.
func TestNoSecretInErrorsOrLogs(t *testing.T) {
	env := osstest.Start(t)
	const wrongSecret = "WrongSecretValue12345"
	const token = "SecurityTokenValue67890"
	logs := &syncBuffer{}
	log := newLogger(logs)
	var errs []error
	collect := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	dir := t.TempDir()

	good := objectstore.New(log)
	require.NoError(t, good.Init(baseConfig(t, env, objectstore.ConfigPartSizeMiB, "1")))

	bad := objectstore.New(log)
	withToken := fmt.Sprintf("ALIBABA_CLOUD_ACCESS_KEY_ID=%s\nALIBABA_CLOUD_ACCESS_KEY_SECRET=%s\nALIBABA_CLOUD_SECURITY_TOKEN=%s\n", env.AccessKeyID, wrongSecret, token)
	require.NoError(t, bad.InitWithCredentials(baseConfig(t, env, objectstore.ConfigCredentialsFile, "<delete>"), []byte(withToken)))

	_, err := bad.ObjectExists(env.Bucket, "k")
	collect(err)
	collect(bad.PutObject(env.Bucket, "k", newGenReader(3<<20, 1)))
	_, err = bad.GetObject(env.Bucket, "k")
	collect(err)
	_, err = bad.ListCommonPrefixes(env.Bucket, "p/", "/")
	collect(err)
	collect(bad.DeleteObject(env.Bucket, "k"))

	g := newGenReader(3<<20, 1)
	g.failAt, g.failErr = 2<<20, errors.New("reader broke")
	collect(good.PutObject(env.Bucket, "k", g))
	env.Server.InjectFault(osslocal.Fault{Op: "UploadPart", Nth: 1, Status: 403, Code: "AccessDenied"})
	collect(good.PutObject(env.Bucket, "k", newGenReader(3<<20, 1)))
	env.Server.ClearFaults()

	for i, content := range []string{
		env.AccessKeySecret + "\n",
		"ALIBABA_CLOUD_ACCESS_KEY_SECRET=\"" + env.AccessKeySecret + "\n",
		"[default]\naccess_key_secret=" + env.AccessKeySecret + "\n",
		"ALIBABA_CLOUD_ACCESS_KEY_ID=" + env.AccessKeySecret + "\n",
	} {
		path := filepath.Join(dir, fmt.Sprint(i))
		require.NoError(t, os.WriteFile(path, []byte(content), 0o600))
		collect(objectstore.New(log).Init(baseConfig(t, env, objectstore.ConfigCredentialsFile, path)))
		collect(objectstore.New(log).InitWithCredentials(baseConfig(t, env, objectstore.ConfigCredentialsFile, "<delete>"), []byte(content)))
	}

	require.GreaterOrEqual(t, len(errs), 14)
	for _, err := range errs {
		for _, secret := range []string{env.AccessKeySecret, wrongSecret, token} {
			assert.NotContains(t, err.Error(), secret)
			assert.NotContains(t, fmt.Sprintf("%+v", err), secret)
		}
	}
	for _, secret := range []string{env.AccessKeySecret, wrongSecret, token} {
		assert.NotContains(t, logs.String(), secret)
	}
}

// TestMemoryBounded uploads and downloads 64 MiB through streams and checks
// that the heap never grows by anything near the object size.
func TestMemoryBounded(t *testing.T) {
	env := osstest.Start(t)
	const partMiB, concurrency = 2, 4
	s, _ := newStore(t, env, objectstore.ConfigPartSizeMiB, fmt.Sprint(partMiB), objectstore.ConfigUploadConcurrency, fmt.Sprint(concurrency))
	const size = 64 << 20
	bound := uint64((concurrency+2)*partMiB<<20 + 16<<20)

	defer debug.SetGCPercent(debug.SetGCPercent(25))
	measure := func(work func()) uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		base := ms.HeapInuse
		var peak atomic.Uint64
		done := make(chan struct{})
		stopped := make(chan struct{})
		go func() {
			defer close(stopped)
			tick := time.NewTicker(5 * time.Millisecond)
			defer tick.Stop()
			for {
				var ms runtime.MemStats
				runtime.ReadMemStats(&ms)
				if ms.HeapInuse > base && ms.HeapInuse-base > peak.Load() {
					peak.Store(ms.HeapInuse - base)
				}
				select {
				case <-done:
					return
				case <-tick.C:
				}
			}
		}()
		work()
		close(done)
		<-stopped
		return peak.Load()
	}

	g := newGenReader(size, 5)
	up := measure(func() { require.NoError(t, s.PutObject(env.Bucket, "mem/big", g)) })
	t.Logf("upload: peak heap growth %d MiB (bound %d MiB)", up>>20, bound>>20)
	assert.Less(t, up, bound)

	down := measure(func() {
		rc, err := s.GetObject(env.Bucket, "mem/big")
		require.NoError(t, err)
		h := sha256.New()
		n, err := io.Copy(h, rc)
		require.NoError(t, err)
		require.NoError(t, rc.Close())
		assert.Equal(t, int64(size), n)
		assert.Equal(t, g.digest(), fmt.Sprintf("%x", h.Sum(nil)))
	})
	t.Logf("download: peak heap growth %d MiB", down>>20)
	assert.Less(t, down, uint64(16<<20))
}
