package scenario

import (
	"bytes"
	"context"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// cliTimeout bounds one velero CLI command; --wait commands get waitTimeout.
const (
	cliTimeout  = 2 * time.Minute
	waitTimeout = 10 * time.Minute
)

// CLI runs the real velero CLI against the test cluster, as a user would:
// every command gets --kubeconfig and --namespace.
type CLI struct {
	Bin        string
	Kubeconfig string
	Namespace  string
	Env        []string
	R          *Reporter
	// Secrets never appear in what a command prints; each output is checked.
	Secrets []string
}

// CmdResult is a finished command.
type CmdResult struct {
	Args   []string
	Output string // stdout and stderr, interleaved
	Err    error
}

func (c *CLI) command(ctx context.Context, args []string) (*exec.Cmd, *bytes.Buffer) {
	full := append(append([]string{}, args...), "--kubeconfig", c.Kubeconfig, "--namespace", c.Namespace)
	cmd := exec.CommandContext(ctx, c.Bin, full...)
	cmd.Env = c.Env
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	return cmd, &out
}

// ShowLine is how a command is printed.
func ShowLine(args []string) string {
	quoted := make([]string, len(args))
	for i, a := range args {
		if strings.ContainsAny(a, " \"'()*") || a == "" {
			a = "'" + a + "'"
		}
		quoted[i] = a
	}
	return "velero " + strings.Join(quoted, " ")
}

func timeoutFor(args []string) time.Duration {
	for _, a := range args {
		if a == "--wait" || a == "-w" {
			return waitTimeout
		}
	}
	return cliTimeout
}

// Try runs a command, prints it and up to show lines of its output (-1:
// none), and returns the result whatever the exit status.
func (c *CLI) Try(t testing.TB, show int, args ...string) CmdResult {
	t.Helper()
	c.R.Command(ShowLine(args))
	ctx, cancel := context.WithTimeout(context.Background(), timeoutFor(args))
	defer cancel()
	cmd, out := c.command(ctx, args)
	start := time.Now()
	err := cmd.Run()
	res := CmdResult{Args: args, Output: plain(out.String()), Err: err}
	t.Logf("velero %s (%s, err=%v):\n%s", strings.Join(args, " "), time.Since(start).Round(time.Millisecond), err, res.Output)
	if show >= 0 {
		c.R.Output(res.Output, show)
	}
	c.checkSecrets(t, res)
	return res
}

// Run is Try that fails the test on a non-zero exit status.
func (c *CLI) Run(t testing.TB, show int, args ...string) string {
	t.Helper()
	res := c.Try(t, show, args...)
	if res.Err != nil {
		t.Fatalf("%s failed: %v\n%s", ShowLine(args), res.Err, res.Output)
	}
	return res.Output
}

// BgCmd is a command running in the background.
type BgCmd struct {
	c    *CLI
	t    testing.TB
	args []string
	show int
	out  *bytes.Buffer
	done chan struct{}
	err  error
	res  *CmdResult
}

// Background starts a command (e.g. `restore create --wait`) while the caller
// does something else; Wait collects it. It never outlives the test.
func (c *CLI) Background(t testing.TB, show int, args ...string) *BgCmd {
	t.Helper()
	c.R.Command(ShowLine(args) + "   (in the background)")
	ctx, cancel := context.WithTimeout(context.Background(), timeoutFor(args))
	cmd, out := c.command(ctx, args)
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("%s: %v", ShowLine(args), err)
	}
	b := &BgCmd{c: c, t: t, args: args, show: show, out: out, done: make(chan struct{})}
	go func() {
		b.err = cmd.Wait()
		cancel()
		close(b.done)
	}()
	t.Cleanup(func() { cancel(); <-b.done })
	return b
}

// Done is closed when the command has exited.
func (b *BgCmd) Done() <-chan struct{} { return b.done }

// Wait waits for the command, prints its output once, and returns it.
func (b *BgCmd) Wait() CmdResult {
	b.t.Helper()
	<-b.done
	if b.res == nil {
		b.res = &CmdResult{Args: b.args, Output: plain(b.out.String()), Err: b.err}
		b.t.Logf("velero %s (err=%v):\n%s", strings.Join(b.args, " "), b.err, b.res.Output)
		b.c.R.Command(ShowLine(b.args) + "   (finished)")
		if b.show >= 0 {
			b.c.R.Output(b.res.Output, b.show)
		}
		b.c.checkSecrets(b.t, *b.res)
	}
	return *b.res
}

func (c *CLI) checkSecrets(t testing.TB, res CmdResult) {
	t.Helper()
	for _, s := range c.Secrets {
		if s != "" && strings.Contains(res.Output, s) {
			t.Errorf("the output of %s contains a secret", ShowLine(res.Args))
		}
	}
}

// ansiEscape matches the colour codes `velero describe` prints.
var ansiEscape = regexp.MustCompile(`\x1b\[[0-9;]*m`)

func plain(s string) string { return ansiEscape.ReplaceAllString(s, "") }

// lineWith returns the first line of out containing every part, or "".
func lineWith(out string, parts ...string) string {
	for _, l := range strings.Split(out, "\n") {
		ok := true
		for _, p := range parts {
			if !strings.Contains(l, p) {
				ok = false
				break
			}
		}
		if ok {
			return l
		}
	}
	return ""
}

// linesWith returns every line of out containing s.
func linesWith(out, s string) []string {
	var lines []string
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, s) {
			lines = append(lines, l)
		}
	}
	return lines
}

func describeField(out, field string) string {
	for _, l := range strings.Split(out, "\n") {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(l), field+":"); ok {
			return strings.TrimSpace(rest)
		}
	}
	return ""
}
