package bench

import (
	"fmt"
	"hash/crc64"
	"io"
	"testing"
	"time"

	"github.com/velero-etcd/velero-plugin-for-etcd/internal/benchutil"
	"github.com/velero-etcd/velero-plugin-for-etcd/internal/crc64ecma"
)

// BenchmarkCRC64 hashes 1 GiB in the 1 MiB and 16 KiB pieces the plugin's
// uploads and downloads hand over, with crc64ecma and with hash/crc64, and
// checks both give the same CRC.
func BenchmarkCRC64(b *testing.B) {
	const total = 1 << 30
	table := crc64.MakeTable(crc64.ECMA)
	for b.Loop() {
		fmt.Printf("\nCRC-64 (x-oss-hash-crc64ecma), %d MiB\n", total>>20)
		for _, piece := range []int{1 << 20, 16 << 10} {
			data := make([]byte, piece)
			if _, err := io.ReadFull(benchutil.Source(3, int64(piece)), data); err != nil {
				b.Fatal(err)
			}
			ours, ourCRC := hashAll(total, piece, func(c uint64) uint64 { return crc64ecma.Update(c, data) })
			std, stdCRC := hashAll(total, piece, func(c uint64) uint64 { return crc64.Update(c, table, data) })
			if ourCRC != stdCRC {
				b.Fatalf("crc64ecma gave %#x, hash/crc64 %#x", ourCRC, stdCRC)
			}
			fmt.Println(benchutil.Line(fmt.Sprintf("crc64ecma, %d KiB pieces", piece>>10), ours, std, "hash/crc64"))
		}
	}
}

// hashAll applies update to total bytes' worth of piece-sized pieces and
// returns MB/s and the final CRC.
func hashAll(total int64, piece int, update func(uint64) uint64) (float64, uint64) {
	var crc uint64
	start := time.Now()
	for n := int64(0); n < total; n += int64(piece) {
		crc = update(crc)
	}
	return benchutil.MBps(total, time.Since(start)), crc
}
