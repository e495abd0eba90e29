package main

import (
	"runtime/debug"
	"testing"

	"google.golang.org/grpc/mem"
)

func TestTuneRuntime(t *testing.T) {
	t.Setenv("GOMEMLIMIT", "")
	old := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(old) })
	tuneRuntime()
	if got := debug.SetMemoryLimit(-1); got != defaultMemoryLimit {
		t.Errorf("memory limit %d, want %d", got, defaultMemoryLimit)
	}
	// An etcd snapshot message (32 KiB of data and a header) must not take
	// one of gRPC's 1 MiB buffers, which the default pool clears on every use.
	buf := mem.DefaultBufferPool().Get(32<<10 + 64)
	defer mem.DefaultBufferPool().Put(buf)
	if c := cap(*buf); c >= 64<<10 {
		t.Errorf("a snapshot message gets a %d-byte buffer", c)
	}
}

func TestTuneRuntimeKeepsAUserMemoryLimit(t *testing.T) {
	t.Setenv("GOMEMLIMIT", "1GiB")
	old := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(old) })
	debug.SetMemoryLimit(1 << 30)
	tuneRuntime()
	if got := debug.SetMemoryLimit(-1); got != 1<<30 {
		t.Errorf("memory limit %d, want the user's 1 GiB", got)
	}
}
