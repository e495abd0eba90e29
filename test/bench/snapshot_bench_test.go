package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	biav2 "github.com/vmware-tanzu/velero/pkg/plugin/velero/backupitemaction/v2"
	clientv3 "go.etcd.io/etcd/client/v3"
	etcdsnapshot "go.etcd.io/etcd/client/v3/snapshot"
	"go.uber.org/zap"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/velero-etcd/velero-plugin-for-etcd/etcd/backup"
	"github.com/velero-etcd/velero-plugin-for-etcd/etcd/cluster"
	"github.com/velero-etcd/velero-plugin-for-etcd/internal/actiontest"
	"github.com/velero-etcd/velero-plugin-for-etcd/internal/benchutil"
	"github.com/velero-etcd/velero-plugin-for-etcd/internal/etcdtest"
	"github.com/velero-etcd/velero-plugin-for-etcd/internal/pluginhost"
	"github.com/velero-etcd/velero-plugin-for-etcd/internal/plugintest"
)

// BenchmarkSnapshot fills etcd with about BENCH_SNAPSHOT_MIB (default 1024)
// of 1 KiB values, then snapshots it through the etcd-snapshot action, over
// Velero's gRPC plugin path into oss-local, against etcd's own
// snapshot.SaveWithVersion to a local file in the same run.
func BenchmarkSnapshot(b *testing.B) {
	const valueSize = 1024
	keys := int(benchutil.SizeMiB("BENCH_SNAPSHOT_MIB", 1024) << 20 / valueSize)
	actiontest.Start(b) // the storage location and credentials the action reads
	c := etcdtest.Start(b, etcdtest.Options{Members: 1})
	start := time.Now()
	c.Fill(b, keys, valueSize)
	fmt.Printf("\nfilled %d keys of %d bytes in %s\n", keys, valueSize, time.Since(start).Round(time.Second))

	log := logrus.New()
	log.SetOutput(os.Stderr)
	log.SetLevel(logrus.WarnLevel)
	action, err := plugintest.Manager(b, log).GetBackupItemActionV2(backup.PluginName)
	if err != nil {
		b.Fatal(err)
	}

	idle := peakPluginRSS(nil)
	run := 0
	for b.Loop() {
		run++
		path := filepath.Join(b.TempDir(), "snapshot.db")
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
		start := time.Now()
		_, err := etcdsnapshot.SaveWithVersion(ctx, zap.NewNop(), clientv3.Config{Endpoints: c.Endpoints[:1], DialTimeout: 10 * time.Second}, path)
		cancel()
		if err != nil {
			b.Fatal(err)
		}
		baseline := time.Since(start)
		fi, err := os.Stat(path)
		if err != nil {
			b.Fatal(err)
		}
		os.Remove(path)

		name := fmt.Sprintf("bench-%d", run)
		plugin, size := snapshotOnce(b, action, name, c.Endpoints, nil)
		rss := peakPluginRSS(nil)
		basePS, pluginPS := benchutil.MBps(fi.Size(), baseline), benchutil.MBps(size, plugin)
		fmt.Printf("etcd snapshot of %.0f MB (%d keys)\n", float64(size)/1e6, keys)
		fmt.Println(benchutil.Line("etcd-snapshot action -> oss-local", pluginPS, basePS, "SaveWithVersion to file"))
		fmt.Printf("%-34s %8.1f MiB   (%.1f MiB after start-up)\n", "plugin process peak RSS", float64(rss)/(1<<20), float64(idle)/(1<<20))
		b.ReportMetric(pluginPS, "action-MB/s")
		b.ReportMetric(basePS, "baseline-MB/s")
		b.ReportMetric(pluginPS/basePS, "ratio")
		b.ReportMetric(float64(rss)/(1<<20), "plugin-peak-RSS-MiB")

		// The same keyspace with velero-etcd.io/compression: zstd, in a fresh
		// plugin process so that the peak RSS is the compressing run's own.
		before := runningPlugins()
		zaction, err := plugintest.Manager(b, log).GetBackupItemActionV2(backup.PluginName)
		if err != nil {
			b.Fatal(err)
		}
		zstdTime, stored := snapshotOnce(b, zaction, name+"-zstd", c.Endpoints, map[string]string{cluster.AnnotationCompression: cluster.CompressionZstd})
		zrss := peakPluginRSS(before)
		fmt.Println(benchutil.Line("same, zstd (snapshot MB/s)", benchutil.MBps(size, zstdTime), basePS, "SaveWithVersion to file"))
		fmt.Printf("%-34s %8.1f MB (%.0f%% of the snapshot); plugin process peak RSS %.1f MiB\n", "  stored object", float64(stored)/1e6, 100*float64(stored)/float64(size), float64(zrss)/(1<<20))
		b.ReportMetric(float64(zrss)/(1<<20), "zstd-plugin-peak-RSS-MiB")
	}
}

// snapshotOnce backs up an annotated EtcdCluster named name with action and
// returns how long it took and the size of the stored object.
func snapshotOnce(b *testing.B, action biav2.BackupItemAction, name string, endpoints []string, extra map[string]string) (time.Duration, int64) {
	b.Helper()
	start := time.Now()
	out, _, _, _, err := action.Execute(actiontest.EtcdCluster(name, endpoints, extra), actiontest.NewBackup(name, "default"))
	if err != nil {
		b.Fatal(err)
	}
	took := time.Since(start)
	var size int64
	fmt.Sscan((&unstructured.Unstructured{Object: out.UnstructuredContent()}).GetAnnotations()[backup.AnnotationSnapshotSize], &size)
	return took, size
}

// peakPluginRSS is the largest peak RSS among this process's plugin
// children, except those in skip (which may be nil).
func peakPluginRSS(skip map[int]bool) int64 {
	var rss int64
	for _, pid := range pluginhost.PluginPIDs() {
		if skip[pid] {
			continue
		}
		if r, err := pluginhost.PeakRSS(pid); err == nil && r > rss {
			rss = r
		}
	}
	return rss
}

// runningPlugins is the set of plugin children now running.
func runningPlugins() map[int]bool {
	pids := map[int]bool{}
	for _, pid := range pluginhost.PluginPIDs() {
		pids[pid] = true
	}
	return pids
}
