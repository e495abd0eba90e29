// Package pluginhost builds the plugin binary and runs it under Velero's own
// plugin host code (pkg/plugin/clientmgmt), exactly as `velero server` does.
// Tests, the demo and the benchmarks share it.
package pluginhost

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/sirupsen/logrus"
	"github.com/vmware-tanzu/velero/pkg/plugin/clientmgmt"
	"github.com/vmware-tanzu/velero/pkg/plugin/clientmgmt/process"
	"github.com/vmware-tanzu/velero/pkg/plugin/framework"

	"github.com/velero-etcd/velero-plugin-for-etcd/internal/grpcbuf"
)

// BinaryName is the name Velero sees in its plugin directory.
const BinaryName = "velero-plugin-for-etcd"

const modulePath = "github.com/velero-etcd/velero-plugin-for-etcd"

// ServeDiscovery must run first in any program that hosts the plugin.
// Velero's discovery starts os.Args[0] as a plugin server to list the plugins
// built into the host; go-plugin's handshake marks that run with
// VELERO_PLUGIN=hello, and we answer with a server holding only what the
// host registers itself (nothing, unless a benchmark adds a baseline plugin)
// and exit.
func ServeDiscovery(register ...func(framework.Server) framework.Server) {
	if os.Getenv("VELERO_PLUGIN") == "hello" {
		// The same gRPC buffers as the plugin binary, so a plugin served from
		// a test binary (the benchmark's null store) compares like with like.
		grpcbuf.Install()
		s := framework.NewServer()
		for _, r := range register {
			s = r(s)
		}
		s.Serve()
		os.Exit(0)
	}
}

// RepoRoot walks up from the working directory to the main module's go.mod.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		data, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && strings.HasPrefix(string(data), "module "+modulePath+"\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("the %s go.mod was not found above the working directory", modulePath)
		}
		dir = parent
	}
}

// Build compiles the plugin into a new directory that holds only the binary,
// as Velero's --plugin-dir must (Velero launches every executable in it).
func Build() (dir string, err error) {
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	dir, err = os.MkdirTemp("", "velero-plugins-")
	if err != nil {
		return "", err
	}
	cmd := exec.Command("go", "build", "-o", filepath.Join(dir, BinaryName), ".")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return "", fmt.Errorf("building the plugin: %v\n%s", err, out)
	}
	return dir, nil
}

// NewManager discovers the plugins in dir and returns Velero's plugin manager.
// The caller owns CleanupClients, which kills the plugin processes.
func NewManager(dir string, log logrus.FieldLogger) (clientmgmt.Manager, error) {
	registry := process.NewRegistry(dir, log, logrus.DebugLevel)
	if err := registry.DiscoverPlugins(); err != nil {
		return nil, fmt.Errorf("velero plugin discovery in %s: %w", dir, err)
	}
	return clientmgmt.NewManager(log, logrus.DebugLevel, registry), nil
}

// PluginPIDs lists the running plugin processes started by this process.
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
	// The command name may hold spaces; the fields resume after the last ')'.
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
