// Command demo runs the end-to-end scenario of issue 5 with readable output:
// a real kube-apiserver and velero server on 127.0.0.1, the plugin, a local
// OSS server and real etcd clusters, driven with the velero CLI (make demo).
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/velero-etcd/velero-plugin-for-etcd/test/e2e/scenario"
)

func main() {
	logPath := filepath.Join(os.TempDir(), fmt.Sprintf("velero-etcd-demo-%d.log", os.Getpid()))
	fmt.Printf("velero-plugin-for-etcd end-to-end demo (everything on 127.0.0.1; full command output in %s)\n", logPath)
	fmt.Println("A first run builds kube-apiserver and velero from the Go module proxy; later runs reuse the cache.")
	begin := time.Now()
	r := scenario.NewReporter(os.Stdout)
	ok := scenario.RunDemo(logPath, r, func(t testing.TB, sub scenario.Subtests) {
		scenario.Run(t, sub, r)
	})
	if !ok {
		fmt.Fprintf(os.Stderr, "\ndemo FAILED after %s; details in %s\n", time.Since(begin).Round(time.Second), logPath)
		os.Exit(1)
	}
	fmt.Printf("\nDemo finished in %s: every process it started has been stopped.\n", time.Since(begin).Round(time.Second))
}
