package bench

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/vmware-tanzu/velero/pkg/plugin/velero"

	"github.com/velero-etcd/velero-plugin-for-etcd/internal/benchutil"
	"github.com/velero-etcd/velero-plugin-for-etcd/internal/osslocal/osstest"
	"github.com/velero-etcd/velero-plugin-for-etcd/internal/plugintest"
	"github.com/velero-etcd/velero-plugin-for-etcd/objectstore"
)

// BenchmarkObjectStore streams BENCH_SIZE_MIB (default 1024) through the
// plugin's gRPC path into oss-local and back. The baseline is a plain copy of
// the same bytes on the same disk: the generated stream into a file for
// PutObject, and GetObject against both that and a stricter one, that file
// into another file (no stream to generate). Downloads land in a file, as
// Velero's do, and every file is synced, as oss-local syncs what it stores.
// A store that keeps nothing, served through the same gRPC path, shows the
// ceiling Velero's plugin framework itself sets on this machine.
func BenchmarkObjectStore(b *testing.B) {
	size := benchutil.SizeMiB("BENCH_SIZE_MIB", 1024) << 20
	env := osstest.Start(b)
	log := logrus.New()
	log.SetOutput(io.Discard)
	manager := plugintest.Manager(b, log)
	store, err := manager.GetObjectStore(objectstore.PluginName)
	if err != nil {
		b.Fatal(err)
	}
	cred := filepath.Join(b.TempDir(), "cloud")
	if err := os.WriteFile(cred, []byte("ALIBABA_CLOUD_ACCESS_KEY_ID="+env.AccessKeyID+"\nALIBABA_CLOUD_ACCESS_KEY_SECRET="+env.AccessKeySecret+"\n"), 0o600); err != nil {
		b.Fatal(err)
	}
	config := map[string]string{"bucket": env.Bucket, "region": env.Region, "endpoint": env.URL, "credentialsFile": cred}
	if err := store.Init(config); err != nil {
		b.Fatal(err)
	}
	null, err := manager.GetObjectStore(nullStoreName)
	if err != nil {
		b.Fatal(err)
	}
	direct := objectstore.New(log)
	if err := direct.Init(config); err != nil {
		b.Fatal(err)
	}
	dir := filepath.Join(env.DataDir, "..")
	plainFile, outFile := filepath.Join(dir, "plain-copy"), filepath.Join(dir, "download")

	for b.Loop() {
		plainPut := timed(b, size, func() (int64, error) { return toFile(plainFile, benchutil.Source(1, size)) })
		put := timed(b, size, func() (int64, error) {
			return size, store.PutObject(env.Bucket, "bench/object", benchutil.Source(1, size))
		})
		nullPut := timed(b, size, func() (int64, error) {
			return size, null.PutObject(env.Bucket, "bench/object", benchutil.Source(1, size))
		})
		plainGet := timed(b, size, func() (int64, error) {
			f, err := os.Open(plainFile)
			if err != nil {
				return 0, err
			}
			defer f.Close()
			return toFile(outFile, f)
		})
		get := timed(b, size, func() (int64, error) { return getToFile(store, env.Bucket, "bench/object", outFile) })
		nullGet := timed(b, size, func() (int64, error) { return getToFile(null, env.Bucket, fmt.Sprint(size), outFile) })
		rss := peakPluginRSS(nil)

		// The same object store in this process: the plugin's own upload and
		// download path without Velero's gRPC stream.
		directPut := timed(b, size, func() (int64, error) {
			return size, direct.PutObject(env.Bucket, "bench/direct", benchutil.Source(1, size))
		})
		directGet := timed(b, size, func() (int64, error) { return getToFile(direct, env.Bucket, "bench/direct", outFile) })
		os.Remove(plainFile)
		os.Remove(outFile)

		fmt.Printf("\nObjectStore, %d MiB through Velero's gRPC plugin path into oss-local\n", size>>20)
		fmt.Println(benchutil.Line("PutObject (plugin, gRPC)", put, plainPut, "plain copy to file"))
		fmt.Println(benchutil.Line("GetObject (plugin, gRPC) to file", get, plainPut, "plain copy to file"))
		fmt.Println(benchutil.Line("GetObject (plugin, gRPC) to file", get, plainGet, "plain file-to-file copy"))
		fmt.Println(benchutil.Line("PutObject (null store, gRPC)", nullPut, plainPut, "plain copy to file"))
		fmt.Println(benchutil.Line("GetObject (null store, gRPC)", nullGet, plainPut, "plain copy to file"))
		fmt.Println(benchutil.Line("GetObject (null store, gRPC)", nullGet, plainGet, "plain file-to-file copy"))
		fmt.Println(benchutil.Line("PutObject (plugin, gRPC)", put, nullPut, "null store, gRPC"))
		fmt.Println(benchutil.Line("GetObject (plugin, gRPC)", get, nullGet, "null store, gRPC"))
		fmt.Println(benchutil.Line("PutObject (in process, no gRPC)", directPut, plainPut, "plain copy to file"))
		fmt.Println(benchutil.Line("GetObject (in process, no gRPC)", directGet, plainGet, "plain file-to-file copy"))
		fmt.Printf("%-34s %8.1f MiB\n", "plugin process peak RSS", float64(rss)/(1<<20))
		b.ReportMetric(put, "put-MB/s")
		b.ReportMetric(put/plainPut, "put-ratio")
		b.ReportMetric(get, "get-MB/s")
		b.ReportMetric(get/plainGet, "get-ratio")
		b.ReportMetric(float64(rss)/(1<<20), "plugin-peak-RSS-MiB")
	}
}

// timed runs f, checks that it moved size bytes, and returns MB/s.
func timed(b *testing.B, size int64, f func() (int64, error)) float64 {
	b.Helper()
	start := time.Now()
	n, err := f()
	if err != nil || n != size {
		b.Fatalf("moved %d of %d bytes: %v", n, size, err)
	}
	return benchutil.MBps(size, time.Since(start))
}

// toFile copies r into a new file at path and syncs it.
func toFile(path string, r io.Reader) (int64, error) {
	f, err := os.Create(path)
	if err != nil {
		return 0, err
	}
	n, err := io.Copy(f, r)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return n, err
}

func getToFile(store velero.ObjectStore, bucket, key, path string) (int64, error) {
	rc, err := store.GetObject(bucket, key)
	if err != nil {
		return 0, err
	}
	defer rc.Close()
	return toFile(path, rc)
}
