package crc64ecma

import (
	"hash/crc64"
	"math/rand/v2"
	"testing"
)

// TestUpdateMatchesHashCRC64 compares every length up to 1 KiB, at every
// alignment, with odd starting CRCs, and a few large buffers, against
// hash/crc64: any wrong fold constant or lane order changes the result.
func TestUpdateMatchesHashCRC64(t *testing.T) {
	if !hasFold {
		t.Log("no carry-less multiplication on this CPU: the table path is what runs")
	}
	rng := rand.New(rand.NewPCG(1, 2))
	buf := make([]byte, 1<<20+37)
	for i := range buf {
		buf[i] = byte(rng.Uint32())
	}
	for off := range 16 {
		for n := 0; n <= 1024; n++ {
			p := buf[off : off+n]
			start := rng.Uint64()
			if got, want := Update(start, p), crc64.Update(start, table, p); got != want {
				t.Fatalf("offset %d length %d start %#x: got %#x, want %#x", off, n, start, got, want)
			}
		}
	}
	for _, n := range []int{4096, 65535, 65536, 1 << 20, len(buf)} {
		if got, want := Checksum(buf[:n]), crc64.Checksum(buf[:n], table); got != want {
			t.Fatalf("length %d: got %#x, want %#x", n, got, want)
		}
	}
}

// TestHashChunked writes in uneven pieces and checks the running CRC equals
// the one-shot CRC and the Sum bytes are big-endian, as crc64's are.
func TestHashChunked(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	data := make([]byte, 300000)
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	h, ref := New(), crc64.New(table)
	for rest := data; len(rest) > 0; {
		n := min(len(rest), 1+rng.IntN(20000))
		h.Write(rest[:n])
		ref.Write(rest[:n])
		rest = rest[n:]
	}
	if h.Sum64() != ref.Sum64() || string(h.Sum([]byte("x"))) != string(ref.Sum([]byte("x"))) {
		t.Fatalf("chunked: got %#x, want %#x", h.Sum64(), ref.Sum64())
	}
	h.Reset()
	if h.Sum64() != 0 || h.Size() != Size || h.BlockSize() != 1 {
		t.Fatal("Reset, Size or BlockSize differ from hash/crc64")
	}
}

// TestKnownValue pins the check value of CRC-64/XZ for "123456789", the
// value OSS returns for an object with that content.
func TestKnownValue(t *testing.T) {
	if got := Checksum([]byte("123456789")); got != 0x995DC9BBDF1939FA {
		t.Fatalf("got %#x", got)
	}
	long := make([]byte, 4096)
	for i := range long {
		long[i] = "123456789"[i%9]
	}
	if got, want := Checksum(long), crc64.Checksum(long, table); got != want {
		t.Fatalf("4 KiB: got %#x, want %#x", got, want)
	}
}
