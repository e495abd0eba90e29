package etcdtest

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/sync/errgroup"
)

const (
	maxTxnOps           = 128     // etcd's --max-txn-ops default
	defaultMaxRequest   = 3 << 19 // etcd's --max-request-bytes default, 1.5 MiB
	requestOverhead     = 4 << 10
	fillWorkers         = 8
	dumpPageSize        = 1000
	fillKeyFormat       = "fill/%010d"
	fillRequestDeadline = 2 * time.Minute
)

// Fill puts n keys of valueSize bytes with concurrent batched transactions
// that stay within etcd's operation and request size limits. Values are half
// pseudo-random, half zeros, so that compression has something to do. Keys
// continue where the previous Fill stopped.
func (c *Cluster) Fill(t testing.TB, n int, valueSize int) {
	t.Helper()
	maxReq := int(c.opts.MaxRequestBytes)
	if maxReq == 0 {
		maxReq = defaultMaxRequest
	}
	perTxn := min(maxTxnOps, (maxReq-requestOverhead)/(valueSize+32))
	if perTxn < 1 {
		t.Fatalf("etcdtest.Fill: value size %d does not fit in a %d byte request", valueSize, maxReq)
	}
	c.mu.Lock()
	first := c.fillSeq
	c.fillSeq += n
	c.mu.Unlock()

	cli := c.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), fillRequestDeadline)
	defer cancel()
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(fillWorkers)
	for start := first; start < first+n; start += perTxn {
		end := min(start+perTxn, first+n)
		g.Go(func() error {
			ops := make([]clientv3.Op, 0, end-start)
			for i := start; i < end; i++ {
				ops = append(ops, clientv3.OpPut(fmt.Sprintf(fillKeyFormat, i), string(fillValue(i, valueSize))))
			}
			if _, err := cli.Txn(ctx).Then(ops...).Commit(); err != nil {
				return fmt.Errorf("put keys %d..%d: %w", start, end-1, err)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatalf("etcdtest.Fill: %v", err)
	}
}

func fillValue(i, size int) []byte {
	v := make([]byte, size)
	var seed [32]byte
	binary.LittleEndian.PutUint64(seed[:], uint64(i))
	r := rand.NewChaCha8(seed)
	_, _ = r.Read(v[:size/2])
	return v
}

// Dump returns every key and value, read page by page at one revision.
func (c *Cluster) Dump(t testing.TB) map[string][]byte {
	t.Helper()
	cli := c.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out := map[string][]byte{}
	key := "\x00"
	var rev int64
	for {
		opts := []clientv3.OpOption{clientv3.WithFromKey(), clientv3.WithLimit(dumpPageSize)}
		if rev != 0 {
			opts = append(opts, clientv3.WithRev(rev))
		}
		resp, err := cli.Get(ctx, key, opts...)
		if err != nil {
			t.Fatalf("etcdtest.Dump: get from %q: %v", key, err)
		}
		if rev == 0 {
			rev = resp.Header.Revision
		}
		for _, kv := range resp.Kvs {
			out[string(kv.Key)] = kv.Value
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return out
		}
		key = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}
