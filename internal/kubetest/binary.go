package kubetest

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// mainModule is the module path whose go.mod marks the repository root.
const mainModule = "github.com/velero-etcd/velero-plugin-for-etcd"

// Tools that hack/build-tools.sh knows how to build.
const (
	ToolKubeAPIServer = "kube-apiserver"
	ToolVelero        = "velero"
	ToolEtcd          = "etcd"
)

// A first build takes minutes; warn when the test deadline leaves less.
const coldBuildAllowance = 15 * time.Minute

var (
	binariesMu sync.Mutex
	binaries   = map[string]string{}
)

// Binary returns the path of a tool binary (ToolKubeAPIServer, ToolVelero or
// ToolEtcd) from the cache that hack/build-tools.sh keeps outside the
// repository, building it first when it is missing.
//
// A first build takes several CPU-minutes: progress goes to the test log, and
// callers should run `go test -timeout 30m` (or `hack/build-tools.sh all`
// beforehand). The build runs in its own process group so that a test timeout
// or Ctrl-C does not kill it: it finishes, and the next run finds the binary.
func Binary(t testing.TB, tool string) string {
	t.Helper()
	binariesMu.Lock()
	defer binariesMu.Unlock()
	if path, ok := binaries[tool]; ok {
		return path
	}

	root := RepoRoot(t)
	script := filepath.Join(root, "hack", "build-tools.sh")
	cmd := exec.Command("bash", script, tool)
	cmd.Dir = root
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var stdout bytes.Buffer
	cmd.Stdout = &stdout
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatalf("kubetest: build %s: %v", tool, err)
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatalf("kubetest: run %s %s: %v", script, tool, err)
	}

	// Relay the script's progress lines, and say that a long silent build is
	// still alive.
	var tail []string
	relayed := make(chan struct{})
	go func() {
		defer close(relayed)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64*1024), 1024*1024)
		for sc.Scan() {
			line := sc.Text()
			if strings.HasPrefix(line, "build-tools: building") {
				if d, ok := t.(interface{ Deadline() (time.Time, bool) }); ok {
					if dl, ok := d.Deadline(); ok && time.Until(dl) < coldBuildAllowance {
						t.Logf("kubetest: WARNING: test deadline in %s; a first build can take longer: use go test -timeout 30m or run hack/build-tools.sh all first", time.Until(dl).Round(time.Second))
					}
				}
			}
			t.Log(line)
			if tail = append(tail, line); len(tail) > 40 {
				tail = tail[1:]
			}
		}
	}()
	ticker := time.NewTicker(30 * time.Second)
	defer ticker.Stop()
	waited := make(chan error, 1)
	go func() {
		<-relayed
		waited <- cmd.Wait()
	}()
wait:
	for {
		select {
		case <-ticker.C:
			t.Logf("kubetest: still building %s (%s)", tool, time.Since(start).Round(time.Second))
		case err = <-waited:
			break wait
		}
	}
	if err != nil {
		t.Fatalf("kubetest: %s %s failed after %s: %v\n%s", script, tool, time.Since(start).Round(time.Second), err, strings.Join(tail, "\n"))
	}
	path := strings.TrimSpace(stdout.String())
	if i := strings.LastIndexByte(path, '\n'); i >= 0 {
		path = path[i+1:]
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode()&0o111 == 0 {
		t.Fatalf("kubetest: %s %s printed %q, which is not an executable file (%v)", script, tool, path, err)
	}
	binaries[tool] = path
	return path
}

// RepoRoot returns the directory of the main module's go.mod, found by
// walking up from the working directory (a test runs in its package's
// directory). The tool modules under test/e2e/tools are skipped.
func RepoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatalf("kubetest: %v", err)
	}
	for {
		if data, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && modulePath(data) == mainModule {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatalf("kubetest: no go.mod of module %s above the working directory", mainModule)
		}
		dir = parent
	}
}

func modulePath(gomod []byte) string {
	for _, line := range strings.Split(string(gomod), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "module" {
			return strings.Trim(f[1], `"`)
		}
	}
	return ""
}

func fmtDuration(d time.Duration) string {
	return fmt.Sprintf("%.1fs", d.Seconds())
}
