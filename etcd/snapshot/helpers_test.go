package snapshot

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/velero-etcd/velero-plugin-for-etcd/etcd/cluster"
	"github.com/velero-etcd/velero-plugin-for-etcd/internal/etcdtest"
)

// bufSink is a test Sink backed by memory.
type bufSink struct {
	mu        sync.Mutex
	buf       bytes.Buffer
	committed bool
	aborted   error
	onWrite   func(n int) // called before each write, with the bytes written so far
}

func (s *bufSink) Write(p []byte) (int, error) {
	if s.onWrite != nil {
		s.onWrite(s.buf.Len())
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

func (s *bufSink) Commit() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.committed || s.aborted != nil {
		return errors.New("bufSink: finished twice")
	}
	s.committed = true
	return nil
}

func (s *bufSink) Abort(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err == nil {
		err = errors.New("nil abort error")
	}
	s.aborted = err
}

func testLog(t testing.TB) logrus.FieldLogger {
	l := logrus.New()
	l.SetOutput(testWriter{t})
	l.SetLevel(logrus.InfoLevel)
	return l.WithField("test", t.Name())
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}

func targetFor(c *etcdtest.Cluster, compression string) *cluster.Target {
	t := &cluster.Target{
		Namespace: "ns", Name: "test",
		Endpoints:      c.Endpoints,
		ConnectTimeout: 3 * time.Second,
		StreamTimeout:  2 * time.Minute,
		Compression:    compression,
		Username:       c.RootUser,
		Password:       c.RootPassword,
		TLS:            c.TLSConfig(),
	}
	return t
}

// seed writes the awkward data a restore must keep: binary keys and values,
// keys attached to a lease, overwritten and deleted keys, and bulk keys.
func seed(t testing.TB, c *etcdtest.Cluster) clientv3.LeaseID {
	t.Helper()
	cli := c.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	lease, err := cli.Grant(ctx, 3600)
	if err != nil {
		t.Fatal(err)
	}
	puts := []clientv3.Op{
		clientv3.OpPut("bin/\x00\x01\xff\xfe", string([]byte{0, 1, 2, 0xff, 0, 0x80})),
		clientv3.OpPut("bin/empty-value", ""),
		clientv3.OpPut("utf8/ключ", "значение ✓"),
		clientv3.OpPut("lease/a", "with lease", clientv3.WithLease(lease.ID)),
		clientv3.OpPut("lease/b", string(bytes.Repeat([]byte{0xAB}, 4096)), clientv3.WithLease(lease.ID)),
		clientv3.OpPut("gone", "deleted later"),
		clientv3.OpPut("over", "v1"),
	}
	if _, err := cli.Txn(ctx).Then(puts...).Commit(); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, "over", "v2"); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Delete(ctx, "gone"); err != nil {
		t.Fatal(err)
	}
	c.Fill(t, 5000, 200)
	return lease.ID
}

// restoreAndCompare restores a raw snapshot with etcdutl into a new one-member
// cluster and requires every key and value to match want.
func restoreAndCompare(t *testing.T, o etcdtest.Options, raw []byte, want map[string][]byte, lease clientv3.LeaseID) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "snapshot.db")
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	restoreFileAndCompare(t, o, path, want, lease)
}

func restoreFileAndCompare(t *testing.T, o etcdtest.Options, path string, want map[string][]byte, lease clientv3.LeaseID) {
	t.Helper()
	r := etcdtest.StartFromSnapshot(t, o, path)
	got := r.Dump(t)
	if err := sameKVs(got, want); err != nil {
		t.Fatalf("restored data differs: %v", err)
	}
	if lease == 0 {
		return
	}
	cli := r.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, "lease/a")
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("get lease/a: %v %v", resp, err)
	}
	if clientv3.LeaseID(resp.Kvs[0].Lease) != lease {
		t.Fatalf("lease/a: lease %x, want %x", resp.Kvs[0].Lease, lease)
	}
	ttl, err := cli.TimeToLive(ctx, lease)
	if err != nil || ttl.TTL <= 0 {
		t.Fatalf("restored lease %x: ttl %v, %v", lease, ttl, err)
	}
}

func sameKVs(got, want map[string][]byte) error {
	if len(got) != len(want) {
		return fmt.Errorf("%d keys, want %d", len(got), len(want))
	}
	for k, v := range want {
		g, ok := got[k]
		if !ok {
			return fmt.Errorf("key %q missing", k)
		}
		if !bytes.Equal(g, v) {
			return fmt.Errorf("key %q: value differs", k)
		}
	}
	return nil
}
