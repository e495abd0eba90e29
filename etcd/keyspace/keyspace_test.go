package keyspace

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
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
