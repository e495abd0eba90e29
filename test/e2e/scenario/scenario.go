// Package scenario is the end-to-end run of issue 5, shared by the e2e test
// (test/e2e, go test -tags e2e) and `make demo` (test/e2e/cmd/demo): a real
// kube-apiserver and velero server, the plugin binary, a local OSS server and
// real etcd clusters, driven step by step with the velero CLI as a user
// would.
package scenario

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	velerov1 "github.com/vmware-tanzu/velero/pkg/apis/velero/v1"
	clientv3 "go.etcd.io/etcd/client/v3"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	ctrlclient "sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/velero-etcd/velero-plugin-for-etcd/etcd/backup"
	"github.com/velero-etcd/velero-plugin-for-etcd/etcd/cluster"
	"github.com/velero-etcd/velero-plugin-for-etcd/etcd/restore"
	"github.com/velero-etcd/velero-plugin-for-etcd/etcd/snapshot"
	"github.com/velero-etcd/velero-plugin-for-etcd/internal/etcdtest"
	"github.com/velero-etcd/velero-plugin-for-etcd/objectstore"
)

// What the application holds and how it is named.
const (
	AppNamespace  = "apps"
	AppCluster    = "app"    // annotated: snapshotted
	PlainCluster  = "plain"  // labelled app=etcd but not annotated: backed up as an object only
	BrokenCluster = "broken" // annotated, endpoints nobody listens on
	Unrelated     = "unrelated"
	// AppSecret holds the application etcd's root credentials. It has no
	// app=etcd label: it reaches the backup as the EtcdCluster's additional item.
	AppSecret = "app-etcd-auth"

	fillKeys      = 10_000
	fillValueSize = 256
	leasedKeys    = 100
	leaseTTL      = 3600 // seconds: the leases outlive the run

	scheduleName = "nightly"
	// Velero runs a schedule at the first reconcile after creation+interval;
	// its schedule controller reconciles every minute.
	scheduleSpec = "@every 30s"
)

var (
	operatorEtcdClusters = schema.GroupVersionResource{Group: cluster.GroupV1alpha1, Version: "v1alpha1", Resource: "etcdclusters"}
	coreosEtcdClusters   = schema.GroupVersionResource{Group: cluster.GroupV1beta2, Version: "v1beta2", Resource: "etcdclusters"}
)

// Scenario holds what the steps share.
type Scenario struct {
	*Stack
	app      *etcdtest.Cluster
	want     map[string][]byte // the application's keys at backup time
	leased   []string
	restored *etcdtest.Cluster
	// scheduleCreated is when `velero schedule create` ran.
	scheduleCreated time.Time
}

// Run is the whole scenario. t is the run's TB (everything long-lived hangs
// on it); sub runs the parts so that one failing part does not hide the
// others' results.
func Run(t testing.TB, sub Subtests, r *Reporter) {
	t.Helper()
	begin := time.Now()
	s := &Scenario{Stack: StartStack(t, r)}
	s.application(t)

	sub.Run("backup", s.backupB1)
	sub.Run("restore", s.restoreR1)
	sub.Run("clone", s.cloneR2)
	sub.Run("delete-backup", s.deleteB1)
	sub.Run("schedule", s.createSchedule)
	sub.Run("wrong-secret", s.wrongSecret)
	sub.Run("unreachable-endpoints", s.unreachable)
	sub.Run("scheduled-backup", s.scheduledBackup)
	sub.Run("no-secret-in-logs", s.noSecretInLogs)

	r.Step("Done in %s", time.Since(begin).Round(time.Second))
}

// application starts the application etcd and the Kubernetes objects that
// describe it.
func (s *Scenario) application(t testing.TB) {
	t.Helper()
	r := s.R
	r.Step("Application etcd: three members on 127.0.0.1 with etcd auth, %d keys plus %d keys on a lease", fillKeys, leasedKeys)
	s.app = etcdtest.Start(t, etcdtest.Options{Members: 3, Auth: true})
	s.CLI.Secrets = append(s.CLI.Secrets, s.app.RootPassword)
	s.app.Fill(t, fillKeys, fillValueSize)
	cli := s.app.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	lease, err := cli.Grant(ctx, leaseTTL)
	if err != nil {
		t.Fatalf("grant lease: %v", err)
	}
	for i := range leasedKeys {
		k := fmt.Sprintf("leased/%03d", i)
		if _, err := cli.Put(ctx, k, fmt.Sprintf("session %d", i), clientv3.WithLease(lease.ID)); err != nil {
			t.Fatalf("put %s: %v", k, err)
		}
		s.leased = append(s.leased, k)
	}
	s.want = s.app.Dump(t)
	r.Show("endpoints %s", strings.Join(s.app.Endpoints, ","))
	r.Show("%d keys, %d of them attached to lease %x (TTL %ds)", len(s.want), leasedKeys, lease.ID, leaseTTL)

	r.Step("Kubernetes objects in namespace %s: an annotated EtcdCluster, an unannotated one, an unrelated ConfigMap", AppNamespace)
	kctx, kcancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer kcancel()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: AppNamespace}}
	if err := s.Client.Create(kctx, ns); err != nil {
		t.Fatalf("create namespace: %v", err)
	}
	authSecret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: AppSecret, Namespace: AppNamespace},
		Data: map[string][]byte{"username": []byte(s.app.RootUser), "password": []byte(s.app.RootPassword)}}
	if err := s.Client.Create(kctx, authSecret); err != nil {
		t.Fatalf("create Secret %s/%s: %v", AppNamespace, AppSecret, err)
	}
	s.Kube.Apply(t, appCluster(s.app.Endpoints), plainCluster(), unrelatedConfigMap())
	r.Show("operator.etcd.io/v1alpha1 EtcdCluster %s/%s  labels app=etcd  annotations %s=true, %s=<the three members>, %s=%s", AppNamespace, AppCluster, cluster.AnnotationSnapshot, cluster.AnnotationEndpoints, cluster.AnnotationAuthSecret, AppSecret)
	r.Show("Secret %s/%s  (username, password of etcd's root user; no label)", AppNamespace, AppSecret)
	r.Show("etcd.database.coreos.com/v1beta2 EtcdCluster %s/%s  labels app=etcd  (no snapshot annotation)", AppNamespace, PlainCluster)
	r.Show("ConfigMap %s/%s  (no label)", AppNamespace, Unrelated)
}

func appCluster(endpoints []string) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "operator.etcd.io/v1alpha1",
		"kind":       "EtcdCluster",
		"metadata": map[string]any{
			"name": AppCluster, "namespace": AppNamespace,
			"labels": map[string]any{"app": "etcd"},
			"annotations": map[string]any{
				cluster.AnnotationSnapshot:   "true",
				cluster.AnnotationEndpoints:  strings.Join(endpoints, ","),
				cluster.AnnotationAuthSecret: AppSecret,
			},
		},
		"spec": map[string]any{"size": int64(len(endpoints)), "version": "v3.6.16"},
	}}
}

func plainCluster() *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "etcd.database.coreos.com/v1beta2",
		"kind":       "EtcdCluster",
		"metadata": map[string]any{
			"name": PlainCluster, "namespace": AppNamespace,
			"labels": map[string]any{"app": "etcd"},
		},
		"spec": map[string]any{"size": int64(3), "version": "3.5.17"},
	}}
}

func unrelatedConfigMap() *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "v1",
		"kind":       "ConfigMap",
		"metadata":   map[string]any{"name": Unrelated, "namespace": AppNamespace},
		"data":       map[string]any{"note": "not labelled app=etcd: not in the backup"},
	}}
}

func snapshotFolder(backupName string) string {
	return "backups/" + backupName + "/etcd-snapshots/" + AppNamespace + "/"
}

// backupB1: `velero backup create b1 --selector app=etcd --wait`, then what
// the bucket, describe and logs show.
func (s *Scenario) backupB1(t testing.TB) {
	r := s.R
	r.Step("velero backup create b1: the plugin streams a snapshot of %s/%s into the backup's folder", AppNamespace, AppCluster)
	out := s.CLI.Run(t, 0, "backup", "create", "b1", "--selector", "app=etcd", "--wait")
	if !strings.Contains(out, "Backup completed with status: Completed") {
		t.Fatalf("backup b1 did not complete:\n%s", out)
	}
	b := s.getBackup(t, "b1")
	if b.Status.Phase != velerov1.BackupPhaseCompleted || b.Status.Errors != 0 {
		t.Fatalf("backup b1: phase %s, %d errors", b.Status.Phase, b.Status.Errors)
	}

	r.Step("The snapshot and its manifest sit under %s in the bucket", snapshotFolder("b1"))
	keys := s.Bucket.Keys(t, "backups/b1/")
	for _, k := range keys {
		r.Show("oss://%s/%s", s.Bucket.Name, k)
	}
	dbKey, manifestKey := snapshotFolder("b1")+AppCluster+".db", snapshotFolder("b1")+AppCluster+".json"
	snaps := s.Bucket.Keys(t, "backups/b1/etcd-snapshots/")
	if want := []string{dbKey, manifestKey}; !equalStrings(snaps, want) {
		t.Fatalf("objects under backups/b1/etcd-snapshots/: got %v, want %v (the unannotated %s has no snapshot)", snaps, want, PlainCluster)
	}
	m := s.manifest(t, manifestKey)
	db := s.Bucket.Get(t, dbKey)
	if int64(len(db)) != m.StoredSize || m.SnapshotKey != dbKey || m.BackupName != "b1" || m.BackupUID != string(b.UID) || m.Revision <= 0 {
		t.Fatalf("manifest %s does not describe %s (%d bytes, backup uid %s): %+v", manifestKey, dbKey, len(db), b.UID, m)
	}
	r.Show("manifest: etcd %s, revision %d, member %s, %d bytes, sha256 %s…", m.EtcdVersion, m.Revision, m.Member.Name, m.StoredSize, m.StoredSHA256[:16])

	r.Step("velero backup describe b1 --details")
	out = s.CLI.Run(t, -1, "backup", "describe", "b1", "--details")
	s.R.Output(excerpt(out, []string{"Phase:"})+section(out, "Resource List:"), 0)
	if describeField(out, "Phase") != "Completed" {
		t.Errorf("describe b1: Phase is %q, want Completed", describeField(out, "Phase"))
	}
	for _, want := range []string{
		"operator.etcd.io/v1alpha1/EtcdCluster:",
		"- " + AppNamespace + "/" + AppCluster,
		"etcd.database.coreos.com/v1beta2/EtcdCluster:",
		"- " + AppNamespace + "/" + PlainCluster,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("describe b1 --details lacks %q", want)
		}
	}
	if strings.Contains(out, AppNamespace+"/"+Unrelated) {
		t.Errorf("the unlabelled ConfigMap %s/%s is in backup b1", AppNamespace, Unrelated)
	}

	r.Step("velero backup logs b1: the plugin's lines")
	logs := s.CLI.Run(t, -1, "backup", "logs", "b1")
	stored := linesWith(logs, "etcd snapshot stored")
	for _, l := range stored {
		r.Show("%s", trimLogLine(l))
	}
	if len(stored) != 1 || !strings.Contains(stored[0], "oss://"+s.Bucket.Name+"/"+dbKey) || !strings.Contains(stored[0], "etcdcluster="+AppNamespace+"/"+AppCluster) {
		t.Errorf("backup logs: want one 'etcd snapshot stored' line for %s, got %q", dbKey, stored)
	}
	if !strings.Contains(logs, backup.PluginName) && !strings.Contains(logs, "velero-plugin-for-etcd") {
		t.Errorf("backup logs do not name the plugin")
	}
}

// restoreR1: the application is lost; `velero restore create r1` brings the
// EtcdClusters back, the harness plays the operator, and the restore action
// loads the snapshot into the new, empty cluster.
func (s *Scenario) restoreR1(t testing.TB) {
	r := s.R
	r.Step("Disaster: the application etcd is destroyed and both EtcdClusters are deleted")
	s.app.StopAll()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, c := range []struct {
		gvr  schema.GroupVersionResource
		name string
	}{{operatorEtcdClusters, AppCluster}, {coreosEtcdClusters, PlainCluster}} {
		if err := s.Kube.Dynamic.Resource(c.gvr).Namespace(AppNamespace).Delete(ctx, c.name, metav1.DeleteOptions{}); err != nil {
			t.Fatalf("delete EtcdCluster %s/%s: %v", AppNamespace, c.name, err)
		}
	}
	if err := s.Kube.Client.CoreV1().Secrets(AppNamespace).Delete(ctx, AppSecret, metav1.DeleteOptions{}); err != nil {
		t.Fatalf("delete Secret %s/%s: %v", AppNamespace, AppSecret, err)
	}
	r.Show("members stopped; EtcdClusters %s/%s and %s/%s and Secret %s/%s deleted", AppNamespace, AppCluster, AppNamespace, PlainCluster, AppNamespace, AppSecret)

	r.Step("velero restore create r1 --from-backup b1 --wait, while the harness plays the operator")
	bg := s.CLI.Background(t, 0, "restore", "create", "r1", "--from-backup", "b1", "--wait")
	endpoints := s.waitForEtcdCluster(t, bg.Done())
	r.Show("operator: EtcdCluster %s/%s is back; starting an empty three-member etcd at %s", AppNamespace, AppCluster, strings.Join(endpoints, ","))
	// On the run's TB: the schedule's backup later snapshots this cluster.
	s.restored = etcdtest.StartAt(s.T, s.appAuth(), endpoints)
	res := bg.Wait()
	if res.Err != nil || !strings.Contains(res.Output, "Restore completed with status: Completed") {
		t.Fatalf("restore r1 did not complete (%v):\n%s", res.Err, res.Output)
	}

	r.Step("velero restore describe r1 --details: the item operation is Completed")
	out := s.CLI.Run(t, -1, "restore", "describe", "r1", "--details")
	r.Output(excerpt(out, []string{"Phase:"})+section(out, "Warnings:")+section(out, "Restore Item Operations:"), 0)
	opRE := regexp.MustCompile(`(?s)Operation for etcdclusters\.operator\.etcd\.io ` + AppNamespace + `/` + AppCluster + `:.*?Phase:\s+(\S+)`)
	m := opRE.FindStringSubmatch(out)
	if m == nil || m[1] != "Completed" {
		t.Errorf("restore describe: no Completed item operation for %s/%s (match %q)", AppNamespace, AppCluster, m)
	}
	rs := &velerov1.Restore{}
	if err := s.Client.Get(ctx, ctrlclient.ObjectKey{Namespace: Namespace, Name: "r1"}, rs); err != nil {
		t.Fatalf("get restore r1: %v", err)
	}
	if rs.Status.Phase != velerov1.RestorePhaseCompleted || rs.Status.RestoreItemOperationsAttempted != 1 ||
		rs.Status.RestoreItemOperationsCompleted != 1 || rs.Status.RestoreItemOperationsFailed != 0 {
		t.Errorf("restore r1: phase %s, item operations attempted %d, completed %d, failed %d",
			rs.Status.Phase, rs.Status.RestoreItemOperationsAttempted, rs.Status.RestoreItemOperationsCompleted, rs.Status.RestoreItemOperationsFailed)
	}
	ec, err := s.Kube.Dynamic.Resource(operatorEtcdClusters).Namespace(AppNamespace).Get(ctx, AppCluster, metav1.GetOptions{})
	if err == nil {
		r.Show("%s on the restored EtcdCluster: %s", restore.AnnotationRestoreStatus, ec.GetAnnotations()[restore.AnnotationRestoreStatus])
	}
	if _, err := s.Kube.Client.CoreV1().Secrets(AppNamespace).Get(ctx, AppSecret, metav1.GetOptions{}); err != nil {
		t.Errorf("Secret %s/%s was not restored: %v", AppNamespace, AppSecret, err)
	} else {
		r.Show("Secret %s/%s is back: b1 holds it as the EtcdCluster's additional item, though it has no app=etcd label", AppNamespace, AppSecret)
	}

	r.Step("Every key and value is back")
	got := s.restored.Dump(t)
	if d := diffKeys(s.want, got); d != "" {
		t.Fatalf("restored keyspace: %s", d)
	}
	r.Show("%d of %d keys identical, nothing missing, nothing extra", len(got), len(s.want))
	cli := s.restored.Client(t)
	noLease := 0
	for _, k := range s.leased {
		resp, err := cli.Get(ctx, k)
		if err != nil {
			t.Fatalf("get %s: %v", k, err)
		}
		if len(resp.Kvs) != 1 || resp.Kvs[0].Lease == 0 {
			noLease++
			continue
		}
		ttl, err := cli.TimeToLive(ctx, clientv3.LeaseID(resp.Kvs[0].Lease))
		if err != nil || ttl.TTL <= 0 {
			noLease++
		}
	}
	if noLease > 0 {
		t.Errorf("%d of %d leased keys came back without a live lease", noLease, len(s.leased))
	} else {
		r.Show("all %d leased keys are attached to a live lease again", len(s.leased))
	}
}

// waitForEtcdCluster is the operator's watch: it returns the endpoints of
// the annotated EtcdCluster as soon as Velero has created it again.
func (s *Scenario) waitForEtcdCluster(t testing.TB, cliDone <-chan struct{}) []string {
	t.Helper()
	eps := s.waitForEtcdClusterIn(t, AppNamespace, cliDone)
	if len(eps) != 3 {
		t.Fatalf("restored EtcdCluster %s/%s: endpoints annotation %q", AppNamespace, AppCluster, strings.Join(eps, ","))
	}
	return eps
}

// waitForEtcdClusterIn waits for EtcdCluster AppCluster in namespace ns and
// returns the endpoints in its annotation.
func (s *Scenario) waitForEtcdClusterIn(t testing.TB, ns string, cliDone <-chan struct{}) []string {
	t.Helper()
	deadline := time.After(5 * time.Minute)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		ec, err := s.Kube.Dynamic.Resource(operatorEtcdClusters).Namespace(ns).Get(ctx, AppCluster, metav1.GetOptions{})
		cancel()
		if err == nil {
			return strings.Split(ec.GetAnnotations()[cluster.AnnotationEndpoints], ",")
		}
		if !apierrors.IsNotFound(err) {
			t.Logf("get EtcdCluster: %v", err)
		}
		select {
		case <-cliDone:
			t.Fatalf("the restore finished without creating EtcdCluster %s/%s", ns, AppCluster)
		case <-deadline:
			t.Fatalf("EtcdCluster %s/%s was not restored within 5m", ns, AppCluster)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// cloneR2: `velero restore create r2 --namespace-mappings apps:apps-clone`
// restores the backup a second time, beside the cluster r1 brought back,
// into a new namespace and a new, empty etcd. Velero runs restore actions
// before it moves an item into its mapped namespace, and the backed-up
// endpoints annotation still names r1's cluster: a resource modifier points
// the clone at its own etcd, and the plugin must load that one and leave r1's
// alone.
func (s *Scenario) cloneR2(t testing.TB) {
	r := s.R
	const cloneNS, modifier = AppNamespace + "-clone", "etcd-clone-endpoints"
	cloneURL := "http://" + freeLoopbackAddr(t)
	rules := fmt.Sprintf(`version: v1
resourceModifierRules:
- conditions:
    groupResource: etcdclusters.%s
    namespaces: [%s]
    resourceNameRegex: "^%s$"
  mergePatches:
  - patchData: '{"metadata":{"annotations":{"%s":"%s"}}}'
`, cluster.GroupV1alpha1, AppNamespace, AppCluster, cluster.AnnotationEndpoints, cloneURL)
	r.Step("Clone: a resource modifier points the restored EtcdCluster at a new etcd (%s)", cloneURL)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: modifier, Namespace: Namespace}, Data: map[string]string{"rules.yaml": rules}}
	if _, err := s.Kube.Client.CoreV1().ConfigMaps(Namespace).Create(ctx, cm, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create resource modifier ConfigMap: %v", err)
	}
	r.Output(rules, 0)

	r.Step("velero restore create r2 --from-backup b1 --namespace-mappings %s:%s --resource-modifier-configmap %s", AppNamespace, cloneNS, modifier)
	bg := s.CLI.Background(t, 0, "restore", "create", "r2", "--from-backup", "b1",
		"--namespace-mappings", AppNamespace+":"+cloneNS, "--resource-modifier-configmap", modifier, "--wait")
	eps := s.waitForEtcdClusterIn(t, cloneNS, bg.Done())
	if strings.Join(eps, ",") != cloneURL {
		t.Fatalf("EtcdCluster %s/%s has endpoints %q, want the modifier's %s", cloneNS, AppCluster, strings.Join(eps, ","), cloneURL)
	}
	r.Show("operator: EtcdCluster %s/%s created; starting an empty one-member etcd at %s", cloneNS, AppCluster, cloneURL)
	clone := etcdtest.StartAt(t, s.appAuth(), eps)
	defer clone.StopAll()
	res := bg.Wait()
	if res.Err != nil || !strings.Contains(res.Output, "Restore completed with status: Completed") {
		t.Fatalf("restore r2 did not complete (%v):\n%s", res.Err, res.Output)
	}
	ec, err := s.Kube.Dynamic.Resource(operatorEtcdClusters).Namespace(cloneNS).Get(ctx, AppCluster, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get EtcdCluster %s/%s: %v", cloneNS, AppCluster, err)
	}
	r.Show("%s on %s/%s: %s", restore.AnnotationRestoreStatus, cloneNS, AppCluster, ec.GetAnnotations()[restore.AnnotationRestoreStatus])

	r.Step("The clone holds every key; the cluster r1 restored is untouched")
	if d := diffKeys(s.want, clone.Dump(t)); d != "" {
		t.Fatalf("clone: %s", d)
	}
	if d := diffKeys(s.want, s.restored.Dump(t)); d != "" {
		t.Fatalf("r1's cluster after the clone: %s", d)
	}
	r.Show("%d keys in the clone, identical; r1's cluster still holds exactly the backed-up keys", len(s.want))

	// The clone's objects go, so that later backups see only r1's cluster.
	for _, c := range []struct {
		gvr  schema.GroupVersionResource
		name string
	}{{operatorEtcdClusters, AppCluster}, {coreosEtcdClusters, PlainCluster}} {
		if err := s.Kube.Dynamic.Resource(c.gvr).Namespace(cloneNS).Delete(ctx, c.name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			t.Fatalf("delete EtcdCluster %s/%s: %v", cloneNS, c.name, err)
		}
	}
}

// appAuth is how the operator brings the application's cluster back: with
// etcd auth and the root password the restored Secret holds.
func (s *Scenario) appAuth() etcdtest.Options {
	return etcdtest.Options{Auth: true, RootPassword: s.app.RootPassword}
}

// diffKeys describes how got differs from want, or returns "".
func diffKeys(want, got map[string][]byte) string {
	var missing, differ, extra int
	for k, v := range want {
		gv, ok := got[k]
		switch {
		case !ok:
			missing++
		case !bytes.Equal(gv, v):
			differ++
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			extra++
		}
	}
	if missing+differ+extra == 0 {
		return ""
	}
	return fmt.Sprintf("%d keys missing, %d with another value, %d extra (of %d)", missing, differ, extra, len(want))
}

// deleteB1: `velero backup delete b1 --confirm` removes everything under
// backups/b1/, the snapshot included.
func (s *Scenario) deleteB1(t testing.TB) {
	r := s.R
	r.Step("velero backup delete b1: nothing is left under backups/b1/, snapshot included")
	s.CLI.Run(t, 5, "backup", "delete", "b1", "--confirm")
	var left []string
	s.poll(t, 2*time.Minute, "the DeleteBackupRequest for b1 to be processed", func(ctx context.Context) (bool, string) {
		err := s.Client.Get(ctx, ctrlclient.ObjectKey{Namespace: Namespace, Name: "b1"}, &velerov1.Backup{})
		left = s.Bucket.Keys(t, "backups/b1/")
		reqs := &velerov1.DeleteBackupRequestList{}
		_ = s.Client.List(ctx, reqs, ctrlclient.InNamespace(Namespace), ctrlclient.MatchingLabels{velerov1.BackupNameLabel: "b1"})
		var phases []string
		for _, d := range reqs.Items {
			phases = append(phases, string(d.Status.Phase))
			if len(d.Status.Errors) > 0 {
				phases = append(phases, fmt.Sprintf("errors %q", d.Status.Errors))
			}
		}
		return apierrors.IsNotFound(err) && len(left) == 0,
			fmt.Sprintf("backup get: %v; %d objects left; delete requests: %v", err, len(left), phases)
	})
	r.Show("Backup b1 gone from the API; objects under backups/b1/: %d", len(left))
}

// createSchedule: the schedule's first backup comes about a minute later;
// the failure paths run meanwhile and scheduledBackup checks it.
func (s *Scenario) createSchedule(t testing.TB) {
	s.R.Step("velero schedule create %s --schedule %q --selector app=etcd (checked after the failure paths)", scheduleName, scheduleSpec)
	s.scheduleCreated = time.Now()
	s.CLI.Run(t, 5, "schedule", "create", scheduleName, "--schedule", scheduleSpec, "--selector", "app=etcd")
}

// wrongSecret: a location whose secret OSS rejects becomes Unavailable with
// OSS's error code in its message.
func (s *Scenario) wrongSecret(t testing.TB) {
	r := s.R
	r.Step("Failure path: a second location with a wrong OSS secret becomes Unavailable")
	wrong := fmt.Sprintf("wrong%x", time.Now().UnixNano()) // OSS answers SignatureDoesNotMatch
	s.CLI.Secrets = append(s.CLI.Secrets, wrong)
	s.CreateCredentialSecret(t, "oss-credentials-wrong", s.OSS.AccessKeyID, wrong)
	s.CLI.Run(t, 5, "backup-location", "create", "wrong-secret",
		"--provider", objectstore.PluginName,
		"--bucket", s.OSS.Bucket,
		"--config", fmt.Sprintf("region=%s,endpoint=%s", s.OSS.Region, s.OSS.URL),
		"--credential", "oss-credentials-wrong="+CredentialKey)
	bsl := s.WaitLocationPhase(t, "wrong-secret", velerov1.BackupStorageLocationPhaseUnavailable, 2*time.Minute)
	s.CLI.Run(t, 5, "backup-location", "get", "wrong-secret")
	r.Show("status.message: %s", bsl.Status.Message)
	if !strings.Contains(bsl.Status.Message, "SignatureDoesNotMatch") && !strings.Contains(bsl.Status.Message, "InvalidAccessKeyId") {
		t.Errorf("location wrong-secret: message %q names neither SignatureDoesNotMatch nor InvalidAccessKeyId", bsl.Status.Message)
	}
	s.WaitLocationPhase(t, DefaultLocation, velerov1.BackupStorageLocationPhaseAvailable, 30*time.Second)
	s.CLI.Run(t, 5, "backup-location", "delete", "wrong-secret", "--confirm")
}

// unreachable: an annotated EtcdCluster whose endpoints nobody answers makes
// the backup PartiallyFailed, names the cluster, and leaves no object of it.
func (s *Scenario) unreachable(t testing.TB) {
	r := s.R
	r.Step("Failure path: an EtcdCluster whose endpoints nobody answers")
	var eps []string
	for range 3 {
		eps = append(eps, "http://"+freeLoopbackAddr(t)) // free, so nothing listens there
	}
	broken := appCluster(eps)
	broken.SetName(BrokenCluster)
	broken.SetLabels(map[string]string{"app": "etcd-broken"})
	ann := broken.GetAnnotations()
	ann[cluster.AnnotationConnectTimeout] = "3s"
	broken.SetAnnotations(ann)
	s.Kube.Apply(t, broken)
	r.Show("EtcdCluster %s/%s  labels app=etcd-broken  endpoints %s", AppNamespace, BrokenCluster, strings.Join(eps, ","))

	name := "b-unreachable"
	out := s.CLI.Run(t, 0, "backup", "create", name, "--selector", "app in (etcd, etcd-broken)", "--wait")
	if !strings.Contains(out, "Backup completed with status: PartiallyFailed") {
		t.Errorf("backup %s: want PartiallyFailed:\n%s", name, out)
	}
	b := s.getBackup(t, name)
	if b.Status.Phase != velerov1.BackupPhasePartiallyFailed || b.Status.Errors != 1 {
		t.Errorf("backup %s: phase %s with %d errors, want PartiallyFailed with 1", name, b.Status.Phase, b.Status.Errors)
	}
	desc := s.CLI.Run(t, -1, "backup", "describe", name, "--details")
	r.Output(excerpt(desc, []string{"Phase:"})+section(desc, "Errors:"), 0)
	if !strings.Contains(desc, AppNamespace+"/"+BrokenCluster) {
		t.Errorf("backup describe %s --details does not name %s/%s:\n%s", name, AppNamespace, BrokenCluster, desc)
	}
	logs := s.CLI.Run(t, -1, "backup", "logs", name)
	errLines := linesWith(logs, "etcd snapshot of EtcdCluster "+AppNamespace+"/"+BrokenCluster)
	for _, l := range errLines {
		r.Show("%s", trimLogLine(l))
	}
	if len(errLines) == 0 {
		t.Errorf("backup logs %s: no error line naming EtcdCluster %s/%s", name, AppNamespace, BrokenCluster)
	}
	snaps := s.Bucket.Keys(t, "backups/"+name+"/etcd-snapshots/")
	r.Show("objects under backups/%s/etcd-snapshots/: %v", name, snaps)
	for _, k := range snaps {
		if strings.Contains(k, "/"+BrokenCluster+".") {
			t.Errorf("object %s of the unreachable cluster was left in the bucket", k)
		}
	}
	if want := []string{snapshotFolder(name) + AppCluster + ".db", snapshotFolder(name) + AppCluster + ".json"}; !equalStrings(snaps, want) {
		t.Errorf("objects under backups/%s/etcd-snapshots/: got %v, want only the healthy cluster's %v", name, snaps, want)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.Kube.Dynamic.Resource(operatorEtcdClusters).Namespace(AppNamespace).Delete(ctx, BrokenCluster, metav1.DeleteOptions{}); err != nil {
		t.Errorf("delete EtcdCluster %s: %v", BrokenCluster, err)
	}
}

// scheduledBackup: the schedule created earlier produced a good backup.
func (s *Scenario) scheduledBackup(t testing.TB) {
	r := s.R
	r.Step("The schedule %q produced a second good backup", scheduleName)
	var b *velerov1.Backup
	s.poll(t, 4*time.Minute, "a Completed backup of schedule "+scheduleName, func(ctx context.Context) (bool, string) {
		list := &velerov1.BackupList{}
		if err := s.Client.List(ctx, list, ctrlclient.InNamespace(Namespace), ctrlclient.MatchingLabels{velerov1.ScheduleNameLabel: scheduleName}); err != nil {
			return false, err.Error()
		}
		var phases []string
		for i := range list.Items {
			it := &list.Items[i]
			phases = append(phases, it.Name+"="+string(it.Status.Phase))
			switch it.Status.Phase {
			case velerov1.BackupPhaseCompleted:
				b = it
				return true, ""
			case velerov1.BackupPhaseFailed, velerov1.BackupPhasePartiallyFailed, velerov1.BackupPhaseFailedValidation:
				t.Fatalf("scheduled backup %s: %s", it.Name, it.Status.Phase)
			}
		}
		return false, fmt.Sprintf("backups of the schedule: %v", phases)
	})
	r.Show("backup %s completed %s after the schedule was created", b.Name, time.Since(s.scheduleCreated).Round(time.Second))
	s.CLI.Run(t, 5, "schedule", "delete", scheduleName, "--confirm")
	s.CLI.Run(t, 10, "backup", "get")
	manifestKey := snapshotFolder(b.Name) + AppCluster + ".json"
	keys := s.Bucket.Keys(t, "backups/"+b.Name+"/etcd-snapshots/")
	if want := []string{snapshotFolder(b.Name) + AppCluster + ".db", manifestKey}; !equalStrings(keys, want) {
		t.Fatalf("objects under backups/%s/etcd-snapshots/: got %v, want %v", b.Name, keys, want)
	}
	m := s.manifest(t, manifestKey)
	if m.BackupName != b.Name || m.StoredSize <= 0 {
		t.Errorf("manifest of %s: %+v", b.Name, m)
	}
	r.Show("oss://%s/%s: revision %d, %d bytes (a snapshot of the restored cluster)", s.Bucket.Name, m.SnapshotKey, m.Revision, m.StoredSize)
}

// noSecretInLogs: the OSS secrets never reach the server's log (which holds
// the plugin's lines too). Every CLI output was checked as it ran.
func (s *Scenario) noSecretInLogs(t testing.TB) {
	s.R.Step("No OSS secret in the velero server log (with the plugin's lines) nor in any CLI output")
	data, err := os.ReadFile(s.Server.LogPath)
	if err != nil {
		t.Fatalf("%v", err)
	}
	for _, sec := range s.CLI.Secrets {
		if strings.Contains(string(data), sec) {
			t.Errorf("the velero server log contains an OSS secret")
		}
	}
	pluginLines := 0
	for _, l := range strings.Split(string(data), "\n") {
		if strings.Contains(l, "velero-plugin-for-etcd") {
			pluginLines++
		}
	}
	s.R.Show("%d log lines checked (%d from the plugin), %d secrets looked for: none found", strings.Count(string(data), "\n"), pluginLines, len(s.CLI.Secrets))
}

func (s *Scenario) getBackup(t testing.TB, name string) *velerov1.Backup {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b := &velerov1.Backup{}
	if err := s.Client.Get(ctx, ctrlclient.ObjectKey{Namespace: Namespace, Name: name}, b); err != nil {
		t.Fatalf("get backup %s: %v", name, err)
	}
	return b
}

func (s *Scenario) manifest(t testing.TB, key string) snapshot.Manifest {
	t.Helper()
	var m snapshot.Manifest
	if err := json.Unmarshal(s.Bucket.Get(t, key), &m); err != nil {
		t.Fatalf("manifest %s: %v", key, err)
	}
	return m
}

// excerpt keeps the top-level lines of a describe output that contain any
// of keys.
func excerpt(out string, keys []string) string {
	var b strings.Builder
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, " ") || strings.HasPrefix(l, "\t") {
			continue
		}
		for _, k := range keys {
			if strings.Contains(l, k) {
				b.WriteString(l + "\n")
				break
			}
		}
	}
	return b.String()
}

// section returns the line that starts with header and the indented lines
// that follow it, up to the next blank or unindented line.
func section(out, header string) string {
	var b strings.Builder
	in := false
	for _, l := range strings.Split(out, "\n") {
		switch {
		case !in && strings.HasPrefix(strings.TrimSpace(l), header):
			in = true
		case in && (strings.TrimSpace(l) == "" || !strings.HasPrefix(l, " ") && !strings.HasPrefix(l, "\t")):
			return b.String()
		case !in:
			continue
		}
		b.WriteString(l + "\n")
	}
	return b.String()
}

// logField matches key=value and key="quoted value" in a logrus text line.
var logField = regexp.MustCompile(`(\w+)=("(?:[^"\\]|\\.)*"|\S+)`)

// trimLogLine keeps the fields of a Velero log line a reader needs: level,
// message, error, the etcd cluster and which plugin logged it.
func trimLogLine(l string) string {
	var parts []string
	for _, m := range logField.FindAllStringSubmatch(l, -1) {
		switch m[1] {
		case "level", "msg", "error", "etcdcluster", "pluginName":
			parts = append(parts, m[1]+"="+m[2])
		}
	}
	if len(parts) == 0 {
		parts = []string{l}
	}
	out := strings.Join(parts, " ")
	if len(out) > 600 {
		out = out[:600] + "…"
	}
	return out
}

func equalStrings(a, b []string) bool {
	a, b = append([]string{}, a...), append([]string{}, b...)
	sort.Strings(a)
	sort.Strings(b)
	return strings.Join(a, "\x00") == strings.Join(b, "\x00")
}
