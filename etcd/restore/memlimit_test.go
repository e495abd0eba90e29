package restore

import (
	"math"
	"runtime/debug"
	"testing"
)

func TestLiftMemoryLimit(t *testing.T) {
	t.Setenv("GOMEMLIMIT", "")
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(48 << 20))

	first := liftMemoryLimit()
	second := liftMemoryLimit() // two Progress calls in one process
	if got := debug.SetMemoryLimit(-1); got != math.MaxInt64 {
		t.Fatalf("limit during a restore call: %d, want none", got)
	}
	first()
	if got := debug.SetMemoryLimit(-1); got != math.MaxInt64 {
		t.Fatalf("limit while another call still runs: %d, want none", got)
	}
	second()
	if got := debug.SetMemoryLimit(-1); got != 48<<20 {
		t.Fatalf("limit after the last call: %d, want %d", got, 48<<20)
	}

	t.Setenv("GOMEMLIMIT", "64MiB") // as the runtime read it at start-up
	debug.SetMemoryLimit(64 << 20)
	done := liftMemoryLimit()
	if got := debug.SetMemoryLimit(-1); got != 64<<20 {
		t.Fatalf("a limit the user set was changed to %d", got)
	}
	done()
}
