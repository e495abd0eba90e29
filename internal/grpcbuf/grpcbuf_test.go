package grpcbuf

import (
	"testing"

	"google.golang.org/grpc/mem"
)

// Message sizes the plugin receives in bulk, with their largest real framing.
var bulk = map[string]int{
	"etcd snapshot chunk":     32<<10 + 64,
	"Velero PutObject chunk":  16<<10 + 63 + 1023 + 16,
	"Velero PutObject, short": 16<<10 + 40,
}

func TestPoolFitsBulkMessages(t *testing.T) {
	p := Pool()
	for name, size := range bulk {
		buf := p.Get(size)
		if len(*buf) != size {
			t.Errorf("%s: Get(%d) has length %d", name, size, len(*buf))
		}
		// gRPC's default pool hands out (and clears) 1 MiB for a snapshot chunk.
		if c := cap(*buf); c > size+headroom {
			t.Errorf("%s: Get(%d) has capacity %d, more than %d over the message", name, size, c, headroom)
		}
		p.Put(buf)
	}
}

// A pooled buffer comes back cleared, as gRPC's default pool guarantees, so no
// bytes of one message can show through in another.
func TestPoolClearsReusedBuffers(t *testing.T) {
	p := Pool()
	size := bulk["etcd snapshot chunk"]
	for range 100 { // sync.Pool may drop a buffer; one reuse is enough to check
		buf := p.Get(size)
		for i := range *buf {
			(*buf)[i] = 0xff
		}
		p.Put(buf)
		again := p.Get(size / 2)
		for i, b := range (*again)[:cap(*again)] {
			if b != 0 {
				t.Fatalf("reused buffer has byte %#x at %d", b, i)
			}
		}
		p.Put(again)
	}
}

func TestInstallReplacesTheDefault(t *testing.T) {
	old := mem.DefaultBufferPool()
	t.Cleanup(func() { setDefault(old) })
	Install()
	buf := mem.DefaultBufferPool().Get(bulk["etcd snapshot chunk"])
	defer mem.DefaultBufferPool().Put(buf)
	if c := cap(*buf); c >= 64<<10 {
		t.Fatalf("after Install a snapshot chunk gets a %d-byte buffer from gRPC's default pool", c)
	}
}
