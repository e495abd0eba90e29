package scenario

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
)

// demoTB lets `make demo` run the same code as the e2e test outside `go test`.
// The helpers of the main module (kubetest, etcdtest, osstest) take a
// testing.TB; this one prints failures, and runs cleanups when the demo ends,
// fails, or is interrupted.
//
// testing.TB has an unexported method, so the interface is embedded (nil):
// every method the helpers call is defined below, and calling any other
// panics, which a run would show at once.
type demoTB struct {
	testing.TB

	log  io.Writer // detailed log (a file); the readable output is the Reporter's
	dir  string
	name string

	mu       sync.Mutex
	cleanups []func()
	failed   bool
	tmpSeq   int
	ctx      context.Context
	cancel   context.CancelFunc
	cleanup  sync.Once
	// interrupted silences failures that only the interruption caused.
	interrupted atomic.Bool
}

// failNow unwinds a demo step, as runtime.Goexit does for a test.
type failNow struct{}

func (d *demoTB) Helper()      {}
func (d *demoTB) Name() string { return d.name }

func (d *demoTB) Log(args ...any) { d.logf("%s", fmt.Sprintln(args...)) }
func (d *demoTB) Logf(format string, args ...any) {
	d.logf(format, args...)
}

func (d *demoTB) logf(format string, args ...any) {
	s := fmt.Sprintf(format, args...)
	if len(s) == 0 || s[len(s)-1] != '\n' {
		s += "\n"
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	_, _ = io.WriteString(d.log, s)
}

func (d *demoTB) Error(args ...any) { d.Errorf("%s", fmt.Sprint(args...)) }
func (d *demoTB) Errorf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	d.logf("ERROR: %s", msg)
	if !d.interrupted.Load() {
		fmt.Fprintf(os.Stderr, "\n!!! %s\n", msg)
	}
	d.Fail()
}
func (d *demoTB) Fatal(args ...any) { d.Error(args...); d.FailNow() }
func (d *demoTB) Fatalf(format string, args ...any) {
	d.Errorf(format, args...)
	d.FailNow()
}
func (d *demoTB) Fail() {
	d.mu.Lock()
	d.failed = true
	d.mu.Unlock()
}
func (d *demoTB) Failed() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.failed
}
func (d *demoTB) FailNow() {
	d.Fail()
	panic(failNow{})
}
func (d *demoTB) Skip(args ...any)                 { d.Fatal(append([]any{"skipped:"}, args...)...) }
func (d *demoTB) Skipf(format string, args ...any) { d.Fatalf("skipped: "+format, args...) }
func (d *demoTB) SkipNow()                         { d.FailNow() }
func (d *demoTB) Skipped() bool                    { return false }
func (d *demoTB) Context() context.Context         { return d.ctx }
func (d *demoTB) Setenv(key, value string) {
	prev, had := os.LookupEnv(key)
	if err := os.Setenv(key, value); err != nil {
		d.Fatalf("setenv %s: %v", key, err)
	}
	d.Cleanup(func() {
		if had {
			_ = os.Setenv(key, prev)
		} else {
			_ = os.Unsetenv(key)
		}
	})
}

func (d *demoTB) Cleanup(f func()) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.cleanups = append(d.cleanups, f)
}

func (d *demoTB) TempDir() string {
	d.mu.Lock()
	d.tmpSeq++
	dir := filepath.Join(d.dir, fmt.Sprintf("tmp%03d", d.tmpSeq))
	d.mu.Unlock()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		d.Fatalf("TempDir: %v", err)
	}
	return dir
}

// runCleanups runs the registered cleanups, last first, once. A cleanup that
// fails is reported and the others still run.
func (d *demoTB) runCleanups() {
	d.cleanup.Do(func() {
		d.cancel()
		for {
			d.mu.Lock()
			n := len(d.cleanups)
			if n == 0 {
				d.mu.Unlock()
				break
			}
			f := d.cleanups[n-1]
			d.cleanups = d.cleanups[:n-1]
			d.mu.Unlock()
			func() {
				defer func() {
					if r := recover(); r != nil {
						if _, ok := r.(failNow); !ok {
							d.logf("cleanup panicked: %v", r)
						}
					}
				}()
				f()
			}()
		}
		_ = os.RemoveAll(d.dir)
	})
}

// step runs fn as a named part of the demo: a failure ends fn (and is
// remembered) but not the demo, like t.Run in the test.
func (d *demoTB) step(fn func()) (ok bool) {
	defer func() {
		if r := recover(); r != nil {
			if _, isFail := r.(failNow); !isFail {
				buf := make([]byte, 16<<10)
				buf = buf[:runtime.Stack(buf, false)]
				d.Errorf("panic: %v\n%s", r, buf)
			}
			ok = false
		}
	}()
	fn()
	return true
}

// RunDemo runs fn with a testing.TB that logs to logPath and removes its
// temporary files at the end. Every process fn starts is stopped when fn
// returns or fails, and also on SIGINT/SIGTERM (r goes quiet then). It
// returns false when any part failed.
func RunDemo(logPath string, r *Reporter, fn func(t testing.TB, sub Subtests)) bool {
	logFile, err := os.Create(logPath)
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		return false
	}
	defer logFile.Close()
	dir, err := os.MkdirTemp("", "velero-etcd-demo-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		return false
	}
	ctx, cancel := context.WithCancel(context.Background())
	d := &demoTB{log: logFile, dir: dir, name: "demo", ctx: ctx, cancel: cancel}

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	go func() {
		if _, ok := <-sigs; ok {
			d.interrupted.Store(true)
			r.Mute()
			fmt.Fprintln(os.Stderr, "\ninterrupted: stopping every process the demo started")
			d.runCleanups()
			os.Exit(130)
		}
	}()

	d.step(func() { fn(d, demoSubtests{d}) })
	d.runCleanups()
	return !d.Failed()
}

// Subtests runs named parts of the scenario so that one failing part does not
// hide the outcome of the next ones (t.Run in the test).
type Subtests interface {
	Run(name string, fn func(t testing.TB)) bool
}

type demoSubtests struct{ d *demoTB }

func (s demoSubtests) Run(name string, fn func(t testing.TB)) bool {
	ok := s.d.step(func() { fn(s.d) })
	if !ok && !s.d.interrupted.Load() {
		fmt.Fprintf(os.Stderr, "!!! part %q failed; going on with the next one\n", name)
	}
	return ok
}

// TestSubtests adapts *testing.T.
type TestSubtests struct{ T *testing.T }

func (s TestSubtests) Run(name string, fn func(t testing.TB)) bool {
	return s.T.Run(name, func(t *testing.T) { fn(t) })
}
