package host

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	velerov1 "github.com/vmware-tanzu/velero/pkg/apis/velero/v1"
	"github.com/vmware-tanzu/velero/pkg/persistence"
	biav2 "github.com/vmware-tanzu/velero/pkg/plugin/velero/backupitemaction/v2"
	clientv3 "go.etcd.io/etcd/client/v3"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/velero-etcd/velero-plugin-for-etcd/etcd/backup"
	"github.com/velero-etcd/velero-plugin-for-etcd/internal/actiontest"
	"github.com/velero-etcd/velero-plugin-for-etcd/internal/etcdtest"
	"github.com/velero-etcd/velero-plugin-for-etcd/internal/kubetest"
	"github.com/velero-etcd/velero-plugin-for-etcd/internal/osslocal"
	"github.com/velero-etcd/velero-plugin-for-etcd/internal/osslocal/osstest"
	"github.com/velero-etcd/velero-plugin-for-etcd/internal/plugintest"
	"github.com/velero-etcd/velero-plugin-for-etcd/objectstore"
)

// snapshotEnv is actiontest's environment plus the snapshot action launched
// through Velero's host code.
// capturedLog is kept as a name for the restore tests.
type capturedLog = actiontest.Log

type snapshotEnv struct {
	*actiontest.Env
	kube   *kubetest.Env
	oss    *osstest.Env
	store  *objectstore.ObjectStore
	action biav2.BackupItemAction
	log    *actiontest.Log
}

func newSnapshotEnv(t *testing.T) *snapshotEnv {
	env := actiontest.Start(t)
	log, captured := actiontest.NewLogger()
	action, err := plugintest.Manager(t, log).GetBackupItemActionV2(backup.PluginName)
	require.NoError(t, err)
	return &snapshotEnv{Env: env, kube: env.Kube, oss: env.OSS, store: env.Store, action: action, log: captured}
}

var (
	newBackup   = actiontest.NewBackup
	etcdCluster = actiontest.EtcdCluster
)

func (e *snapshotEnv) get(t *testing.T, key string) []byte       { return e.Get(t, key) }
func (e *snapshotEnv) keys(t *testing.T, prefix string) []string { return e.Keys(t, prefix) }

// restoreAndDump restores snapshot bytes with etcdutl into a new
// single-member cluster and returns every key and value.
func restoreAndDump(t *testing.T, db []byte, opts etcdtest.Options) map[string][]byte {
	path := filepath.Join(t.TempDir(), "snapshot.db")
	require.NoError(t, os.WriteFile(path, db, 0o600))
	opts.Members = 1
	return etcdtest.StartFromSnapshot(t, opts, path).Dump(t)
}

func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().String()
}

func TestSnapshotAction(t *testing.T) {
	env := newSnapshotEnv(t)

	t.Run("unannotated item passes through untouched", func(t *testing.T) {
		item := etcdCluster("plain", []string{"http://127.0.0.1:1"}, nil)
		delete(item.GetAnnotations(), "velero-etcd.io/snapshot")
		item.SetAnnotations(map[string]string{"velero-etcd.io/endpoints": "http://127.0.0.1:1"})
		out, _, opID, _, err := env.action.Execute(item, newBackup("b0", "default"))
		require.NoError(t, err)
		assert.Empty(t, opID)
		assert.Equal(t, item.Object, out.UnstructuredContent())
	})

	roundTrip := func(t *testing.T, opts etcdtest.Options, compression string, extra func(*etcdtest.Cluster) map[string]string, wantSecrets ...string) {
		c := etcdtest.Start(t, opts)
		c.Fill(t, 2000, 100)
		cli := c.Client(t)
		ctx := t.Context()
		lease, err := cli.Grant(ctx, 3600)
		require.NoError(t, err)
		_, err = cli.Put(ctx, "/leased/key", "with a lease", clientv3.WithLease(lease.ID))
		require.NoError(t, err)
		_, err = cli.Put(ctx, "/binary", string([]byte{0, 1, 2, 0xff, 0xfe}))
		require.NoError(t, err)
		want := c.Dump(t)

		ann := map[string]string{}
		if extra != nil {
			ann = extra(c)
		}
		if compression != "" {
			ann["velero-etcd.io/compression"] = compression
		}
		name := "db-" + strings.ToLower(strings.ReplaceAll(t.Name()[strings.LastIndex(t.Name(), "/")+1:], "_", "-"))
		bname := "b-" + name
		item := etcdCluster(name, c.Endpoints, ann)
		out, additional, opID, _, err := env.action.Execute(item, newBackup(bname, "default"))
		require.NoError(t, err)
		assert.Empty(t, opID)
		// The Secrets the restore needs go into the backup with the cluster.
		var gotSecrets []string
		for _, r := range additional {
			assert.Equal(t, "secrets", r.GroupResource.String())
			assert.Equal(t, "apps", r.Namespace)
			gotSecrets = append(gotSecrets, r.Name)
		}
		assert.Equal(t, wantSecrets, gotSecrets)
		got := &unstructured.Unstructured{Object: out.UnstructuredContent()}
		a := got.GetAnnotations()
		key := a[backup.AnnotationSnapshotKey]
		suffix := ".db"
		if compression == "zstd" {
			suffix = ".db.zst"
		}
		assert.Equal(t, "cluster-a/backups/"+bname+"/etcd-snapshots/apps/"+name+suffix, key)

		stored := env.get(t, key)
		sum := sha256.Sum256(stored)
		assert.Equal(t, hex.EncodeToString(sum[:]), a[backup.AnnotationSnapshotSHA256])
		assert.Equal(t, strconv.Itoa(len(stored)), a[backup.AnnotationSnapshotSize])
		rev, err := strconv.ParseInt(a[backup.AnnotationSnapshotRevision], 10, 64)
		require.NoError(t, err)
		assert.Positive(t, rev)

		var m map[string]any
		require.NoError(t, json.Unmarshal(env.get(t, strings.TrimSuffix(key, suffix)+".json"), &m))
		assert.Equal(t, hex.EncodeToString(sum[:]), m["storedSHA256"])
		assert.Equal(t, bname, m["backupName"])
		assert.EqualValues(t, rev, m["revision"])

		raw := stored
		if compression == "zstd" {
			dec, err := zstd.NewReader(bytes.NewReader(stored))
			require.NoError(t, err)
			raw, err = io.ReadAll(dec)
			dec.Close()
			require.NoError(t, err)
			assert.Less(t, len(stored), len(raw), "zstd made the object smaller")
		}
		rawSum := sha256.Sum256(raw)
		assert.Equal(t, hex.EncodeToString(rawSum[:]), m["rawSHA256"])
		assert.Equal(t, want, restoreAndDump(t, raw, etcdtest.Options{Auth: opts.Auth, RootPassword: c.RootPassword}), "every key and value comes back from the stored snapshot")
		assert.Zero(t, env.oss.Server.PendingUploads(env.oss.Bucket))
	}

	t.Run("plain http", func(t *testing.T) { roundTrip(t, etcdtest.Options{Members: 3}, "", nil) })
	t.Run("zstd", func(t *testing.T) { roundTrip(t, etcdtest.Options{Members: 3}, "zstd", nil) })
	t.Run("tls client certificates", func(t *testing.T) {
		roundTrip(t, etcdtest.Options{Members: 3, TLS: true}, "", func(c *etcdtest.Cluster) map[string]string {
			env.secret(t, "apps", "etcd-tls", map[string][]byte{"ca.crt": c.CAPEM, "tls.crt": c.ClientCertPEM, "tls.key": c.ClientKeyPEM})
			return map[string]string{"velero-etcd.io/tls-secret": "etcd-tls"}
		}, "etcd-tls")
	})
	t.Run("etcd auth", func(t *testing.T) {
		roundTrip(t, etcdtest.Options{Members: 3, Auth: true}, "", func(c *etcdtest.Cluster) map[string]string {
			env.secret(t, "apps", "etcd-auth", map[string][]byte{"username": []byte(c.RootUser), "password": []byte(c.RootPassword)})
			return map[string]string{"velero-etcd.io/auth-secret": "etcd-auth"}
		}, "etcd-auth")
	})

	t.Run("backup delete removes the snapshot", func(t *testing.T) {
		c := etcdtest.Start(t, etcdtest.Options{Members: 1})
		c.Fill(t, 100, 10)
		_, _, _, _, err := env.action.Execute(etcdCluster("gone", c.Endpoints, nil), newBackup("b-delete", "default"))
		require.NoError(t, err)
		require.NotEmpty(t, env.keys(t, "cluster-a/backups/b-delete/"))

		// Velero's own backup store deletes the backup folder through the plugin.
		bsl := &velerov1.BackupStorageLocation{
			ObjectMeta: metav1.ObjectMeta{Namespace: "velero", Name: "default"},
			Spec: velerov1.BackupStorageLocationSpec{
				Provider: objectstore.PluginName,
				Config:   storeConfig(t, env.oss),
				StorageType: velerov1.StorageType{ObjectStorage: &velerov1.ObjectStorageLocation{
					Bucket: env.oss.Bucket, Prefix: "cluster-a"}},
			},
		}
		delete(bsl.Spec.Config, "bucket")
		log, _ := newLogger()
		bs, err := persistence.NewObjectBackupStoreGetter(nil).Get(bsl, plugintest.Manager(t, log), log)
		require.NoError(t, err)
		require.NoError(t, bs.DeleteBackup("b-delete"))
		assert.Empty(t, env.keys(t, "cluster-a/backups/b-delete/"))
	})

	t.Run("member killed mid-stream fails over", func(t *testing.T) {
		c := etcdtest.Start(t, etcdtest.Options{Members: 3})
		c.Fill(t, 60000, 1000) // ~60 MB: long enough to kill a member mid-stream
		leader, follower := leaderIndex(t, c), -1
		for i := range c.Endpoints {
			if i != leader {
				follower = i
				break
			}
		}
		want := c.Dump(t)
		// Only the leader and one follower are offered: the action prefers the
		// follower, and must fail over to the leader when the follower dies.
		eps := []string{c.Endpoints[follower], c.Endpoints[leader]}
		before := env.oss.Server.RequestCount("UploadPart")
		var once sync.Once
		stop := make(chan struct{})
		go func() {
			for {
				select {
				case <-stop:
					return
				case <-time.After(5 * time.Millisecond):
				}
				if env.oss.Server.RequestCount("UploadPart") > before {
					once.Do(func() { c.Stop(follower) })
					return
				}
			}
		}()
		out, _, _, _, err := env.action.Execute(etcdCluster("failover", eps, nil), newBackup("b-failover", "default"))
		close(stop)
		require.NoError(t, err)
		key := (&unstructured.Unstructured{Object: out.UnstructuredContent()}).GetAnnotations()[backup.AnnotationSnapshotKey]
		assert.Equal(t, want, restoreAndDump(t, env.get(t, key), etcdtest.Options{}))
		assert.Zero(t, env.oss.Server.PendingUploads(env.oss.Bucket), "the broken attempt's upload was aborted")
		assert.Contains(t, env.log.String(), c.Endpoints[leader], "the log names the member that served the snapshot")
	})

	badInput := func(t *testing.T, item *unstructured.Unstructured, bsl string, want ...string) {
		b := newBackup("b-bad-"+item.GetName(), bsl)
		_, _, _, _, err := env.action.Execute(item, b)
		require.Error(t, err)
		msg := err.Error()
		assert.Contains(t, msg, "apps/"+item.GetName(), "the error names the cluster")
		for _, w := range want {
			assert.Contains(t, msg, w)
		}
		assert.Empty(t, env.keys(t, "cluster-a/backups/"+b.Name+"/"), "nothing is left behind")
		assert.Zero(t, env.oss.Server.PendingUploads(env.oss.Bucket))
	}
	t.Run("bad input", func(t *testing.T) {
		c := etcdtest.Start(t, etcdtest.Options{Members: 1, Auth: true})
		badInput(t, etcdCluster("garbage", []string{"not a url", "ftp://x"}, nil), "default", "velero-etcd.io/endpoints")
		closed := "http://" + freeAddr(t)
		badInput(t, etcdCluster("unreachable", []string{closed}, map[string]string{"velero-etcd.io/connect-timeout": "2s"}), "default", closed)
		badInput(t, etcdCluster("nosecret", c.Endpoints, map[string]string{"velero-etcd.io/auth-secret": "missing"}), "default", "missing")
		env.secret(t, "apps", "half", map[string][]byte{"username": []byte("root")})
		badInput(t, etcdCluster("nokey", c.Endpoints, map[string]string{"velero-etcd.io/auth-secret": "half"}), "default", "password")
		env.secret(t, "apps", "wrongpw", map[string][]byte{"username": []byte("root"), "password": []byte("not-the-password-123")})
		badInput(t, etcdCluster("authfail", c.Endpoints, map[string]string{"velero-etcd.io/auth-secret": "wrongpw"}), "default", "auth")
		badInput(t, etcdCluster("nobsl", c.Endpoints, nil), "nowhere", "nowhere")
		badInput(t, etcdCluster("awsbsl", c.Endpoints, nil), "aws", "velero.io/aws", objectstore.PluginName)
		all := env.log.String()
		for _, s := range []string{"not-the-password-123", c.RootPassword, env.oss.AccessKeySecret} {
			assert.NotContains(t, all, s, "no secret material in the log")
		}
	})

	t.Run("log shows choice, progress and summary", func(t *testing.T) {
		// A slow bucket stretches the stream over seconds, so the rate-bounded
		// progress lines must appear whatever the machine's speed.
		c := etcdtest.Start(t, etcdtest.Options{Members: 3})
		c.Fill(t, 20000, 1000)
		env.oss.Server.InjectFault(osslocal.Fault{Op: "UploadPart", Latency: 1500 * time.Millisecond})
		_, _, _, _, err := env.action.Execute(etcdCluster("slow", c.Endpoints, nil), newBackup("b-slow", "default"))
		env.oss.Server.ClearFaults()
		require.NoError(t, err)
		all := env.log.String()
		for _, s := range []string{"etcd snapshot candidate: member", "(highest)", "etcd snapshot streaming:", "MB/s", "etcd snapshot stored: oss://"} {
			assert.Contains(t, all, s)
		}
	})
}

func (e *snapshotEnv) secret(t *testing.T, ns, name string, data map[string][]byte) {
	e.Secret(t, ns, name, data)
}

// leaderIndex asks every member who leads.
func leaderIndex(t *testing.T, c *etcdtest.Cluster) int {
	cli := c.Client(t)
	for i, ep := range c.Endpoints {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		st, err := cli.Status(ctx, ep)
		cancel()
		require.NoError(t, err)
		if st.Leader == st.Header.MemberId {
			return i
		}
	}
	t.Fatal("no leader")
	return -1
}
