// Package host runs the plugin binary under Velero's own plugin host code
// (pkg/plugin/clientmgmt), the way `velero server` runs it, against the local
// OSS server.
package host

import (
	"testing"

	"github.com/velero-etcd/velero-plugin-for-etcd/internal/plugintest"
)

func TestMain(m *testing.M) { plugintest.Main(m) }
