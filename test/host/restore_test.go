package host

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	velerov1 "github.com/vmware-tanzu/velero/pkg/apis/velero/v1"
	"github.com/vmware-tanzu/velero/pkg/plugin/velero"
	clientv3 "go.etcd.io/etcd/client/v3"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/velero-etcd/velero-plugin-for-etcd/etcd/backup"
	"github.com/velero-etcd/velero-plugin-for-etcd/etcd/cluster"
	"github.com/velero-etcd/velero-plugin-for-etcd/etcd/restore"
	"github.com/velero-etcd/velero-plugin-for-etcd/internal/etcdtest"
	"github.com/velero-etcd/velero-plugin-for-etcd/internal/pluginhost"
	"github.com/velero-etcd/velero-plugin-for-etcd/internal/plugintest"
)

var etcdClusterGVR = schema.GroupVersionResource{Group: "operator.etcd.io", Version: "v1alpha1", Resource: "etcdclusters"}

// backedUp is one EtcdCluster backed up by the etcd-snapshot action.
type backedUp struct {
	item   *unstructured.Unstructured // as stored in the backup
	backup *velerov1.Backup
	want   map[string][]byte
	key    string
}

// backUp fills nothing: it snapshots c through the plugin and records the
// Backup object in the apiserver, as Velero would.
func (e *snapshotEnv) backUp(t *testing.T, c *etcdtest.Cluster, name, bname string) *backedUp {
	return e.backUpWith(t, c, name, bname, nil)
}

// backUpWith is backUp with more annotations on the EtcdCluster.
func (e *snapshotEnv) backUpWith(t *testing.T, c *etcdtest.Cluster, name, bname string, extra map[string]string) *backedUp {
	b := newBackup(bname, "default")
	u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(b)
	require.NoError(t, err)
	obj := &unstructured.Unstructured{Object: u}
	obj.SetAPIVersion("velero.io/v1")
	obj.SetKind("Backup")
	e.kube.Apply(t, obj)

	want := c.Dump(t)
	out, _, _, _, err := e.action.Execute(etcdCluster(name, c.Endpoints, extra), b)
	require.NoError(t, err)
	item := &unstructured.Unstructured{Object: out.UnstructuredContent()}
	key := item.GetAnnotations()[backup.AnnotationSnapshotKey]
	require.NotEmpty(t, key)
	return &backedUp{item: item, backup: b, want: want, key: key}
}

// restoreRun is one Velero restore of one backed-up EtcdCluster.
type restoreRun struct {
	env     *snapshotEnv
	restore *velerov1.Restore
	opID    string
	logger  *logrus.Logger
	log     *capturedLog
}

// execute runs the restore action's Execute through the plugin host and
// creates the object it returns, as Velero does; eps are the endpoints of
// the cluster the operator brings up, extra more annotations.
func (e *snapshotEnv) execute(t *testing.T, b *backedUp, restoreName string, eps []string, extra map[string]string) *restoreRun {
	return e.executeMapped(t, b, restoreName, eps, extra, nil)
}

// executeMapped is execute for a restore with namespace mappings. As Velero
// does, it hands the action the item in its backed-up namespace and moves
// the returned item into the mapped namespace afterwards.
func (e *snapshotEnv) executeMapped(t *testing.T, b *backedUp, restoreName string, eps []string, extra, mapping map[string]string) *restoreRun {
	run, created := e.executeOnly(t, b, restoreName, eps, extra, mapping)
	e.ensureNamespace(t, created.GetNamespace())
	e.kube.Apply(t, created)
	return run
}

// executeOnly runs Execute and returns the item Velero would create (in the
// mapped namespace) without creating it: Velero leaves an object that
// already exists as it is.
func (e *snapshotEnv) executeOnly(t *testing.T, b *backedUp, restoreName string, eps []string, extra, mapping map[string]string) (*restoreRun, *unstructured.Unstructured) {
	log, captured := newLogger()
	ria, err := plugintest.Manager(t, log).GetRestoreItemActionV2(restore.PluginName)
	require.NoError(t, err)
	r := &velerov1.Restore{
		ObjectMeta: metav1.ObjectMeta{Name: restoreName, Namespace: "velero"},
		Spec:       velerov1.RestoreSpec{BackupName: b.backup.Name, NamespaceMapping: mapping},
	}
	ns := b.item.GetNamespace()
	if mapped, ok := mapping[ns]; ok {
		ns = mapped
	}
	// Velero resets metadata and status before the actions see the item.
	item := b.item.DeepCopy()
	ann := item.GetAnnotations()
	ann["velero-etcd.io/endpoints"] = strings.Join(eps, ",")
	maps.Copy(ann, extra)
	item.SetAnnotations(ann)
	out, err := ria.Execute(&velero.RestoreItemActionExecuteInput{Item: item, ItemFromBackup: b.item, Restore: r})
	require.NoError(t, err)
	want := fmt.Sprintf("%s/%s/%s/%s", restoreName, ns, b.item.GetName(), b.key)
	require.Equal(t, want, out.OperationID)
	created := &unstructured.Unstructured{Object: out.UpdatedItem.UnstructuredContent()}
	created.SetNamespace(ns)
	return &restoreRun{env: e, restore: r, opID: out.OperationID, logger: log, log: captured}, created
}

func (e *snapshotEnv) ensureNamespace(t *testing.T, ns string) {
	_, err := e.kube.Client.CoreV1().Namespaces().Get(t.Context(), ns, metav1.GetOptions{})
	if err != nil {
		_, err = e.kube.Client.CoreV1().Namespaces().Create(t.Context(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
		require.NoError(t, err)
	}
}

// progress calls Progress once in a new plugin process, as Velero's restore
// operations controller does on every reconcile.
func (r *restoreRun) progress(t *testing.T) (velero.OperationProgress, error) {
	m, err := pluginhost.NewManager(plugintest.PluginDir(t), r.logger)
	require.NoError(t, err)
	defer m.CleanupClients()
	ria, err := m.GetRestoreItemActionV2(restore.PluginName)
	require.NoError(t, err)
	return ria.Progress(r.opID, r.restore)
}

// untilDone calls Progress until it reports Completed.
func (r *restoreRun) untilDone(t *testing.T, timeout time.Duration) velero.OperationProgress {
	deadline := time.Now().Add(timeout)
	for {
		p, err := r.progress(t)
		require.NoError(t, err)
		if p.Completed {
			return p
		}
		require.True(t, time.Now().Before(deadline), "not done after %s: %s", timeout, p.Description)
		time.Sleep(200 * time.Millisecond)
	}
}

func (r *restoreRun) cancel(t *testing.T) {
	m, err := pluginhost.NewManager(plugintest.PluginDir(t), r.logger)
	require.NoError(t, err)
	defer m.CleanupClients()
	ria, err := m.GetRestoreItemActionV2(restore.PluginName)
	require.NoError(t, err)
	require.NoError(t, ria.Cancel(r.opID, r.restore))
}

func (e *snapshotEnv) status(t *testing.T, name string) restore.State {
	return e.statusIn(t, "apps", name)
}

func (e *snapshotEnv) statusIn(t *testing.T, namespace, name string) restore.State {
	obj, err := e.kube.Dynamic.Resource(etcdClusterGVR).Namespace(namespace).Get(t.Context(), name, metav1.GetOptions{})
	require.NoError(t, err)
	var st restore.State
	require.NoError(t, json.Unmarshal([]byte(obj.GetAnnotations()[restore.AnnotationRestoreStatus]), &st))
	return st
}

// setPhase rewrites the phase in an EtcdCluster's restore status.
func (e *snapshotEnv) setPhase(t *testing.T, name, phase string) {
	res := e.kube.Dynamic.Resource(etcdClusterGVR).Namespace("apps")
	obj, err := res.Get(t.Context(), name, metav1.GetOptions{})
	require.NoError(t, err)
	var st map[string]any
	ann := obj.GetAnnotations()
	require.NoError(t, json.Unmarshal([]byte(ann[restore.AnnotationRestoreStatus]), &st))
	st["phase"] = phase
	data, err := json.Marshal(st)
	require.NoError(t, err)
	ann[restore.AnnotationRestoreStatus] = string(data)
	obj.SetAnnotations(ann)
	_, err = res.Update(t.Context(), obj, metav1.UpdateOptions{})
	require.NoError(t, err)
}

func assertSameData(t *testing.T, want, got map[string][]byte) {
	t.Helper()
	require.Equal(t, len(want), len(got), "key count")
	for k, v := range want {
		if !bytes.Equal(v, got[k]) {
			t.Fatalf("key %q: want %d bytes, got %d bytes (present %v)", k, len(v), len(got[k]), got[k] != nil)
		}
	}
}

func TestRestoreAction(t *testing.T) {
	env := newSnapshotEnv(t)

	t.Run("item without a snapshot passes through untouched", func(t *testing.T) {
		log, _ := newLogger()
		ria, err := plugintest.Manager(t, log).GetRestoreItemActionV2(restore.PluginName)
		require.NoError(t, err)
		item := etcdCluster("plain", []string{"http://127.0.0.1:1"}, nil)
		out, err := ria.Execute(&velero.RestoreItemActionExecuteInput{Item: item, ItemFromBackup: item.DeepCopy(),
			Restore: &velerov1.Restore{ObjectMeta: metav1.ObjectMeta{Name: "r0", Namespace: "velero"}}})
		require.NoError(t, err)
		assert.Empty(t, out.OperationID)
		assert.Equal(t, item.Object, out.UpdatedItem.UnstructuredContent())
	})

	t.Run("round trip of a three-member cluster", func(t *testing.T) {
		src := etcdtest.Start(t, etcdtest.Options{Members: 3})
		src.Fill(t, 100000, 100)
		cli := src.Client(t)
		ctx := t.Context()
		l1, err := cli.Grant(ctx, 3600)
		require.NoError(t, err)
		l2, err := cli.Grant(ctx, 600)
		require.NoError(t, err)
		for i := range 10 {
			_, err = cli.Put(ctx, fmt.Sprintf("/leased/%d", i), "v", clientv3.WithLease([]clientv3.LeaseID{l1.ID, l2.ID}[i%2]))
			require.NoError(t, err)
		}
		_, err = cli.Put(ctx, "/binary/\x00\xff", string([]byte{0, 1, 2, 0xff, 0xfe, 0}))
		require.NoError(t, err)
		_, err = cli.Put(ctx, "/deleted", "x")
		require.NoError(t, err)
		_, err = cli.Delete(ctx, "/deleted")
		require.NoError(t, err)
		b := env.backUp(t, src, "roundtrip", "b-roundtrip")

		// The cluster is lost; the operator brings an empty one up at the
		// same endpoints.
		src.StopAll()
		dst := etcdtest.StartAt(t, etcdtest.Options{}, src.Endpoints)

		run := env.execute(t, b, "r-roundtrip", dst.Endpoints, nil)
		st := env.status(t, "roundtrip")
		assert.Equal(t, restore.PhasePending, st.Phase)
		assert.Equal(t, b.key, st.SnapshotKey)

		start := time.Now()
		p := run.untilDone(t, 3*time.Minute)
		t.Logf("restore of %d keys: %s", len(b.want), time.Since(start).Round(time.Millisecond))
		require.Empty(t, p.Err)
		assert.Equal(t, p.NTotal, p.NCompleted)
		assertSameData(t, b.want, dst.Dump(t))

		st = env.status(t, "roundtrip")
		assert.Equal(t, restore.PhaseCompleted, st.Phase)
		assert.EqualValues(t, len(b.want), st.Keys)
		assert.Equal(t, 2, st.Leases)
		assert.Empty(t, st.Owner)
		assert.Contains(t, st.Message, "verified")

		resp, err := dst.Client(t).Get(ctx, "/leased/", clientv3.WithPrefix())
		require.NoError(t, err)
		require.Len(t, resp.Kvs, 10)
		ttls := map[int64]bool{}
		for _, kv := range resp.Kvs {
			require.NotZero(t, kv.Lease, "key %s has a lease again", kv.Key)
			ttl, err := dst.Client(t).TimeToLive(ctx, clientv3.LeaseID(kv.Lease))
			require.NoError(t, err)
			ttls[ttl.GrantedTTL] = true
		}
		assert.Equal(t, map[int64]bool{3600: true, 600: true}, ttls)

		// Progress after completion stays completed.
		p, err = run.progress(t)
		require.NoError(t, err)
		assert.True(t, p.Completed)
		assert.Empty(t, p.Err)
	})

	t.Run("lease ran out while no process was verifying", func(t *testing.T) {
		src := etcdtest.Start(t, etcdtest.Options{Members: 1})
		src.Fill(t, 2000, 100)
		cli := src.Client(t)
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		short, err := cli.Grant(ctx, 2)
		require.NoError(t, err)
		_, err = cli.KeepAlive(ctx, short.ID) // until the backup is taken
		require.NoError(t, err)
		_, err = cli.Put(ctx, "/short", "v", clientv3.WithLease(short.ID))
		require.NoError(t, err)
		b := env.backUp(t, src, "shortlease", "b-shortlease")
		require.Contains(t, b.want, "/short")
		cancel()
		src.StopAll()

		dst := etcdtest.Start(t, etcdtest.Options{Members: 1})
		run := env.execute(t, b, "r-shortlease", dst.Endpoints, nil)
		require.Empty(t, run.untilDone(t, time.Minute).Err)

		// A process died while verifying (its status says so; the timing of a
		// real kill cannot be aimed at the verification), and the 2 s lease
		// ran out before the next call: the key is gone.
		env.setPhase(t, "shortlease", restore.PhaseVerifying)
		require.Eventually(t, func() bool {
			resp, err := dst.Client(t).Get(t.Context(), "/short")
			return err == nil && resp.Count == 0
		}, 15*time.Second, 100*time.Millisecond)

		// The next call finds the lease gone, loads again and verifies.
		p := run.untilDone(t, time.Minute)
		require.Empty(t, p.Err)
		assert.Equal(t, restore.PhaseCompleted, env.status(t, "shortlease").Phase)
		assert.Contains(t, run.log.String(), "leases from an earlier call had expired")
	})

	// One backup serves the remaining cases.
	src := etcdtest.Start(t, etcdtest.Options{Members: 3})
	src.Fill(t, 40000, 1000) // ~40 MB: long enough to kill the plugin mid-load
	ccli := src.Client(t)
	lease, err := ccli.Grant(t.Context(), 3600)
	require.NoError(t, err)
	_, err = ccli.Put(t.Context(), "/leased", "v", clientv3.WithLease(lease.ID))
	require.NoError(t, err)
	b := env.backUp(t, src, "shared", "b-shared")
	src.StopAll()

	t.Run("plugin killed mid-load", func(t *testing.T) {
		dst := etcdtest.Start(t, etcdtest.Options{Members: 3})
		run := env.execute(t, b, "r-kill", dst.Endpoints, nil)
		before := map[int]bool{}
		for _, pid := range pluginhost.PluginPIDs() {
			before[pid] = true
		}
		done := make(chan error, 1)
		go func() { _, err := run.progress(t); done <- err }()
		// Kill the process once part of the keys are in the target.
		deadline := time.Now().Add(2 * time.Minute)
		dcli := dst.Client(t)
		for {
			resp, err := dcli.Get(t.Context(), "\x00", clientv3.WithFromKey(), clientv3.WithCountOnly())
			require.NoError(t, err)
			if resp.Count >= int64(len(b.want))/10 {
				break
			}
			require.True(t, time.Now().Before(deadline), "load did not start")
			time.Sleep(20 * time.Millisecond)
		}
		var killed []int
		for _, pid := range pluginhost.PluginPIDs() {
			if !before[pid] {
				require.NoError(t, syscall.Kill(pid, syscall.SIGKILL))
				killed = append(killed, pid)
			}
		}
		require.NotEmpty(t, killed)
		assert.Error(t, <-done, "Velero sees the call fail")
		st := env.status(t, "shared")
		assert.Equal(t, restore.PhaseLoading, st.Phase, "killed before the end")
		assert.Less(t, st.Keys, st.TotalKeys, "killed before the end")

		p := run.untilDone(t, 3*time.Minute)
		require.Empty(t, p.Err)
		assertSameData(t, b.want, dst.Dump(t))
		st = env.status(t, "shared")
		assert.Equal(t, restore.PhaseCompleted, st.Phase)
		assert.GreaterOrEqual(t, st.Attempt, 2)
	})

	t.Run("load spread over several calls", func(t *testing.T) {
		// Each Progress call may load for 1 s only; the load goes on from
		// its checkpoint in the next call.
		t.Setenv(restore.EnvCallBudget, "1s")
		dst := etcdtest.Start(t, etcdtest.Options{Members: 3})
		run := env.execute(t, b, "r-budget", dst.Endpoints, nil)
		var calls int
		var partial bool
		deadline := time.Now().Add(3 * time.Minute)
		for {
			p, err := run.progress(t)
			require.NoError(t, err)
			calls++
			if p.Completed {
				require.Empty(t, p.Err)
				break
			}
			if st := env.status(t, "shared"); st.Keys > 0 && st.Keys < st.TotalKeys {
				partial = true
			}
			require.True(t, time.Now().Before(deadline), p.Description)
		}
		assert.True(t, partial, "a call ended part way through the load")
		assert.Greater(t, calls, 1)
		assertSameData(t, b.want, dst.Dump(t))
	})

	nonEmpty := func(t *testing.T) *etcdtest.Cluster {
		dst := etcdtest.Start(t, etcdtest.Options{Members: 1})
		_, err := dst.Client(t).Put(t.Context(), "/already/here", "x")
		require.NoError(t, err)
		_, err = dst.Client(t).Put(t.Context(), "fill/0000000001", "old value")
		require.NoError(t, err)
		return dst
	}
	t.Run("non-empty target, empty-only", func(t *testing.T) {
		dst := nonEmpty(t)
		before := dst.Dump(t)
		p := env.execute(t, b, "r-emptyonly", dst.Endpoints, nil).untilDone(t, time.Minute)
		assert.Contains(t, p.Err, "already holds 2 keys")
		assert.Contains(t, p.Err, "restore-policy")
		assert.Equal(t, before, dst.Dump(t), "target untouched")
		assert.Equal(t, restore.PhaseFailed, env.status(t, "shared").Phase)
	})
	t.Run("non-empty target, overwrite", func(t *testing.T) {
		dst := nonEmpty(t)
		dcli := dst.Client(t)
		old, err := dcli.Grant(t.Context(), 3600)
		require.NoError(t, err)
		_, err = dcli.Put(t.Context(), "/old/leased", "x", clientv3.WithLease(old.ID))
		require.NoError(t, err)
		p := env.execute(t, b, "r-overwrite", dst.Endpoints, map[string]string{restore.AnnotationRestorePolicy: "overwrite"}).untilDone(t, 2*time.Minute)
		require.Empty(t, p.Err)
		assertSameData(t, b.want, dst.Dump(t))
		ttl, err := dcli.TimeToLive(t.Context(), old.ID)
		require.NoError(t, err)
		assert.EqualValues(t, -1, ttl.TTL, "the target's old lease is revoked")
		leases, err := dcli.Leases(t.Context())
		require.NoError(t, err)
		assert.Len(t, leases.Leases, 1, "only the snapshot's lease is left")
	})
	t.Run("non-empty target, merge", func(t *testing.T) {
		dst := nonEmpty(t)
		p := env.execute(t, b, "r-merge", dst.Endpoints, map[string]string{restore.AnnotationRestorePolicy: "merge"}).untilDone(t, 2*time.Minute)
		require.Empty(t, p.Err)
		want := maps.Clone(b.want)
		want["/already/here"] = []byte("x")
		assertSameData(t, want, dst.Dump(t))
		assert.Contains(t, env.status(t, "shared").Message, "1 keys not in the snapshot")
	})

	t.Run("cluster never healthy, then cancel", func(t *testing.T) {
		closed := "http://" + freeAddr(t)
		run := env.execute(t, b, "r-unhealthy", []string{closed}, map[string]string{"velero-etcd.io/connect-timeout": "1s"})
		p, err := run.progress(t)
		require.NoError(t, err)
		assert.False(t, p.Completed)
		assert.Contains(t, p.Description, "waiting for cluster")
		assert.Contains(t, p.Description, closed)
		assert.Equal(t, restore.PhaseWaitingForCluster, env.status(t, "shared").Phase)
		run.cancel(t)
		p, err = run.progress(t)
		require.NoError(t, err)
		assert.True(t, p.Completed)
		assert.Contains(t, p.Err, "canceled")
		assert.Equal(t, restore.PhaseCanceled, env.status(t, "shared").Phase)
	})

	// velero restore create --namespace-mappings apps:apps-clone while the
	// original cluster still runs in apps, its EtcdCluster object in place.
	t.Run("namespace mapping: the mapped namespace's cluster, not the original", func(t *testing.T) {
		src := etcdtest.Start(t, etcdtest.Options{Members: 1})
		src.Fill(t, 3000, 100)
		b := env.backUp(t, src, "mapped", "b-mapped")
		env.ensureNamespace(t, "apps")
		env.kube.Apply(t, b.item.DeepCopy())

		dst := etcdtest.Start(t, etcdtest.Options{Members: 1})
		p := env.executeMapped(t, b, "r-mapped", dst.Endpoints, nil, map[string]string{"apps": "apps-clone"}).untilDone(t, time.Minute)
		require.Empty(t, p.Err)
		assertSameData(t, b.want, dst.Dump(t))
		assert.Equal(t, restore.PhaseCompleted, env.statusIn(t, "apps-clone", "mapped").Phase)

		assertSameData(t, b.want, src.Dump(t))
		orig, err := env.kube.Dynamic.Resource(etcdClusterGVR).Namespace("apps").Get(t.Context(), "mapped", metav1.GetOptions{})
		require.NoError(t, err)
		assert.NotContains(t, orig.GetAnnotations(), restore.AnnotationRestoreStatus, "the original object is left alone")
	})

	// The EtcdCluster still exists: Velero registers the operation but does
	// not create the item, so Progress finds the existing object, with no
	// restore status and its own policy.
	t.Run("existing EtcdCluster, its own policy", func(t *testing.T) {
		src := etcdtest.Start(t, etcdtest.Options{Members: 1})
		src.Fill(t, 2000, 100)
		b := env.backUp(t, src, "existing", "b-existing")
		_, err := src.Client(t).Put(t.Context(), "/written/after/the/backup", "x")
		require.NoError(t, err)
		existing := b.item.DeepCopy()
		env.ensureNamespace(t, "apps")
		env.kube.Apply(t, existing)

		run, _ := env.executeOnly(t, b, "r-existing", src.Endpoints, nil, nil)
		p := run.untilDone(t, time.Minute)
		assert.Contains(t, p.Err, "empty-only")
		assert.Contains(t, src.Dump(t), "/written/after/the/backup", "empty-only writes nothing")

		res := env.kube.Dynamic.Resource(etcdClusterGVR).Namespace("apps")
		cur, err := res.Get(t.Context(), "existing", metav1.GetOptions{})
		require.NoError(t, err)
		ann := cur.GetAnnotations()
		ann[restore.AnnotationRestorePolicy] = restore.PolicyOverwrite
		cur.SetAnnotations(ann)
		_, err = res.Update(t.Context(), cur, metav1.UpdateOptions{})
		require.NoError(t, err)
		run, _ = env.executeOnly(t, b, "r-existing-2", src.Endpoints, nil, nil)
		p = run.untilDone(t, time.Minute)
		require.Empty(t, p.Err)
		assertSameData(t, b.want, src.Dump(t))
		assert.Equal(t, restore.PhaseCompleted, env.status(t, "existing").Phase)
	})

	t.Run("zstd snapshot round trip", func(t *testing.T) {
		src := etcdtest.Start(t, etcdtest.Options{Members: 1})
		src.Fill(t, 20000, 200)
		b := env.backUpWith(t, src, "zstd", "b-zstd", map[string]string{cluster.AnnotationCompression: cluster.CompressionZstd})
		require.True(t, strings.HasSuffix(b.key, ".db.zst"), b.key)
		dst := etcdtest.Start(t, etcdtest.Options{Members: 1})
		p := env.execute(t, b, "r-zstd", dst.Endpoints, nil).untilDone(t, 2*time.Minute)
		require.Empty(t, p.Err)
		assertSameData(t, b.want, dst.Dump(t))
	})

	// The object's bytes are checked against the manifest's digest of the
	// stored object, compressed or not, even when the etcd data inside is
	// intact: the manifest and the backed-up item say one thing, the bucket
	// holds another.
	t.Run("object that does not match its manifest", func(t *testing.T) {
		src := etcdtest.Start(t, etcdtest.Options{Members: 1})
		src.Fill(t, 2000, 100)
		cases := []struct{ compression, manifestDigest string }{
			{cluster.CompressionNone, "wrong"}, {cluster.CompressionZstd, "wrong"},
			{cluster.CompressionNone, "absent"}, // then the backed-up item's digest counts
		}
		for _, c := range cases {
			compression := c.compression
			t.Run(compression+"/manifest digest "+c.manifestDigest, func(t *testing.T) {
				name := "digest-" + compression + "-" + c.manifestDigest
				b := env.backUpWith(t, src, name, "b-"+name, map[string]string{cluster.AnnotationCompression: compression})
				wrong := strings.Repeat("0", 64)
				manifestKey := strings.TrimSuffix(strings.TrimSuffix(b.key, ".zst"), ".db") + ".json"
				var m map[string]any
				require.NoError(t, json.Unmarshal(env.get(t, manifestKey), &m))
				m["storedSHA256"] = wrong
				if c.manifestDigest == "absent" {
					delete(m, "storedSHA256")
				}
				data, err := json.Marshal(m)
				require.NoError(t, err)
				require.NoError(t, env.store.PutObject(env.oss.Bucket, manifestKey, bytes.NewReader(data)))
				ann := b.item.GetAnnotations()
				ann[backup.AnnotationSnapshotSHA256] = wrong
				b.item.SetAnnotations(ann)

				dst := etcdtest.Start(t, etcdtest.Options{Members: 1})
				p := env.execute(t, b, "r-"+name, dst.Endpoints, nil).untilDone(t, time.Minute)
				assert.Contains(t, p.Err, "stored object sha256")
				assert.Contains(t, p.Err, b.key)
				assert.Empty(t, dst.Dump(t))
			})
		}
	})

	t.Run("corrupt snapshot leaves the target untouched", func(t *testing.T) {
		data := env.get(t, b.key)
		data[len(data)/2] ^= 0x01
		require.NoError(t, env.store.PutObject(env.oss.Bucket, b.key, bytes.NewReader(data)))
		dst := etcdtest.Start(t, etcdtest.Options{Members: 1})
		p := env.execute(t, b, "r-corrupt", dst.Endpoints, nil).untilDone(t, time.Minute)
		assert.Contains(t, p.Err, "corrupt")
		assert.Contains(t, p.Err, b.key)
		assert.Empty(t, dst.Dump(t))
	})

	t.Run("snapshot missing", func(t *testing.T) {
		require.NoError(t, env.store.DeleteObject(env.oss.Bucket, b.key))
		dst := etcdtest.Start(t, etcdtest.Options{Members: 1})
		p := env.execute(t, b, "r-missing", dst.Endpoints, nil).untilDone(t, time.Minute)
		assert.Contains(t, p.Err, "not found")
		assert.Empty(t, dst.Dump(t))
	})

	t.Run("log", func(t *testing.T) {
		assert.NotContains(t, env.log.String(), env.oss.AccessKeySecret)
	})
}
