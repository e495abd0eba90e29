package restore

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"

	"github.com/velero-etcd/velero-plugin-for-etcd/etcd/keyspace"
	"github.com/velero-etcd/velero-plugin-for-etcd/internal/etcdtest"
)

func openSnapshot(t *testing.T, cli *clientv3.Client) *keyspace.Snapshot {
	t.Setenv("TMPDIR", t.TempDir())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	resp, err := cli.SnapshotWithVersion(ctx)
	require.NoError(t, err)
	defer resp.Snapshot.Close()
	b, err := io.ReadAll(resp.Snapshot)
	require.NoError(t, err)
	s, err := keyspace.Open(bytes.NewReader(b), keyspace.Expect{})
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	return s
}

// source is a cluster with the kinds of keys a restore must bring back.
func source(t *testing.T, n int) (*etcdtest.Cluster, map[string][]byte) {
	c := etcdtest.Start(t, etcdtest.Options{Members: 1})
	c.Fill(t, n, 300)
	cli := c.Client(t)
	ctx := t.Context()
	l, err := cli.Grant(ctx, 3600)
	require.NoError(t, err)
	for _, k := range []string{"/leased/a", "/leased/b"} {
		_, err = cli.Put(ctx, k, "v-"+k, clientv3.WithLease(l.ID))
		require.NoError(t, err)
	}
	_, err = cli.Put(ctx, "/binary\xff", string([]byte{0, 0xff, 1}))
	require.NoError(t, err)
	_, err = cli.Put(ctx, "/gone", "x")
	require.NoError(t, err)
	_, err = cli.Delete(ctx, "/gone")
	require.NoError(t, err)
	return c, c.Dump(t)
}

func TestLoadAndVerify(t *testing.T) {
	src, want := source(t, 20000)
	snap := openSnapshot(t, src.Client(t))
	dst := etcdtest.Start(t, etcdtest.Options{Members: 3})
	cli := dst.Client(t)
	ctx := t.Context()

	const op = "r1/apps/db/cluster-a/backups/b/etcd-snapshots/apps/db.db"
	ids, created, err := GrantLeases(ctx, cli, op, snap.Leases, 4)
	require.NoError(t, err)
	assert.Equal(t, 1, created)

	// A first load stops part way (as a killed process would); the second
	// resumes from the checkpoint it recorded.
	var checkpoints []int64
	stopAt := snap.Keys / 3
	lctx, cancel := context.WithCancel(ctx)
	n, b, err := Load(lctx, cli, snap, 0, 0, LoadOptions{LeaseIDs: ids, Checkpoint: func(k, _ int64) {
		checkpoints = append(checkpoints, k)
		if k >= stopAt {
			cancel()
		}
	}})
	require.Error(t, err)
	require.GreaterOrEqual(t, n, stopAt)
	require.Less(t, n, snap.Keys)
	assert.IsIncreasing(t, checkpoints)

	ids2, created, err := GrantLeases(ctx, cli, op, snap.Leases, 4)
	require.NoError(t, err)
	assert.Zero(t, created, "the leases of the first attempt are found again")
	assert.Equal(t, ids, ids2)
	n, b, err = Load(ctx, cli, snap, n, b, LoadOptions{LeaseIDs: ids})
	require.NoError(t, err)
	assert.Equal(t, snap.Keys, n)
	assert.Equal(t, snap.Bytes, b)

	assert.Equal(t, want, dst.Dump(t))
	got, err := Verify(ctx, cli, snap)
	require.NoError(t, err)
	sum, err := snap.Summary()
	require.NoError(t, err)
	assert.Equal(t, VerifyResult{Keys: sum.Keys, LeasedKeys: 2, Digest: sum.Digest, Want: sum}, got)

	resp, err := cli.Get(ctx, "/leased/a")
	require.NoError(t, err)
	lease := resp.Kvs[0].Lease
	assert.NotEqual(t, snap.Leases[0].ID, lease, "a new lease ID")
	ttl, err := cli.TimeToLive(ctx, clientv3.LeaseID(lease), clientv3.WithAttachedKeys())
	require.NoError(t, err)
	assert.EqualValues(t, 3600, ttl.GrantedTTL)
	assert.Len(t, ttl.Keys, 2)

	// Verification sees a changed value, a missing key, and extra keys.
	_, err = cli.Put(ctx, "/zzz-extra", "x")
	require.NoError(t, err)
	got, err = Verify(ctx, cli, snap)
	require.NoError(t, err)
	assert.Equal(t, sum.Digest, got.Digest)
	assert.EqualValues(t, 1, got.Extra)
	_, err = cli.Put(ctx, "fill/0000000005", "changed")
	require.NoError(t, err)
	_, err = cli.Delete(ctx, "fill/0000000007")
	require.NoError(t, err)
	got, err = Verify(ctx, cli, snap)
	require.NoError(t, err)
	assert.Equal(t, "fill/0000000005", got.FirstDifferent)
	assert.Equal(t, "fill/0000000007", got.FirstMissing)
	assert.NotEqual(t, sum.Digest, got.Digest)
}

func TestLoadRefusals(t *testing.T) {
	t.Run("value larger than a request", func(t *testing.T) {
		src := etcdtest.Start(t, etcdtest.Options{Members: 1, MaxRequestBytes: 4 << 20})
		cli := src.Client(t)
		_, err := cli.Put(t.Context(), "/big", strings.Repeat("x", 2<<20))
		require.NoError(t, err)
		snap := openSnapshot(t, cli)
		dst := etcdtest.Start(t, etcdtest.Options{Members: 1})
		_, _, err = Load(t.Context(), dst.Client(t), snap, 0, 0, LoadOptions{})
		require.ErrorContains(t, err, `key "/big"`)
		assert.ErrorContains(t, err, AnnotationMaxRequestBytes)
		assert.Empty(t, dst.Dump(t), "nothing was written")
		// With the target's real limit it loads.
		dst2 := etcdtest.Start(t, etcdtest.Options{Members: 1, MaxRequestBytes: 4 << 20})
		_, _, err = Load(t.Context(), dst2.Client(t), snap, 0, 0, LoadOptions{MaxRequestBytes: 4 << 20})
		require.NoError(t, err)
	})

	t.Run("read-only user", func(t *testing.T) {
		src, _ := source(t, 100)
		snap := openSnapshot(t, src.Client(t))
		dst := etcdtest.Start(t, etcdtest.Options{Members: 1, Auth: true})
		root := dst.Client(t)
		ctx := t.Context()
		_, err := root.RoleAdd(ctx, "reader")
		require.NoError(t, err)
		_, err = root.RoleGrantPermission(ctx, "reader", "\x00", "", clientv3.PermissionType(clientv3.PermRead))
		require.NoError(t, err)
		_, err = root.UserAdd(ctx, "reader", "reader-pw")
		require.NoError(t, err)
		_, err = root.UserGrantRole(ctx, "reader", "reader")
		require.NoError(t, err)
		cli, err := clientv3.New(clientv3.Config{Endpoints: dst.Endpoints, Username: "reader", Password: "reader-pw", Logger: zap.NewNop(), DialTimeout: 5 * time.Second})
		require.NoError(t, err)
		defer cli.Close()
		_, _, err = Load(ctx, cli, snap, 0, 0, LoadOptions{LeaseIDs: map[int64]int64{snap.Leases[0].ID: 1}})
		require.Error(t, err)
		var f failure
		terr := targetErr(err)
		require.True(t, errors.As(terr, &f), "permanent: %v", terr)
		assert.Contains(t, terr.Error(), "permission denied")
	})

	t.Run("quota", func(t *testing.T) {
		src := etcdtest.Start(t, etcdtest.Options{Members: 1})
		src.Fill(t, 12000, 1000)
		snap := openSnapshot(t, src.Client(t))
		cli := startQuotaEtcd(t, 4<<20)
		_, _, err := Load(t.Context(), cli, snap, 0, 0, LoadOptions{})
		require.Error(t, err)
		terr := targetErr(err)
		var f failure
		require.True(t, errors.As(terr, &f), "permanent: %v", terr)
		assert.Contains(t, terr.Error(), "quota-backend-bytes")
	})
}

// startQuotaEtcd starts a one-member etcd with a small --quota-backend-bytes.
func startQuotaEtcd(t *testing.T, quota int64) *clientv3.Client {
	cfg := embed.NewConfig()
	cfg.Dir = t.TempDir()
	cfg.QuotaBackendBytes = quota
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	cfg.UnsafeNoFsync = true
	lo, _ := url.Parse("http://127.0.0.1:0")
	cfg.ListenClientUrls, cfg.ListenPeerUrls = []url.URL{*lo}, []url.URL{*lo}
	peer, _ := url.Parse("http://127.0.0.1:2380")
	cfg.AdvertisePeerUrls = []url.URL{*peer}
	cfg.InitialCluster = cfg.Name + "=" + peer.String()
	e, err := embed.StartEtcd(cfg)
	require.NoError(t, err)
	t.Cleanup(e.Close)
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(30 * time.Second):
		t.Fatal("etcd not ready")
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{"http://" + e.Clients[0].Addr().String()}, Logger: zap.NewNop()})
	require.NoError(t, err)
	t.Cleanup(func() { cli.Close() })
	return cli
}
