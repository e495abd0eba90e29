// Package plugintest drives the plugin binary exactly the way `velero server`
// does: it builds the binary once per test run, discovers it with Velero's
// process registry and hands out Velero's own client manager, so every call a
// test makes crosses the real gRPC boundary into a separate process.
package plugintest

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/sirupsen/logrus"
	"github.com/vmware-tanzu/velero/pkg/plugin/clientmgmt"
	"github.com/vmware-tanzu/velero/pkg/plugin/clientmgmt/process"
	"github.com/vmware-tanzu/velero/pkg/plugin/framework"
)

// BinaryName is the name Velero sees in its plugin directory.
const BinaryName = "velero-plugin-for-etcd"

var (
	buildOnce sync.Once
	buildDir  string
	buildErr  error
)

// Main is the body of TestMain for every package that launches the plugin.
// Velero's discovery first runs os.Args[0] (here: the test binary) as a plugin
// server to list its built-in plugins; the go-plugin handshake sets
// VELERO_PLUGIN=hello, and we answer with an empty server.
func Main(m *testing.M) {
	if os.Getenv("VELERO_PLUGIN") == "hello" {
		framework.NewServer().Serve()
		return
	}
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// RepoRoot walks up from the working directory to the main module's go.mod.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		data, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && strings.Contains(string(data), "module github.com/velero-etcd/velero-plugin-for-etcd\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("main module go.mod not found above the working directory")
		}
		dir = parent
	}
}

// PluginDir builds the plugin binary once per test process and returns a
// directory that holds only that binary, as Velero's --plugin-dir must.
func PluginDir(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		root, err := RepoRoot()
		if err != nil {
			buildErr = err
			return
		}
		buildDir, err = os.MkdirTemp("", "velero-plugins-")
		if err != nil {
			buildErr = err
			return
		}
		cmd := exec.Command("go", "build", "-o", filepath.Join(buildDir, BinaryName), ".")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("building the plugin: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return buildDir
}

// Manager returns Velero's plugin manager over the freshly discovered binary.
// Plugin processes are killed at cleanup. Log lines from the plugin process
// reach the given logger, as they reach Velero's log in production.
func Manager(t testing.TB, log logrus.FieldLogger) clientmgmt.Manager {
	t.Helper()
	dir := PluginDir(t)
	registry := process.NewRegistry(dir, log, logrus.DebugLevel)
	if err := registry.DiscoverPlugins(); err != nil {
		t.Fatalf("velero plugin discovery: %v", err)
	}
	m := clientmgmt.NewManager(log, logrus.DebugLevel, registry)
	t.Cleanup(m.CleanupClients)
	return m
}

// PluginPIDs lists the running plugin processes started by this test process.
func PluginPIDs() []int {
	self := os.Getpid()
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		exe, err := os.Readlink(filepath.Join("/proc", e.Name(), "exe"))
		if err != nil || filepath.Base(exe) != BinaryName {
			continue
		}
		if parentPID(pid) == self {
			pids = append(pids, pid)
		}
	}
	return pids
}

func parentPID(pid int) int {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return -1
	}
	// The command name may hold spaces; fields resume after the last ')'.
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return -1
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 2 {
		return -1
	}
	ppid, _ := strconv.Atoi(f[1])
	return ppid
}

// PeakRSS returns a process's peak resident set size (VmHWM) in bytes.
func PeakRSS(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return kb * 1024, err
		}
	}
	return 0, fmt.Errorf("VmHWM missing in /proc/%d/status", pid)
}
