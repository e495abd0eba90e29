package bench

import (
	"fmt"
	"regexp"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	velerov1 "github.com/vmware-tanzu/velero/pkg/apis/velero/v1"
	"github.com/vmware-tanzu/velero/pkg/plugin/velero"
	clientv3 "go.etcd.io/etcd/client/v3"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"

	"github.com/velero-etcd/velero-plugin-for-etcd/etcd/backup"
	"github.com/velero-etcd/velero-plugin-for-etcd/etcd/restore"
	"github.com/velero-etcd/velero-plugin-for-etcd/internal/actiontest"
	"github.com/velero-etcd/velero-plugin-for-etcd/internal/benchutil"
	"github.com/velero-etcd/velero-plugin-for-etcd/internal/etcdtest"
	"github.com/velero-etcd/velero-plugin-for-etcd/internal/pluginhost"
	"github.com/velero-etcd/velero-plugin-for-etcd/internal/plugintest"
)

// BenchmarkRestore loads a snapshot of BENCH_RESTORE_KEYS (default 1M) keys
// of 1 KiB, about 1 GiB, into an empty three-member cluster through the
// plugin (backup with etcd-snapshot, then Execute and Progress of
// etcd-restore, each Progress in a new plugin process). The baseline is the
// same cluster size taking the same data from a plain batched client in the
// same run, measured twice to bracket the restore: the fill of the source
// cluster before, and the fill of a fresh cluster after. On a shared 2-core
// machine the two differ by up to 2x; every ratio is against both.
func BenchmarkRestore(b *testing.B) {
	keys := int(benchutil.SizeMiB("BENCH_RESTORE_KEYS", 1_000_000))
	const valueSize = 1024
	env := actiontest.Start(b)
	kube := env.Kube
	env.Namespace(b, "apps")
	log, captured := actiontest.NewLogger()
	log.SetLevel(logrus.InfoLevel)

	for b.Loop() {
		// Baseline: etcdtest.Fill is a plain client writing batched
		// transactions (128 puts, 8 in flight) into an empty cluster.
		src := etcdtest.Start(b, etcdtest.Options{Members: 3})
		settle()
		start := time.Now()
		for done := 0; done < keys; done += 100_000 {
			src.Fill(b, min(100_000, keys-done), valueSize)
		}
		plainBefore := time.Since(start)
		var dataBytes int64
		for i := range keys {
			dataBytes += int64(len(fmt.Sprintf("fill/%010d", i)) + valueSize)
		}

		bk := &velerov1.Backup{ObjectMeta: metav1.ObjectMeta{Name: "bench", Namespace: "velero", UID: types.UID("uid-bench")},
			Spec: velerov1.BackupSpec{StorageLocation: "default"}}
		u, _ := runtime.DefaultUnstructuredConverter.ToUnstructured(bk)
		bobj := &unstructured.Unstructured{Object: u}
		bobj.SetAPIVersion("velero.io/v1")
		bobj.SetKind("Backup")
		kube.Apply(b, bobj)
		bia, err := plugintest.Manager(b, log).GetBackupItemActionV2(backup.PluginName)
		if err != nil {
			b.Fatal(err)
		}
		item := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "operator.etcd.io/v1alpha1", "kind": "EtcdCluster",
			"metadata": map[string]any{"name": "bench", "namespace": "apps", "annotations": map[string]any{
				"velero-etcd.io/snapshot": "true", "velero-etcd.io/endpoints": strings.Join(src.Endpoints, ",")}},
			"spec": map[string]any{"size": int64(3)},
		}}
		out, _, _, _, err := bia.Execute(item, bk)
		if err != nil {
			b.Fatal(err)
		}
		backedUp := &unstructured.Unstructured{Object: out.UnstructuredContent()}
		src.StopAll()
		dst := etcdtest.StartAt(b, etcdtest.Options{}, src.Endpoints)

		ria, err := plugintest.Manager(b, log).GetRestoreItemActionV2(restore.PluginName)
		if err != nil {
			b.Fatal(err)
		}
		rs := &velerov1.Restore{ObjectMeta: metav1.ObjectMeta{Name: "r-bench", Namespace: "velero"}, Spec: velerov1.RestoreSpec{BackupName: "bench"}}
		res, err := ria.Execute(&velero.RestoreItemActionExecuteInput{Item: backedUp.DeepCopy(), ItemFromBackup: backedUp, Restore: rs})
		if err != nil {
			b.Fatal(err)
		}
		kube.Apply(b, &unstructured.Unstructured{Object: res.UpdatedItem.UnstructuredContent()})

		before := runningPlugins()
		var peak int64
		stopSampling := sampleRSS(before, &peak)
		settle()
		start = time.Now()
		for {
			m, err := pluginhost.NewManager(plugintest.PluginDir(b), log)
			if err != nil {
				b.Fatal(err)
			}
			a, err := m.GetRestoreItemActionV2(restore.PluginName)
			if err != nil {
				b.Fatal(err)
			}
			p, err := a.Progress(res.OperationID, rs)
			m.CleanupClients()
			if err != nil {
				b.Fatal(err)
			}
			if p.Completed {
				if p.Err != "" {
					b.Fatal(p.Err)
				}
				break
			}
			time.Sleep(time.Second)
		}
		pluginTime := time.Since(start)
		stopSampling()
		// The plugin verified every key and value against the snapshot's
		// digest; a count is enough here.
		resp, err := dst.Client(b).Get(b.Context(), "\x00", clientv3.WithFromKey(), clientv3.WithCountOnly())
		if err != nil || resp.Count != int64(keys) {
			b.Fatalf("restored %v keys, want %d (%v)", resp, keys, err)
		}

		dst.StopAll()
		after := etcdtest.Start(b, etcdtest.Options{Members: 3})
		settle()
		start = time.Now()
		for done := 0; done < keys; done += 100_000 {
			after.Fill(b, min(100_000, keys-done), valueSize)
		}
		plainAfter := time.Since(start)
		after.StopAll()

		plainTime := (plainBefore + plainAfter) / 2
		plain := benchutil.MBps(dataBytes, plainTime)
		plug := benchutil.MBps(dataBytes, pluginTime)
		loadMBps := loggedLoadRate(captured.String())
		fmt.Printf("\nRestore, %d keys of %d B (%.0f MB) into an empty 3-member cluster through Velero's plugin host\n", keys, valueSize, float64(dataBytes)/1e6)
		for _, base := range []struct {
			name string
			mbps float64
		}{{"plain client, before", benchutil.MBps(dataBytes, plainBefore)}, {"plain client, after", benchutil.MBps(dataBytes, plainAfter)}, {"plain client, mean time", plain}} {
			fmt.Println(benchutil.Line("restore end to end (plugin)", plug, base.mbps, base.name))
			if loadMBps > 0 {
				fmt.Println(benchutil.Line("  of which the load phase", loadMBps, base.mbps, base.name))
			}
		}
		fmt.Printf("%-34s %s\n", "restore phases (plugin log)", loggedPhases(captured.String()))
		fmt.Printf("%-34s %8.0f keys/s %-26s %8.0f keys/s\n", "restore end to end (plugin)", float64(keys)/pluginTime.Seconds(), "plain client, mean time", float64(keys)/plainTime.Seconds())
		fmt.Printf("%-34s %8.1f MiB\n", "plugin process peak RSS", float64(peak)/(1<<20))
		b.ReportMetric(plug, "restore-MB/s")
		b.ReportMetric(plug/plain, "restore-ratio")
		b.ReportMetric(float64(keys)/pluginTime.Seconds(), "restore-keys/s")
		b.ReportMetric(float64(peak)/(1<<20), "plugin-peak-RSS-MiB")
	}
}

// settle collects garbage before a timed phase, so that each phase starts from
// as clean a heap as it can: the clusters run in this process, and a stopped
// cluster's raft log (hundreds of MiB at these sizes) is otherwise still on
// the heap the next phase's collector works through.
func settle() { debug.FreeOSMemory() } // a forced collection, then memory back to the OS

// loggedLoadRate finds the MB/s of the load phase in the plugin's log.
func loggedLoadRate(log string) float64 {
	m := regexp.MustCompile(`loaded \d+ keys .* ([0-9.]+) MB/s`).FindAllStringSubmatch(log, -1)
	if len(m) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(m[len(m)-1][1], 64)
	return v
}

// loggedPhases finds how long the plugin took to download and verify the
// snapshot, to load it, and to read the target back.
func loggedPhases(log string) string {
	var parts []string
	for _, p := range []struct{ name, re string }{
		{"snapshot download+verify", `snapshot \S+ verified in (\S+):`},
		{"load", `loaded \d+ keys \([^)]*\) in (\S+):`},
		{"read back", `read \d+ keys back from the target in (\S+)"`},
	} {
		if m := regexp.MustCompile(p.re).FindAllStringSubmatch(log, -1); len(m) > 0 {
			parts = append(parts, p.name+" "+m[len(m)-1][1])
		}
	}
	return strings.Join(parts, ", ")
}

// sampleRSS records the highest VmHWM of plugin processes not in skip.
func sampleRSS(skip map[int]bool, peak *int64) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			if r := peakPluginRSS(skip); r > *peak {
				*peak = r
			}
			select {
			case <-done:
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}
