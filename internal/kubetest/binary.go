package kubetest

import (
	"bufio"
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
	// The script writes to files, not pipes: if the test process dies (test
	// timeout), a build in progress neither gets SIGPIPE nor loses its result.
	outFile, err := os.CreateTemp("", "kubetest-build-"+tool+"-*.out")
	if err != nil {
		t.Fatalf("kubetest: build %s: %v", tool, err)
	}
	logFile, err := os.CreateTemp("", "kubetest-build-"+tool+"-*.log")
	if err != nil {
		t.Fatalf("kubetest: build %s: %v", tool, err)
	}
	defer func() {
		_ = outFile.Close()
		_ = logFile.Close()
		_ = os.Remove(outFile.Name())
		_ = os.Remove(logFile.Name())
	}()
	cmd := exec.Command("bash", script, tool)
	cmd.Dir = root
	cmd.Stdout, cmd.Stderr = outFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatalf("kubetest: run %s %s: %v", script, tool, err)
	}
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()

	// Relay the script's progress to the test log, and say every 30 s that a
	// long silent build is still alive.
	var tail []string
	logReader, err := os.Open(logFile.Name())
	if err != nil {
		t.Fatalf("kubetest: %v", err)
	}
	defer logReader.Close()
	lines := bufio.NewReader(logReader)
	var partial string
	relay := func() {
		for {
			chunk, err := lines.ReadString('\n')
			partial += chunk
			if err != nil { // no complete line yet
				return
			}
			line := strings.TrimRight(partial, "\n")
			partial = ""
			if strings.HasPrefix(line, "build-tools: building") {
				warnIfDeadlineTooClose(t)
			}
			t.Log(line)
			if tail = append(tail, line); len(tail) > 40 {
				tail = tail[1:]
			}
		}
	}
	poll := time.NewTicker(500 * time.Millisecond)
	defer poll.Stop()
	lastNote := time.Now()
wait:
	for {
		select {
		case <-poll.C:
			relay()
			if time.Since(lastNote) >= 30*time.Second {
				t.Logf("kubetest: still building %s (%s)", tool, time.Since(start).Round(time.Second))
				lastNote = time.Now()
			}
		case err = <-waited:
			break wait
		}
	}
	relay()
	if partial != "" {
		t.Log(partial)
		tail = append(tail, partial)
	}
	if err != nil {
		t.Fatalf("kubetest: %s %s failed after %s: %v\n%s", script, tool, time.Since(start).Round(time.Second), err, strings.Join(tail, "\n"))
	}
	stdout, err := os.ReadFile(outFile.Name())
	if err != nil {
		t.Fatalf("kubetest: %v", err)
	}
	path := strings.TrimSpace(string(stdout))
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

func warnIfDeadlineTooClose(t testing.TB) {
	d, ok := t.(interface{ Deadline() (time.Time, bool) })
	if !ok {
		return
	}
	if dl, ok := d.Deadline(); ok && time.Until(dl) < coldBuildAllowance {
		t.Logf("kubetest: WARNING: the test deadline is %s away and a first build can take longer; use go test -timeout 30m, or run hack/build-tools.sh all first (an interrupted build still completes in the background)", time.Until(dl).Round(time.Second))
	}
}

func fmtDuration(d time.Duration) string {
	return fmt.Sprintf("%.1fs", d.Seconds())
}
