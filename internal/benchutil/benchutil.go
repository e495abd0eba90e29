// Package benchutil holds what the benchmarks share: a fast deterministic
// byte source and the report line that puts every figure next to the
// baseline measured in the same run.
package benchutil

import (
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"strconv"
	"time"
)

// Source returns n pseudo-random bytes: incompressible, cheap to make, and
// the same for the same seed, so a run can compare paths on equal data.
func Source(seed uint64, n int64) io.Reader {
	var key [32]byte
	for i := range 8 {
		key[i] = byte(seed >> (8 * i))
	}
	return io.LimitReader(rand.NewChaCha8(key), n)
}

// SizeMiB reads a size override such as BENCH_SIZE_MIB, else def.
func SizeMiB(env string, def int64) int64 {
	if v, err := strconv.ParseInt(os.Getenv(env), 10, 64); err == nil && v > 0 {
		return v
	}
	return def
}

// MBps is throughput in decimal megabytes per second.
func MBps(n int64, d time.Duration) float64 {
	return float64(n) / 1e6 / d.Seconds()
}

// Line formats one result against its same-run baseline.
func Line(name string, mbps, baseline float64, baselineName string) string {
	return fmt.Sprintf("%-34s %8.1f MB/s   %-28s %8.1f MB/s   ratio %.2f", name, mbps, baselineName, baseline, mbps/baseline)
}
