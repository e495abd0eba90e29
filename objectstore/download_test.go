package objectstore_test

import (
	"io"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/velero-etcd/velero-plugin-for-etcd/internal/osslocal"
	"github.com/velero-etcd/velero-plugin-for-etcd/internal/osslocal/osstest"
)

// The download reads ahead in its own goroutine; these cases check that a
// bad body still surfaces as an error on the reader and that the goroutine
// never outlives Close.
func TestGetObjectReadAhead(t *testing.T) {
	env := osstest.Start(t)
	s, _ := newStore(t, env)
	const size = 3<<20 + 12345 // several read-ahead chunks and a short last one
	g := newGenReader(size, 11)
	require.NoError(t, s.PutObject(env.Bucket, "ra/obj", g))
	base := runtime.NumGoroutine()

	t.Run("whole object read with small reads", func(t *testing.T) {
		rc, err := s.GetObject(env.Bucket, "ra/obj")
		require.NoError(t, err)
		buf := make([]byte, 1000) // not a divisor of the chunk size
		var n int64
		for {
			m, err := rc.Read(buf)
			n += int64(m)
			if err == io.EOF {
				break
			}
			require.NoError(t, err)
		}
		require.NoError(t, rc.Close())
		assert.Equal(t, int64(size), n)
		digest, _ := objectDigest(t, s, env.Bucket, "ra/obj")
		assert.Equal(t, g.digest(), digest)
	})

	t.Run("close before the end, twice, then read", func(t *testing.T) {
		rc, err := s.GetObject(env.Bucket, "ra/obj")
		require.NoError(t, err)
		_, err = io.ReadFull(rc, make([]byte, 100))
		require.NoError(t, err)
		require.NoError(t, rc.Close())
		_ = rc.Close()
		_, err = rc.Read(make([]byte, 10))
		assert.Error(t, err)
	})

	t.Run("connection reset mid-body", func(t *testing.T) {
		env.Server.InjectFault(osslocal.Fault{Op: "GetObject", Nth: 1, ResetAfter: 1 << 20})
		defer env.Server.ClearFaults()
		rc, err := s.GetObject(env.Bucket, "ra/obj")
		require.NoError(t, err)
		n, err := io.Copy(io.Discard, rc)
		require.Error(t, err)
		assert.Less(t, n, int64(size))
		assert.Contains(t, err.Error(), "GetObject")
		assert.Contains(t, err.Error(), "ra/obj")
		require.NoError(t, rc.Close())
	})

	t.Run("corrupt data on the server fails the last read", func(t *testing.T) {
		files, err := filepath.Glob(filepath.Join(env.DataDir, "buckets", env.Bucket, "objects", "*.data"))
		require.NoError(t, err)
		require.Len(t, files, 1)
		f, err := os.OpenFile(files[0], os.O_RDWR, 0)
		require.NoError(t, err)
		_, err = f.WriteAt([]byte{'X'}, size/2)
		require.NoError(t, err)
		require.NoError(t, f.Close())

		rc, err := s.GetObject(env.Bucket, "ra/obj")
		require.NoError(t, err)
		n, err := io.Copy(io.Discard, rc)
		require.Error(t, err, "corrupt content must not end in a clean EOF")
		assert.Equal(t, int64(size), n)
		assert.Contains(t, err.Error(), "CRC64")
		assert.Contains(t, err.Error(), "ra/obj")
		require.NoError(t, rc.Close())
	})

	// Every read-ahead goroutine has ended (the HTTP transport may keep an
	// idle connection's goroutines, hence the allowance).
	assert.Eventually(t, func() bool { return runtime.NumGoroutine() <= base+2 }, 5*time.Second, 50*time.Millisecond,
		"goroutines: %d, before: %d", runtime.NumGoroutine(), base)
}
