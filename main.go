// Command velero-plugin-for-etcd is a Velero plugin binary. Velero starts it
// through hashicorp/go-plugin; stdout belongs to the plugin protocol, so every
// log line goes to stderr through the framework's logger.
package main

import (
	"github.com/sirupsen/logrus"
	"github.com/spf13/pflag"
	"github.com/vmware-tanzu/velero/pkg/plugin/framework"

	"github.com/velero-etcd/velero-plugin-for-etcd/objectstore"
)

func main() {
	framework.NewServer().
		BindFlags(pflag.CommandLine).
		RegisterObjectStore(objectstore.PluginName, newObjectStore).
		Serve()
}

func newObjectStore(log logrus.FieldLogger) (any, error) {
	return objectstore.New(log), nil
}
