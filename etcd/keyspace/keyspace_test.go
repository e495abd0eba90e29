package keyspace

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	bolt "go.etcd.io/bbolt"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/velero-etcd/velero-plugin-for-etcd/internal/etcdtest"
)

// snapshotBytes takes a snapshot stream (db and trailer) from the cluster.
func snapshotBytes(t *testing.T, cli *clientv3.Client) []byte {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	resp, err := cli.SnapshotWithVersion(ctx)
	require.NoError(t, err)
	defer resp.Snapshot.Close()
	b, err := io.ReadAll(resp.Snapshot)
	require.NoError(t, err)
	return b
}

func sortedDigest(m map[string][]byte) (string, int64) {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	d := NewDigest()
	for _, k := range keys {
		d.Add([]byte(k), m[k])
	}
	return d.Sum(), d.Count()
}

func TestOpenReadsTheLiveKeyspace(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	c := etcdtest.Start(t, etcdtest.Options{Members: 1})
	c.Fill(t, 3000, 200)
	cli := c.Client(t)
	ctx := t.Context()

	// History the snapshot holds but a restore must not bring back: older
	// versions, deleted keys, a key deleted and put again.
	for i := range 50 {
		_, err := cli.Put(ctx, "/updated", strconv.Itoa(i))
		require.NoError(t, err)
	}
	_, err := cli.Put(ctx, "/deleted", "x")
	require.NoError(t, err)
	_, err = cli.Delete(ctx, "/deleted")
	require.NoError(t, err)
	_, err = cli.Put(ctx, "/reborn", "1")
	require.NoError(t, err)
	_, err = cli.Delete(ctx, "/reborn")
	require.NoError(t, err)
	_, err = cli.Put(ctx, "/reborn", "2")
	require.NoError(t, err)
	_, err = cli.Delete(ctx, "fill/0000000000", clientv3.WithRange("fill/0000000100"))
	require.NoError(t, err)
	_, err = cli.Put(ctx, "/binary", string([]byte{0, 1, 2, 0xff, 0xfe, 0}))
	require.NoError(t, err)
	_, err = cli.Put(ctx, "/empty-value", "")
	require.NoError(t, err)
	l1, err := cli.Grant(ctx, 3600)
	require.NoError(t, err)
	l2, err := cli.Grant(ctx, 120)
	require.NoError(t, err)
	_, err = cli.Put(ctx, "/leased/a", "a", clientv3.WithLease(l1.ID))
	require.NoError(t, err)
	_, err = cli.Put(ctx, "/leased/b", "b", clientv3.WithLease(l1.ID))
	require.NoError(t, err)
	_, err = cli.Put(ctx, "/leased/c", "c", clientv3.WithLease(l2.ID))
	require.NoError(t, err)
	// A compaction removes part of the history: what is left must still read right.
	st, err := cli.Status(ctx, c.Endpoints[0])
	require.NoError(t, err)
	_, err = cli.Compact(ctx, st.Header.Revision-20, clientv3.WithCompactPhysical())
	require.NoError(t, err)

	want := c.Dump(t)
	require.NotContains(t, want, "/deleted")
	stream := snapshotBytes(t, cli)
	sum := sha256.Sum256(stream)

	s, err := Open(bytes.NewReader(stream), Expect{SHA256: hex.EncodeToString(sum[:])})
	require.NoError(t, err)
	defer s.Close()
	entries, _ := os.ReadDir(tmp)
	assert.Empty(t, entries, "the spool file is unlinked once the database is open")

	got := map[string][]byte{}
	var last string
	leases := map[string]int64{}
	require.NoError(t, s.Each(0, func(i int64, kv KV) error {
		k := string(kv.Key)
		assert.Greater(t, k, last, "keys come in ascending order")
		assert.Equal(t, k, s.Key(i))
		last = k
		got[k] = bytes.Clone(kv.Value)
		if kv.Lease != 0 {
			leases[k] = kv.Lease
		}
		return nil
	}))
	assert.Equal(t, len(want), len(got))
	for k, v := range want {
		assert.Equal(t, v, got[k], "key %q", k)
	}
	assert.Equal(t, map[string]int64{"/leased/a": int64(l1.ID), "/leased/b": int64(l1.ID), "/leased/c": int64(l2.ID)}, leases)
	assert.ElementsMatch(t, []Lease{{ID: int64(l1.ID), TTL: 3600}, {ID: int64(l2.ID), TTL: 120}}, s.Leases)
	assert.Equal(t, "49", string(got["/updated"]))
	assert.Equal(t, "2", string(got["/reborn"]))

	assert.EqualValues(t, len(want), s.Keys)
	var size int64
	for k, v := range want {
		size += int64(len(k) + len(v))
	}
	assert.Equal(t, size, s.Bytes)
	assert.GreaterOrEqual(t, s.Revision, st.Header.Revision)
	digest, n := sortedDigest(want)
	sm, err := s.Summary()
	require.NoError(t, err)
	assert.Equal(t, Summary{Keys: n, LeasedKeys: 3, Digest: digest}, sm)
	assert.Equal(t, hex.EncodeToString(sum[:]), s.StreamSHA256)

	// Resuming from an ordinal yields exactly the rest.
	var rest []string
	require.NoError(t, s.Each(s.Keys-3, func(_ int64, kv KV) error { rest = append(rest, string(kv.Key)); return nil }))
	assert.Equal(t, []string{s.Key(s.Keys - 3), s.Key(s.Keys - 2), s.Key(s.Keys - 1)}, rest)
}

func TestOpenRefusesCorruptSnapshots(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	c := etcdtest.Start(t, etcdtest.Options{Members: 1})
	c.Fill(t, 500, 100)
	stream := snapshotBytes(t, c.Client(t))

	flip := bytes.Clone(stream)
	flip[len(flip)/2] ^= 0x40
	badTrailer := bytes.Clone(stream)
	badTrailer[len(badTrailer)-1] ^= 1
	cases := map[string]struct {
		stream []byte
		want   Expect
		msg    string
	}{
		"flipped byte":      {flip, Expect{}, "sha256 trailer"},
		"bad trailer":       {badTrailer, Expect{}, "sha256 trailer"},
		"truncated":         {stream[:len(stream)-4096], Expect{}, "sha256 trailer"},
		"no trailer":        {stream[:len(stream)-32], Expect{}, "not an etcd snapshot"},
		"empty":             {nil, Expect{}, "not an etcd snapshot"},
		"manifest mismatch": {stream, Expect{SHA256: strings.Repeat("ab", 32)}, "manifest says"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := Open(bytes.NewReader(tc.stream), tc.want)
			require.Error(t, err)
			assert.Contains(t, err.Error(), "corrupt")
			assert.Contains(t, err.Error(), tc.msg)
			entries, _ := os.ReadDir(tmp)
			assert.Empty(t, entries, "no spool file is left behind")
		})
	}
	t.Run("read error", func(t *testing.T) {
		_, err := Open(io.MultiReader(bytes.NewReader(stream[:1000]), errReader{}), Expect{})
		require.ErrorContains(t, err, "connection reset")
	})
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, fmt.Errorf("connection reset") }

func TestHoldback(t *testing.T) {
	data := make([]byte, 1000)
	for i := range data {
		data[i] = byte(i)
	}
	for _, chunk := range []int{1, 7, 31, 32, 33, 100, 1000} {
		var out bytes.Buffer
		h := &holdback{w: &out}
		for p := data; len(p) > 0; {
			n := min(chunk, len(p))
			_, err := h.Write(p[:n])
			require.NoError(t, err)
			p = p[n:]
		}
		assert.Equal(t, data[:968], out.Bytes(), "chunk %d", chunk)
		assert.Equal(t, data[968:], h.held[:h.n], "chunk %d", chunk)
	}
}

func TestParseKeyValueMatchesMvccpb(t *testing.T) {
	kv := mvccpb.KeyValue{Key: []byte("k\x00"), CreateRevision: 5, ModRevision: 9, Version: 3, Value: []byte{0, 0xff}, Lease: 0x7fffffffffff1234}
	b, err := kv.Marshal()
	require.NoError(t, err)
	k, v, l, err := parseKeyValue(b)
	require.NoError(t, err)
	assert.Equal(t, kv.Key, k)
	assert.Equal(t, kv.Value, v)
	assert.Equal(t, kv.Lease, l)
	_, _, _, err = parseKeyValue(b[:len(b)-1])
	assert.Error(t, err)
}

// TestMemoryMillionKeys measures the peak RSS of opening and reading a
// snapshot of KEYSPACE_RSS_KEYS keys (e.g. 1000000) of 1 KiB in a child
// process. It writes the snapshot with bbolt directly in etcd's layout, which
// is much faster than filling a cluster.
func TestMemoryMillionKeys(t *testing.T) {
	if path := os.Getenv("KEYSPACE_RSS_CHILD"); path != "" {
		rssChild(t, path)
		return
	}
	n, _ := strconv.Atoi(os.Getenv("KEYSPACE_RSS_KEYS"))
	if n <= 0 {
		t.Skip("set KEYSPACE_RSS_KEYS=1000000 to measure")
	}
	path := os.Getenv("KEYSPACE_RSS_FILE") // reuse a file between runs
	if path == "" {
		path = filepath.Join(t.TempDir(), "snap.db")
	}
	if _, err := os.Stat(path); err != nil {
		writeSyntheticSnapshot(t, path, n, 1024)
	}
	fi, err := os.Stat(path)
	require.NoError(t, err)
	cmd := exec.Command(os.Args[0], "-test.run=^TestMemoryMillionKeys$", "-test.v")
	cmd.Env = append(os.Environ(), "KEYSPACE_RSS_CHILD="+path, "TMPDIR="+t.TempDir())
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, "RESULT") {
			t.Logf("%d keys, %.0f MiB snapshot: %s", n, float64(fi.Size())/(1<<20), strings.TrimSpace(line))
		}
	}
}

func rssChild(t *testing.T, path string) {
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	start := time.Now()
	if os.Getenv("KS_CPU") != "" {
		pf, _ := os.Create(os.Getenv("KS_CPU"))
		pprof.StartCPUProfile(pf)
		defer pprof.StopCPUProfile()
	}
	s, err := Open(f, Expect{})
	require.NoError(t, err)
	opened := time.Since(start)
	var n int64
	require.NoError(t, s.Each(0, func(_ int64, kv KV) error { n += int64(len(kv.Value)); return nil }))
	sm, err := s.Summary()
	require.NoError(t, err)
	require.NoError(t, s.Close())
	status, _ := os.ReadFile("/proc/self/status")
	var hwm string
	for _, l := range strings.Split(string(status), "\n") {
		if strings.HasPrefix(l, "VmHWM:") {
			hwm = strings.TrimSpace(strings.TrimPrefix(l, "VmHWM:"))
		}
	}
	fmt.Printf("RESULT keys=%d valueBytes=%d open+index=%s total=%s peakRSS=%s\n", sm.Keys, n, opened.Round(time.Millisecond), time.Since(start).Round(time.Millisecond), hwm)
}

// writeSyntheticSnapshot writes n keys in etcd's mvcc layout, one revision
// each, and appends the sha256 trailer as the snapshot stream has it.
func writeSyntheticSnapshot(t testing.TB, path string, n, valueSize int) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{NoSync: true, NoFreelistSync: true})
	require.NoError(t, err)
	value := make([]byte, valueSize)
	const perTx = 10000
	for start := 0; start < n; start += perTx {
		require.NoError(t, db.Update(func(tx *bolt.Tx) error {
			b, err := tx.CreateBucketIfNotExists(keyBucket)
			if err != nil {
				return err
			}
			b.FillPercent = 1
			for i := start; i < min(start+perTx, n); i++ {
				rev := int64(i + 2)
				kv := mvccpb.KeyValue{Key: []byte(fmt.Sprintf("/registry/key/%010d", (i*7919)%n)), CreateRevision: rev, ModRevision: rev, Version: 1, Value: value}
				v, _ := kv.Marshal()
				k := make([]byte, revBytesLen)
				putRev(k, rev, 0)
				if err := b.Put(k, v); err != nil {
					return err
				}
			}
			return nil
		}))
	}
	require.NoError(t, db.Close())
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	require.NoError(t, err)
	defer f.Close()
	// Pad to a whole number of 512-byte blocks, as a db of whole pages is.
	fi, _ := f.Stat()
	if pad := fi.Size() % trailerAlign; pad != 0 {
		require.NoError(t, f.Truncate(fi.Size()+trailerAlign-pad))
	}
	h := sha256.New()
	_, err = io.Copy(h, f)
	require.NoError(t, err)
	_, err = f.Write(h.Sum(nil))
	require.NoError(t, err)
}

func putRev(k []byte, main, sub int64) {
	for i := range 8 {
		k[7-i] = byte(main >> (8 * i))
		k[16-i] = byte(sub >> (8 * i))
	}
	k[8] = '_'
}
