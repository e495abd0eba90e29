package scenario

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
)

// Reporter prints the scenario as a reader follows it: "==> step" lines, the
// commands as they run, and their key output.
type Reporter struct {
	mu    sync.Mutex
	w     io.Writer
	start time.Time
}

// NewReporter writes to w.
func NewReporter(w io.Writer) *Reporter { return &Reporter{w: w, start: time.Now()} }

func (r *Reporter) printf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	fmt.Fprintf(r.w, format, args...)
}

// Mute discards everything printed from now on.
func (r *Reporter) Mute() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.w = io.Discard
}

// Step starts a step.
func (r *Reporter) Step(format string, args ...any) {
	r.printf("\n==> [%s] %s\n", fmtElapsed(time.Since(r.start)), fmt.Sprintf(format, args...))
}

// Show prints a detail of the current step.
func (r *Reporter) Show(format string, args ...any) {
	r.printf("    %s\n", fmt.Sprintf(format, args...))
}

// Command prints a command line as a user would type it.
func (r *Reporter) Command(line string) { r.printf("    $ %s\n", line) }

// Output prints a command's output, indented, at most max lines (0: all).
func (r *Reporter) Output(out string, max int) {
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if len(lines) == 1 && lines[0] == "" {
		return
	}
	var b strings.Builder
	for i, l := range lines {
		if max > 0 && i == max {
			fmt.Fprintf(&b, "      ... (%d more lines)\n", len(lines)-max)
			break
		}
		fmt.Fprintf(&b, "      %s\n", l)
	}
	r.printf("%s", b.String())
}

func fmtElapsed(d time.Duration) string {
	d = d.Round(time.Second)
	return fmt.Sprintf("%02d:%02d", int(d.Minutes()), int(d.Seconds())%60)
}
