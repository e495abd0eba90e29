package bench

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/velero-etcd/velero-plugin-for-etcd/internal/benchutil"
	"github.com/velero-etcd/velero-plugin-for-etcd/internal/osslocal/osstest"
	"github.com/velero-etcd/velero-plugin-for-etcd/internal/plugintest"
	"github.com/velero-etcd/velero-plugin-for-etcd/objectstore"
)

// BenchmarkObjectStore streams BENCH_SIZE_MIB (default 1024) through the
// plugin's gRPC path into oss-local and back, against a plain copy of the same
// bytes to and from a file on the same disk.
func BenchmarkObjectStore(b *testing.B) {
	size := benchutil.SizeMiB("BENCH_SIZE_MIB", 1024) << 20
	env := osstest.Start(b)
	log := logrus.New()
	log.SetOutput(io.Discard)
	store, err := plugintest.Manager(b, log).GetObjectStore(objectstore.PluginName)
	if err != nil {
		b.Fatal(err)
	}
	cred := filepath.Join(b.TempDir(), "cloud")
	if err := os.WriteFile(cred, []byte("ALIBABA_CLOUD_ACCESS_KEY_ID="+env.AccessKeyID+"\nALIBABA_CLOUD_ACCESS_KEY_SECRET="+env.AccessKeySecret+"\n"), 0o600); err != nil {
		b.Fatal(err)
	}
	if err := store.Init(map[string]string{"bucket": env.Bucket, "region": env.Region, "endpoint": env.URL, "credentialsFile": cred}); err != nil {
		b.Fatal(err)
	}

	direct := objectstore.New(log)
	if err := direct.Init(map[string]string{"bucket": env.Bucket, "region": env.Region, "endpoint": env.URL, "credentialsFile": cred}); err != nil {
		b.Fatal(err)
	}

	for b.Loop() {
		// Baseline: the same bytes copied to a file on the same disk, synced, as
		// oss-local does with every object it stores.
		plain := filepath.Join(env.DataDir, "..", "plain-copy")
		start := time.Now()
		f, err := os.Create(plain)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.Copy(f, benchutil.Source(1, size)); err != nil {
			b.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			b.Fatal(err)
		}
		f.Close()
		plainPut := benchutil.MBps(size, time.Since(start))

		start = time.Now()
		if err := store.PutObject(env.Bucket, "bench/object", benchutil.Source(1, size)); err != nil {
			b.Fatal(err)
		}
		put := benchutil.MBps(size, time.Since(start))

		start = time.Now()
		f, err = os.Open(plain)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.Copy(io.Discard, f); err != nil {
			b.Fatal(err)
		}
		f.Close()
		plainGet := benchutil.MBps(size, time.Since(start))
		os.Remove(plain)

		start = time.Now()
		rc, err := store.GetObject(env.Bucket, "bench/object")
		if err != nil {
			b.Fatal(err)
		}
		n, err := io.Copy(io.Discard, rc)
		rc.Close()
		if err != nil || n != size {
			b.Fatalf("GetObject read %d of %d bytes: %v", n, size, err)
		}
		get := benchutil.MBps(size, time.Since(start))

		rss := peakPluginRSS()

		// The same object store in this process: the plugin's own upload and
		// download path without Velero's gRPC stream, which carries bodies in
		// 16 KiB messages (byteChunkSize in Velero's plugin framework).
		start = time.Now()
		if err := direct.PutObject(env.Bucket, "bench/direct", benchutil.Source(1, size)); err != nil {
			b.Fatal(err)
		}
		directPut := benchutil.MBps(size, time.Since(start))
		start = time.Now()
		rc, err = direct.GetObject(env.Bucket, "bench/direct")
		if err != nil {
			b.Fatal(err)
		}
		if n, err := io.Copy(io.Discard, rc); err != nil || n != size {
			b.Fatalf("direct GetObject read %d of %d bytes: %v", n, size, err)
		}
		rc.Close()
		directGet := benchutil.MBps(size, time.Since(start))
		fmt.Printf("\nObjectStore, %d MiB through Velero's gRPC plugin path into oss-local\n", size>>20)
		fmt.Println(benchutil.Line("PutObject (plugin, gRPC)", put, plainPut, "plain copy to file"))
		fmt.Println(benchutil.Line("GetObject (plugin, gRPC)", get, plainGet, "plain read of file"))
		fmt.Println(benchutil.Line("PutObject (in process, no gRPC)", directPut, plainPut, "plain copy to file"))
		fmt.Println(benchutil.Line("GetObject (in process, no gRPC)", directGet, plainGet, "plain read of file"))
		fmt.Printf("%-34s %8.1f MiB\n", "plugin process peak RSS", float64(rss)/(1<<20))
		b.ReportMetric(put, "put-MB/s")
		b.ReportMetric(put/plainPut, "put-ratio")
		b.ReportMetric(get, "get-MB/s")
		b.ReportMetric(get/plainGet, "get-ratio")
		b.ReportMetric(float64(rss)/(1<<20), "plugin-peak-RSS-MiB")
	}
}
