package osslocal

import (
	"hash/crc64"
	"math/rand/v2"
	"testing"
)

func TestCRC64Combine(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	table := crc64.MakeTable(crc64.ECMA)
	for _, sizes := range [][2]int{{0, 0}, {1, 0}, {0, 1}, {1, 1}, {7, 13}, {4096, 1}, {100_000, 262_145}} {
		a, b := make([]byte, sizes[0]), make([]byte, sizes[1])
		for i := range a {
			a[i] = byte(rng.Uint32())
		}
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		want := crc64.Checksum(append(append([]byte{}, a...), b...), table)
		got := crc64Combine(crc64.Checksum(a, table), crc64.Checksum(b, table), int64(len(b)))
		if got != want {
			t.Errorf("sizes %v: combined %d, want %d", sizes, got, want)
		}
	}
}
