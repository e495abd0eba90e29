// Command velero-plugin-for-etcd is a Velero plugin binary. Velero starts it
// through hashicorp/go-plugin; stdout belongs to the plugin protocol, so every
// log line goes to stderr through the framework's logger.
package main

import (
	"os"
	"runtime/debug"

	"github.com/sirupsen/logrus"
	"github.com/spf13/pflag"
	"github.com/vmware-tanzu/velero/pkg/plugin/framework"

	"github.com/velero-etcd/velero-plugin-for-etcd/etcd/backup"
	"github.com/velero-etcd/velero-plugin-for-etcd/etcd/restore"
	"github.com/velero-etcd/velero-plugin-for-etcd/internal/grpcbuf"
	"github.com/velero-etcd/velero-plugin-for-etcd/internal/kube"
	"github.com/velero-etcd/velero-plugin-for-etcd/objectstore"
)

// defaultMemoryLimit is the Go runtime's soft memory limit unless GOMEMLIMIT
// is set. Streaming keeps about (uploadConcurrency+1) part buffers live (40 MiB
// at the defaults); without a limit the collector lets garbage from the gRPC
// streams grow the heap to twice the live size, which a sidecar-sized memory
// limit on the Velero pod would not survive.
const defaultMemoryLimit = 48 << 20

func main() {
	tuneRuntime()
	// Velero starts plugins with its own server flags; --namespace and
	// --kubeconfig tell the etcd actions where Velero's objects live.
	settings := &kube.Settings{}
	settings.BindFlags(pflag.CommandLine)

	framework.NewServer().
		BindFlags(pflag.CommandLine).
		RegisterObjectStore(objectstore.PluginName, func(log logrus.FieldLogger) (any, error) {
			return objectstore.New(log), nil
		}).
		RegisterBackupItemActionV2(backup.PluginName, func(log logrus.FieldLogger) (any, error) {
			return backup.New(log, settings), nil
		}).
		RegisterRestoreItemActionV2(restore.PluginName, func(log logrus.FieldLogger) (any, error) {
			return restore.New(log, settings), nil
		}).
		Serve()
}

// tuneRuntime sets what the process needs before any gRPC client or server
// exists: the soft memory limit and gRPC buffers sized for the streams.
func tuneRuntime() {
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(defaultMemoryLimit)
	}
	grpcbuf.Install()
}
