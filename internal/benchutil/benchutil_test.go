package benchutil

import (
	"bytes"
	"io"
	"testing"
)

// TestSourceIsDeterministicAndDistinct: the same seed gives the same bytes
// whatever the read sizes, the length is exact, and no two 1 MiB blocks are
// equal (so nothing downstream can deduplicate them).
func TestSourceIsDeterministicAndDistinct(t *testing.T) {
	const n = 3*blockSize + 5
	whole, err := io.ReadAll(Source(1, n))
	if err != nil || len(whole) != n {
		t.Fatalf("read %d bytes, %v", len(whole), err)
	}
	var pieces bytes.Buffer
	r, buf := Source(1, n), make([]byte, 7777)
	for {
		k, err := r.Read(buf)
		pieces.Write(buf[:k])
		if err == io.EOF {
			break
		}
	}
	if !bytes.Equal(whole, pieces.Bytes()) {
		t.Fatal("the same seed gave different bytes for different read sizes")
	}
	for i := range 2 {
		if bytes.Equal(whole[i*blockSize:(i+1)*blockSize], whole[(i+1)*blockSize:(i+2)*blockSize]) {
			t.Fatalf("blocks %d and %d are equal", i, i+1)
		}
	}
	other, _ := io.ReadAll(Source(2, 64))
	if bytes.Equal(whole[8:64], other[8:64]) {
		t.Fatal("different seeds gave the same bytes")
	}
}
