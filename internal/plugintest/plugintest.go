// Package plugintest adapts pluginhost to tests: one plugin build per test
// binary, and a Velero plugin manager per test with cleanup registered.
package plugintest

import (
	"os"
	"sync"
	"testing"

	"github.com/sirupsen/logrus"
	"github.com/vmware-tanzu/velero/pkg/plugin/clientmgmt"
	"github.com/vmware-tanzu/velero/pkg/plugin/framework"

	"github.com/velero-etcd/velero-plugin-for-etcd/internal/pluginhost"
)

var (
	buildOnce sync.Once
	buildDir  string
	buildErr  error
)

// Main is the body of TestMain for every package that launches the plugin:
// Velero's discovery re-runs the test binary as a plugin server, which
// serves what register adds (see pluginhost.ServeDiscovery).
func Main(m *testing.M, register ...func(framework.Server) framework.Server) {
	pluginhost.ServeDiscovery(register...)
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// PluginDir builds the plugin once per test binary.
func PluginDir(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() { buildDir, buildErr = pluginhost.Build() })
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return buildDir
}

// Manager returns Velero's plugin manager over the plugin binary; the plugin
// processes are killed at cleanup. The plugin's log lines reach log, as they
// reach Velero's log in production.
func Manager(t testing.TB, log logrus.FieldLogger) clientmgmt.Manager {
	t.Helper()
	m, err := pluginhost.NewManager(PluginDir(t), log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.CleanupClients)
	return m
}
