// Package benchutil holds what the benchmarks share: a fast deterministic
// byte source and the report line that puts every figure next to the
// baseline measured in the same run.
package benchutil

import (
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"strconv"
	"time"
)

// blockSize is the period of Source's pattern.
const blockSize = 1 << 20

// Source returns n pseudo-random bytes, the same for the same seed, so a run
// compares paths on equal data. One 1 MiB block is generated up front and
// repeated, each copy made distinct by its index in the first eight bytes:
// generating every byte (ChaCha8, about 2 GB/s) took a tenth of this
// machine's CPU during a PutObject benchmark, away from the paths measured.
// Nothing in the object store's path compresses or deduplicates.
func Source(seed uint64, n int64) io.Reader {
	var key [32]byte
	for i := range 8 {
		key[i] = byte(seed >> (8 * i))
	}
	block := make([]byte, blockSize)
	_, _ = rand.NewChaCha8(key).Read(block)
	return &source{block: block, left: n}
}

type source struct {
	block []byte
	off   int64 // bytes produced so far
	left  int64
}

func (s *source) Read(p []byte) (int, error) {
	if s.left <= 0 {
		return 0, io.EOF
	}
	p = p[:min(int64(len(p)), s.left)]
	n := 0
	for n < len(p) {
		i := s.off % blockSize
		if i == 0 {
			binary.LittleEndian.PutUint64(s.block, uint64(s.off/blockSize))
		}
		c := copy(p[n:], s.block[i:])
		n += c
		s.off += int64(c)
	}
	s.left -= int64(n)
	return n, nil
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
