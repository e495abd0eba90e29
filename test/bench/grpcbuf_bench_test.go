package bench

import (
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc/mem"

	"github.com/velero-etcd/velero-plugin-for-etcd/internal/benchutil"
	"github.com/velero-etcd/velero-plugin-for-etcd/internal/grpcbuf"
)

// BenchmarkGRPCBuffers receives 1 GiB of messages of the two sizes the plugin
// gets in bulk, taking each message's buffer from gRPC's default pool and from
// the plugin's (grpcbuf), as gRPC's transport does: get a buffer, fill it with
// the message, give it back.
func BenchmarkGRPCBuffers(b *testing.B) {
	const total = 1 << 30
	messages := []struct {
		name string
		size int
	}{
		{"etcd snapshot msgs, grpcbuf", 32<<10 + 64},
		{"PutObject msgs, grpcbuf", 16<<10 + 64},
	}
	for b.Loop() {
		fmt.Printf("\ngRPC message buffers, %d MiB of messages\n", total>>20)
		for _, m := range messages {
			data := make([]byte, m.size)
			def := receive(mem.DefaultBufferPool(), data, total)
			ours := receive(grpcbuf.Pool(), data, total)
			fmt.Println(benchutil.Line(m.name, ours, def, "gRPC default pool"))
		}
	}
}

// receive passes total bytes of data-sized messages through pool and returns MB/s.
func receive(pool mem.BufferPool, data []byte, total int64) float64 {
	start := time.Now()
	for n := int64(0); n < total; n += int64(len(data)) {
		buf := pool.Get(len(data))
		copy(*buf, data)
		pool.Put(buf)
	}
	return benchutil.MBps(total, time.Since(start))
}
