package scenario

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// stopGrace is how long a process has to exit after SIGTERM before SIGKILL.
const stopGrace = 10 * time.Second

// Process is a long-running child in its own process group (velero server and
// the plugin processes it starts).
type Process struct {
	Name    string
	LogPath string

	cmd    *exec.Cmd
	exited chan struct{}
	err    error
}

// StartProcess starts bin with its output in logPath. t.Cleanup stops it, and
// every process left in its group, by PID: SIGTERM, then SIGKILL after
// stopGrace.
func StartProcess(t testing.TB, name, bin string, args, env []string, dir, logPath string) *Process {
	t.Helper()
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	defer logFile.Close() // the child holds its own descriptor
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// Own group: stop reaches the plugin processes velero starts too. Pdeathsig:
	// die with the test process if it is killed (e.g. by the test timeout).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	p := &Process{Name: name, LogPath: logPath, cmd: cmd, exited: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() { p.Stop(t) })
	return p
}

// PID of the group leader.
func (p *Process) PID() int { return p.cmd.Process.Pid }

// Exited is closed when the process has exited.
func (p *Process) Exited() <-chan struct{} { return p.exited }

// Stop sends SIGTERM to the process group, SIGKILL after stopGrace, and then
// SIGKILL to whatever is left in the group (plugin processes whose parent
// exited without stopping them).
func (p *Process) Stop(t testing.TB) {
	pid := p.PID()
	select {
	case <-p.exited:
	default:
		_ = syscall.Kill(-pid, syscall.SIGTERM)
		select {
		case <-p.exited:
		case <-time.After(stopGrace):
			t.Logf("%s (pid %d) still running %s after SIGTERM; killing its process group", p.Name, pid, stopGrace)
			_ = syscall.Kill(-pid, syscall.SIGKILL)
			<-p.exited
		}
	}
	if err := syscall.Kill(-pid, syscall.SIGKILL); err == nil {
		t.Logf("%s: killed processes left in group %d", p.Name, pid)
	} else if !errors.Is(err, syscall.ESRCH) {
		t.Logf("%s: kill group %d: %v", p.Name, pid, err)
	}
}

// Tail returns the last n lines of the process log.
func (p *Process) Tail(n int) string { return tailFile(p.LogPath, n) }

func tailFile(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", path, err)
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// keepLog copies a log that is about to be removed with its temporary
// directory to a place that survives the run, and returns that path.
func keepLog(path, name string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	dst := filepath.Join(os.TempDir(), fmt.Sprintf("velero-etcd-e2e-%d-%s", os.Getpid(), name))
	if err := os.WriteFile(dst, data, 0o600); err != nil {
		return ""
	}
	return dst
}
