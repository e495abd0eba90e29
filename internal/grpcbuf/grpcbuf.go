// Package grpcbuf sizes gRPC's message buffers for the messages this plugin
// streams.
//
// gRPC takes every received message's buffer from a pool whose tiers are
// powers of two up to 1 MiB, and clears a pooled buffer's whole capacity
// before handing it out. The two streams that carry this plugin's bytes send
// messages just over a power of two: etcd's snapshot stream sends 32 KiB of
// data plus a response header, and Velero sends PutObject bodies as 16 KiB
// chunks plus the bucket and key. Each snapshot message therefore cleared a
// 1 MiB buffer: a CPU profile of a 1.4 GB snapshot showed a fifth of the
// plugin's CPU in that clearing. Tiers a little above those sizes keep the
// buffers (and the clearing) within a few percent of the data.
package grpcbuf

import (
	"slices"

	"google.golang.org/grpc/experimental"
	"google.golang.org/grpc/mem"
)

// headroom covers a message's fields besides its data chunk: an etcd response
// header, or an OSS bucket and key (at most 63 + 1023 bytes).
const headroom = 2 << 10

// sizes are the pool's tiers: gRPC's own, one just above each chunk size the
// plugin receives in bulk, and 64 and 256 KiB so that no other message below
// 1 MiB takes a buffer more than four times its size.
var sizes = []int{
	256, 4 << 10,
	16 << 10, 16<<10 + headroom, // Velero's PutObject chunks
	32 << 10, 32<<10 + headroom, // etcd's snapshot chunks
	64 << 10, 256 << 10, 1 << 20,
}

// Pool returns a buffer pool with those tiers (it sorts what it is given,
// hence the copy). It clears buffers as gRPC's default pool does.
func Pool() mem.BufferPool { return mem.NewTieredBufferPool(slices.Clone(sizes)...) }

// Install makes Pool the default for every gRPC client and server the process
// creates afterwards, including the plugin server Velero's framework starts,
// which takes no options.
func Install() { setDefault(Pool()) }

func setDefault(p mem.BufferPool) { experimental.SetDefaultBufferPool(p) }
