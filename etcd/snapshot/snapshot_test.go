package snapshot

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/velero-etcd/velero-plugin-for-etcd/etcd/cluster"
	"github.com/velero-etcd/velero-plugin-for-etcd/internal/etcdtest"
)

func TestPickSkipsStoppedMember(t *testing.T) {
	c := etcdtest.Start(t, etcdtest.Options{})
	c.Fill(t, 100, 10)
	c.Stop(2)
	cands, err := Pick(context.Background(), targetFor(c, ""), testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(cands) != 3 {
		t.Fatalf("%d candidates, want 3", len(cands))
	}
	for i, cand := range cands[:2] {
		if !cand.Healthy() || cand.Info.Endpoint == c.Endpoints[2] || cand.Info.Revision == 0 || cand.Info.ClusterID == 0 || cand.Info.MemberName == "" {
			t.Fatalf("candidate %d: %+v", i, cand)
		}
	}
	if cands[1].Info.Revision > cands[0].Info.Revision ||
		(cands[1].Info.Revision == cands[0].Info.Revision && cands[1].Info.RaftIndex == cands[0].Info.RaftIndex && cands[0].Info.IsLeader && !cands[1].Info.IsLeader) {
		t.Fatalf("bad order: %s / %s", cands[0].Reason, cands[1].Reason)
	}
	last := cands[2]
	if last.Healthy() || last.Info.Endpoint != c.Endpoints[2] || !strings.Contains(last.Reason, c.Endpoints[2]) {
		t.Fatalf("stopped member: %+v", last)
	}
}

func TestPickUnreachable(t *testing.T) {
	eps := []string{"http://" + closedAddr(t), "http://" + closedAddr(t)}
	tgt := &cluster.Target{Namespace: "ns", Name: "gone", Endpoints: eps, ConnectTimeout: time.Second, StreamTimeout: time.Minute}
	start := time.Now()
	_, err := Pick(context.Background(), tgt, testLog(t))
	took := time.Since(start)
	if err == nil {
		t.Fatal("pick of unreachable endpoints succeeded")
	}
	if took > 3*time.Second {
		t.Fatalf("pick took %s with a 1s connect timeout", took)
	}
	for _, ep := range eps {
		if !strings.Contains(err.Error(), ep) {
			t.Fatalf("error does not name %s: %v", ep, err)
		}
	}
	t.Logf("after %s: %v", took.Round(time.Millisecond), err)

	// Take on a candidate that went away after Pick: bounded by the connect timeout too.
	cands := []Candidate{{Info: Info{Endpoint: eps[0], MemberName: "m0"}}}
	sink := &bufSink{}
	start = time.Now()
	_, err = Take(context.Background(), tgt, cands, func(int) (Sink, error) { return sink, nil }, testLog(t))
	if err == nil || time.Since(start) > 3*time.Second || sink.aborted == nil || sink.committed {
		t.Fatalf("take on unreachable member: err=%v after %s, sink %+v", err, time.Since(start), sink)
	}
	t.Logf("take: %v", err)
}

func closedAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// TestTakeAndRestore snapshots a plain cluster in several ways and restores each
// result with etcdutl.
func TestTakeAndRestore(t *testing.T) {
	c := etcdtest.Start(t, etcdtest.Options{})
	lease := seed(t, c)
	want := c.Dump(t)

	t.Run("buffer", func(t *testing.T) {
		tgt := targetFor(c, cluster.CompressionNone)
		cands, err := Pick(context.Background(), tgt, testLog(t))
		if err != nil {
			t.Fatal(err)
		}
		sink := &bufSink{}
		res, err := Take(context.Background(), tgt, cands, func(int) (Sink, error) { return sink, nil }, testLog(t))
		if err != nil {
			t.Fatal(err)
		}
		if !sink.committed || sink.aborted != nil || res.Attempts != 1 {
			t.Fatalf("sink committed=%v aborted=%v attempts=%d", sink.committed, sink.aborted, res.Attempts)
		}
		raw := sink.buf.Bytes()
		sum := sha256.Sum256(raw)
		if res.RawSize != int64(len(raw)) || res.StoredSize != res.RawSize || res.RawSHA256 != hex.EncodeToString(sum[:]) || res.StoredSHA256 != res.RawSHA256 {
			t.Fatalf("result sizes/hashes do not match the bytes: %+v", res)
		}
		if res.Info.Endpoint != cands[0].Info.Endpoint || res.Info.Revision < cands[0].Info.Revision || res.Info.StorageVersion == "" || res.Compression != "none" {
			t.Fatalf("result info: %+v", res.Info)
		}
		if _, err := io.Copy(io.Discard, VerifyReader(bytes.NewReader(raw))); err != nil {
			t.Fatalf("VerifyReader on a good snapshot: %v", err)
		}
		m := NewManifest(res, "b1", "uid-1", "backups/b1/etcd/ns/test.db")
		js, _ := json.Marshal(m)
		for _, field := range []string{`"formatVersion":1`, `"clusterID":"` + fmt.Sprintf("%x", res.Info.ClusterID) + `"`, `"snapshotKey":"backups/b1/etcd/ns/test.db"`, `"rawSHA256":"` + res.RawSHA256, `"member":{"name":"m`} {
			if !strings.Contains(string(js), field) {
				t.Fatalf("manifest lacks %s: %s", field, js)
			}
		}
		restoreAndCompare(t, etcdtest.Options{Members: 1}, raw, want, lease)
	})

	t.Run("pipe-file-zstd", func(t *testing.T) {
		tgt := targetFor(c, cluster.CompressionZstd)
		cands, err := Pick(context.Background(), tgt, testLog(t))
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(t.TempDir(), "snapshot.db.zst")
		put := func(r io.Reader) error {
			f, err := os.Create(path)
			if err != nil {
				return err
			}
			if _, err := io.Copy(f, r); err != nil {
				f.Close()
				os.Remove(path) // an aborted upload leaves nothing
				return err
			}
			return f.Close()
		}
		res, err := Take(context.Background(), tgt, cands, func(int) (Sink, error) { return PipeSink(put), nil }, testLog(t))
		if err != nil {
			t.Fatal(err)
		}
		stored, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(stored)
		if res.StoredSize != int64(len(stored)) || res.StoredSHA256 != hex.EncodeToString(sum[:]) || res.Compression != "zstd" || res.StoredSize >= res.RawSize {
			t.Fatalf("stored %d bytes, result %+v", len(stored), res)
		}
		t.Logf("zstd: raw %d -> stored %d bytes", res.RawSize, res.StoredSize)
		// The window bounds the compressor's memory (see zstdWindow).
		var hdr zstd.Header
		if err := hdr.Decode(stored); err != nil || hdr.WindowSize > zstdWindow {
			t.Fatalf("zstd frame window %d (%v), want at most %d", hdr.WindowSize, err, zstdWindow)
		}
		dec, err := zstd.NewReader(bytes.NewReader(stored))
		if err != nil {
			t.Fatal(err)
		}
		defer dec.Close()
		var raw bytes.Buffer
		h := sha256.New()
		if _, err := io.Copy(io.MultiWriter(&raw, h), VerifyReader(dec)); err != nil {
			t.Fatalf("decompress and verify: %v", err)
		}
		if hex.EncodeToString(h.Sum(nil)) != res.RawSHA256 {
			t.Fatal("decompressed bytes do not match RawSHA256")
		}
		restoreAndCompare(t, etcdtest.Options{Members: 1}, raw.Bytes(), want, lease)
	})

	t.Run("corrupt", func(t *testing.T) {
		corruptHook = func(b []byte) {
			if len(b) > 100 {
				b[100] ^= 0x40
			}
		}
		t.Cleanup(func() { corruptHook = nil })
		tgt := targetFor(c, cluster.CompressionNone)
		cands, err := Pick(context.Background(), tgt, testLog(t))
		if err != nil {
			t.Fatal(err)
		}
		var sinks []*bufSink
		_, err = Take(context.Background(), tgt, cands, func(int) (Sink, error) {
			s := &bufSink{}
			sinks = append(sinks, s)
			return s, nil
		}, testLog(t))
		if !errors.Is(err, ErrTrailerMismatch) {
			t.Fatalf("corrupt stream: err = %v", err)
		}
		for i, s := range sinks {
			if s.committed || s.aborted == nil {
				t.Fatalf("sink %d: committed=%v aborted=%v", i, s.committed, s.aborted)
			}
		}
		t.Logf("%v", err)
	})

	t.Run("pipe-abort", func(t *testing.T) {
		// A failing upload surfaces, and the sink is not committed.
		tgt := targetFor(c, cluster.CompressionNone)
		cands, err := Pick(context.Background(), tgt, testLog(t))
		if err != nil {
			t.Fatal(err)
		}
		boom := errors.New("bucket is gone")
		put := func(r io.Reader) error {
			io.CopyN(io.Discard, r, 1<<20)
			return boom
		}
		_, err = Take(context.Background(), tgt, cands, func(int) (Sink, error) { return PipeSink(put), nil }, testLog(t))
		if !errors.Is(err, boom) {
			t.Fatalf("err = %v, want %v", err, boom)
		}
	})
}

func TestTakeTLSAuth(t *testing.T) {
	c := etcdtest.Start(t, etcdtest.Options{TLS: true, Auth: true})
	lease := seed(t, c)
	want := c.Dump(t)
	tgt := targetFor(c, cluster.CompressionZstd)
	cands, err := Pick(context.Background(), tgt, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	sink := &bufSink{}
	res, err := Take(context.Background(), tgt, cands, func(int) (Sink, error) { return sink, nil }, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	dec, err := zstd.NewReader(&sink.buf)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := io.ReadAll(VerifyReader(dec))
	dec.Close()
	if err != nil || int64(len(raw)) != res.RawSize {
		t.Fatalf("decompress: %d bytes, %v", len(raw), err)
	}
	// Restored as a 3-member cluster; auth comes back with the data.
	restoreAndCompare(t, etcdtest.Options{Auth: true, RootPassword: c.RootPassword}, raw, want, lease)

	// Wrong password: a clear error that never shows the password.
	bad := *tgt
	bad.Password = "not-the-password-" + c.RootPassword[:4]
	_, err = Pick(context.Background(), &bad, testLog(t))
	if err == nil || !strings.Contains(err.Error(), "authentication") || strings.Contains(err.Error(), bad.Password) || strings.Contains(err.Error(), c.RootPassword) {
		t.Fatalf("wrong password: %v", err)
	}
	t.Logf("wrong password: %v", err)
	start := time.Now()
	_, err = Take(context.Background(), &bad, cands, func(int) (Sink, error) { return &bufSink{}, nil }, testLog(t))
	if err == nil || !strings.Contains(err.Error(), "authentication") || !strings.Contains(err.Error(), "1 attempt") {
		t.Fatalf("take with wrong password: %v", err)
	}
	t.Logf("take with wrong password (%s): %v", time.Since(start).Round(time.Millisecond), err)

	// No client certificate: the TLS handshake fails.
	noCert := *tgt
	noCert.TLS = tgt.TLS.Clone()
	noCert.TLS.Certificates = nil
	noCert.ConnectTimeout = time.Second
	if _, err := Pick(context.Background(), &noCert, testLog(t)); err == nil {
		t.Fatal("pick without client certificate succeeded")
	}
}

// TestTakeFailover kills the member being snapshotted after its first bytes
// arrive: Take must abort that sink and finish on another member.
func TestTakeFailover(t *testing.T) {
	c := etcdtest.Start(t, etcdtest.Options{})
	start := time.Now()
	c.Fill(t, 640, 100<<10) // ~64 MiB
	t.Logf("filled in %s", time.Since(start))
	tgt := targetFor(c, cluster.CompressionNone)
	cands, err := Pick(context.Background(), tgt, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	victim := c.MemberByID(cands[0].Info.MemberID)
	if victim < 0 {
		t.Fatal("first candidate is not a member")
	}
	first := &bufSink{}
	firstBytes, stopped := make(chan struct{}), make(chan struct{})
	first.onWrite = func(n int) {
		if n == 0 {
			close(firstBytes)
			<-stopped
		}
	}
	go func() {
		<-firstBytes
		c.Stop(victim)
		close(stopped)
	}()
	path := filepath.Join(t.TempDir(), "snapshot.db")
	var opened []int
	res, err := Take(context.Background(), tgt, cands, func(attempt int) (Sink, error) {
		opened = append(opened, attempt)
		if attempt == 1 {
			return first, nil
		}
		return PipeSink(func(r io.Reader) error {
			f, err := os.Create(path)
			if err != nil {
				return err
			}
			if _, err := io.Copy(f, r); err != nil {
				f.Close()
				return err
			}
			return f.Close()
		}), nil
	}, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	if res.Attempts != 2 || len(opened) != 2 || first.aborted == nil || first.committed {
		t.Fatalf("attempts=%d opened=%v first sink aborted=%v committed=%v", res.Attempts, opened, first.aborted, first.committed)
	}
	if res.Info.MemberID == cands[0].Info.MemberID {
		t.Fatal("snapshot came from the killed member")
	}
	t.Logf("first attempt aborted with: %v", first.aborted)
	t.Logf("snapshot of %d bytes from %s in %s", res.RawSize, res.Info.MemberName, res.Finished.Sub(res.Started))
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.Copy(io.Discard, VerifyReader(f))
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	want := c.Dump(t)
	restoreFileAndCompare(t, etcdtest.Options{Members: 1}, path, want, 0)
}
