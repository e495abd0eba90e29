// Package snapshot takes verified etcd snapshots and streams them to a sink. It
// knows nothing about where the bytes are stored.
package snapshot

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/sirupsen/logrus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"

	"github.com/velero-etcd/velero-plugin-for-etcd/etcd/cluster"
)

// MaxAttempts bounds how many members Take tries.
const MaxAttempts = 3

const (
	readBufferSize   = 256 << 10
	snapshotWindow   = 1 << 20
	progressInterval = 5 * time.Second
	progressMinGap   = time.Second // between two 10% lines
)

// Sink receives one attempt's stored bytes. Commit makes them durable (for an
// upload: completes it); Abort discards them. Exactly one of the two is called.
type Sink interface {
	io.Writer
	Commit() error
	Abort(error)
}

// Result describes a committed snapshot.
type Result struct {
	Info Info
	// RawSize and RawSHA256 describe the etcd snapshot as etcd sent it,
	// trailer included (what etcdutl restores after decompression).
	RawSize   int64
	RawSHA256 string
	// StoredSize and StoredSHA256 describe the bytes given to the sink.
	StoredSize   int64
	StoredSHA256 string
	Compression  string
	Started      time.Time
	Finished     time.Time
	Attempts     int
}

// corruptHook lets tests damage the stream as it arrives from etcd; a real etcd
// cannot be made to send a bad trailer.
var corruptHook func([]byte)

// Take snapshots the best healthy candidate and writes it, compressed per
// t.Compression, to the sink returned by open. If the stream from etcd breaks
// before it is complete, the sink is aborted and the next healthy candidate is
// tried, at most MaxAttempts in all. The sink is committed only once etcd's
// sha256 trailer has been verified, so a bad snapshot is never completed.
func Take(ctx context.Context, t *cluster.Target, cands []Candidate, open func(attempt int) (Sink, error), log logrus.FieldLogger) (*Result, error) {
	var healthy []Candidate
	for _, c := range cands {
		if c.Healthy() {
			healthy = append(healthy, c)
		}
	}
	if len(healthy) == 0 {
		return nil, fmt.Errorf("snapshot of %s: no healthy member to snapshot", t)
	}
	var errs []error
	attempt := 0
	for _, cand := range healthy {
		if attempt == MaxAttempts {
			break
		}
		attempt++
		alog := log.WithFields(logrus.Fields{"attempt": attempt, "member": cand.Info.MemberName, "endpoint": cand.Info.Endpoint})
		res, err := takeOne(ctx, t, cand, attempt, open, alog)
		if err == nil {
			res.Attempts = attempt
			return res, nil
		}
		errs = append(errs, fmt.Errorf("attempt %d on member %s (%s): %w", attempt, cand.Info.MemberName, cand.Info.Endpoint, err))
		var se *streamError
		if !errors.As(err, &se) || permanent(err) || ctx.Err() != nil {
			break
		}
		alog.WithError(err).Warn("etcd snapshot stream broke; trying the next member")
	}
	return nil, fmt.Errorf("snapshot of %s failed after %d attempt(s): %w", t, attempt, errors.Join(errs...))
}

// streamError marks a failure on the etcd side, worth a try on another member.
type streamError struct{ err error }

func (e *streamError) Error() string { return e.err.Error() }
func (e *streamError) Unwrap() error { return e.err }

func etcdErr(what string, err error) error {
	return &streamError{fmt.Errorf("%s: %w", what, describeErr(err))}
}

// takeOne runs one attempt. The sink is always either committed or aborted.
func takeOne(ctx context.Context, t *cluster.Target, cand Candidate, attempt int, open func(int) (Sink, error), log logrus.FieldLogger) (res *Result, err error) {
	sink, err := open(attempt)
	if err != nil {
		return nil, fmt.Errorf("open sink: %w", err)
	}
	committed := false
	defer func() {
		if !committed {
			if err == nil {
				err = errors.New("snapshot not committed")
			}
			sink.Abort(err)
		}
	}()

	ctx, cancel := context.WithTimeoutCause(ctx, t.StreamTimeout, fmt.Errorf("stream timeout %s exceeded", t.StreamTimeout))
	defer cancel()

	ep := cand.Info.Endpoint
	// A fixed 1 MiB stream window (gRPC's starts at 64 KiB and grows only by
	// its own estimate) lets etcd keep sending while this side hashes and
	// uploads; it bounds what the client buffers to 1 MiB.
	cfg := t.ClientConfig(ep)
	cfg.DialOptions = append(cfg.DialOptions,
		grpc.WithInitialWindowSize(snapshotWindow), grpc.WithInitialConnWindowSize(2*snapshotWindow))
	cli, err := clientv3.New(cfg)
	if err != nil {
		return nil, etcdErr("connect to "+ep, err)
	}
	defer cli.Close()

	// Up to the first byte the connect timeout applies: the client's stream
	// retry would otherwise wait for an unreachable member until the stream
	// timeout.
	streamCtx, streamCancel := context.WithCancelCause(ctx)
	defer streamCancel(nil)
	connectTimer := time.AfterFunc(t.ConnectTimeout, func() {
		streamCancel(fmt.Errorf("no answer from %s within connect timeout %s", ep, t.ConnectTimeout))
	})
	info := cand
	if err := fillInfo(streamCtx, cli, &info); err != nil {
		connectTimer.Stop()
		return nil, etcdErr("status of "+ep, causeOr(streamCtx, err))
	}
	started := time.Now()
	resp, err := cli.SnapshotWithVersion(streamCtx)
	if !connectTimer.Stop() || err != nil {
		if err == nil {
			resp.Snapshot.Close()
			err = context.Cause(streamCtx)
		}
		return nil, etcdErr("start snapshot on "+ep, causeOr(streamCtx, err))
	}
	defer resp.Snapshot.Close()
	if resp.Version != "" {
		info.Info.StorageVersion = resp.Version
	}
	// Sizes go into the message: go-plugin turns numeric log fields into
	// floats (8.27e+07) on their way to Velero's log.
	log.Infof("etcd snapshot stream opened on member %s (revision %d, db size %s, compression %s)",
		info.Info.MemberName, info.Info.Revision, humanBytes(info.DBSize), compressionName(t.Compression))

	// Uncompressed, the stored bytes are the raw bytes, which the trailer
	// check hashes already: stored.h stays nil and check.wholeSum is both sums.
	stored := &countingHash{w: sink}
	var out io.Writer = stored
	var enc *zstd.Encoder
	if t.Compression == cluster.CompressionZstd {
		stored.h = sha256.New()
		enc, err = zstd.NewWriter(stored, zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithWindowSize(zstdWindow))
		if err != nil {
			return nil, fmt.Errorf("zstd: %w", err)
		}
		defer func() {
			if !committed {
				enc.Reset(io.Discard)
				enc.Close()
			}
		}()
		out = enc
	} else if t.Compression != "" && t.Compression != cluster.CompressionNone {
		return nil, fmt.Errorf("unknown compression %q", t.Compression)
	}

	check := newTrailerCheck()
	// Compressed, the raw bytes need their own hash for the manifest.
	var raw hash.Hash
	if enc != nil {
		raw = sha256.New()
	}
	prog := progress{log: log, total: info.DBSize + trailerSize, start: started, last: started}
	buf := make([]byte, readBufferSize)
	for {
		n, rerr := resp.Snapshot.Read(buf)
		if n > 0 {
			chunk := buf[:n]
			if corruptHook != nil {
				corruptHook(chunk)
			}
			check.Write(chunk)
			if raw != nil {
				raw.Write(chunk)
			}
			if _, werr := out.Write(chunk); werr != nil {
				return nil, fmt.Errorf("write to sink: %w", werr)
			}
			prog.update(check.size)
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return nil, etcdErr(fmt.Sprintf("snapshot stream from %s broke after %d bytes", ep, check.size), causeOr(streamCtx, rerr))
		}
	}
	// Everything has been written but nothing completed: only now decide.
	if err := check.verify(); err != nil {
		if errors.Is(err, ErrMissingTrailer) {
			return nil, etcdErr("snapshot stream from "+ep, err) // truncated: another member may do
		}
		return nil, fmt.Errorf("snapshot from %s: %w", ep, err)
	}
	if enc != nil {
		if err := enc.Close(); err != nil {
			return nil, fmt.Errorf("zstd: %w", err)
		}
	}
	if err := sink.Commit(); err != nil {
		committed = true // Commit failed: the sink has cleaned up after itself
		return nil, fmt.Errorf("commit snapshot: %w", err)
	}
	committed = true
	var storedSum, rawSum string
	if raw != nil {
		storedSum, rawSum = hex.EncodeToString(stored.h.Sum(nil)), hex.EncodeToString(raw.Sum(nil))
	} else {
		storedSum = hex.EncodeToString(check.wholeSum())
		rawSum = storedSum
	}
	res = &Result{
		Info:         info.Info,
		RawSize:      check.size,
		RawSHA256:    rawSum,
		StoredSize:   stored.n,
		StoredSHA256: storedSum,
		Compression:  compressionName(t.Compression),
		Started:      started,
		Finished:     time.Now(),
	}
	d := res.Finished.Sub(res.Started)
	log.Infof("etcd snapshot of member %s committed: %s raw, %s stored, revision %d, in %s (%.1f MB/s)",
		res.Info.MemberName, humanBytes(res.RawSize), humanBytes(res.StoredSize), res.Info.Revision,
		d.Round(time.Millisecond), mbps(res.RawSize, d))
	return res, nil
}

func compressionName(c string) string {
	if c == "" {
		return cluster.CompressionNone
	}
	return c
}

// causeOr prefers a context's cause (e.g. "stream timeout exceeded") to the
// bare context error that the client reports.
func causeOr(ctx context.Context, err error) error {
	if cause := context.Cause(ctx); cause != nil && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)) {
		return fmt.Errorf("%w (%w)", cause, err)
	}
	return err
}

type countingHash struct {
	h hash.Hash
	w io.Writer
	n int64
}

func (c *countingHash) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	if c.h != nil {
		c.h.Write(p[:n])
	}
	c.n += int64(n)
	return n, err
}

// progress logs at most every progressInterval, or at each 10% step (but not
// more often than progressMinGap).
type progress struct {
	log         logrus.FieldLogger
	total       int64
	start, last time.Time
	lastTenth   int64
}

func (p *progress) update(done int64) {
	now := time.Now()
	tenth := int64(0)
	if p.total > 0 {
		tenth = done * 10 / p.total
	}
	gap := now.Sub(p.last)
	if gap < progressInterval && (tenth <= p.lastTenth || gap < progressMinGap) {
		return
	}
	p.last, p.lastTenth = now, tenth
	pct := ""
	if p.total > 0 {
		pct = fmt.Sprintf(", about %d%%", min(100, done*100/p.total))
	}
	p.log.Infof("etcd snapshot streaming: %s so far (%.1f MB/s%s)", humanBytes(done), mbps(done, now.Sub(p.start)), pct)
}

func mbps(n int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / 1e6 / d.Seconds()
}

// humanBytes renders a byte count in decimal units for log lines.
func humanBytes(n int64) string {
	switch {
	case n >= 1e9:
		return fmt.Sprintf("%.2f GB", float64(n)/1e9)
	case n >= 1e6:
		return fmt.Sprintf("%.1f MB", float64(n)/1e6)
	case n >= 1e3:
		return fmt.Sprintf("%.1f kB", float64(n)/1e3)
	}
	return fmt.Sprintf("%d B", n)
}

// zstdWindow is the compressor's match window. The encoder keeps twice the
// window as history: 16 MiB at zstd's default 8 MiB window, which took the
// plugin to 97 MiB peak RSS on a 1.4 GB snapshot, against the 100 MiB it
// must stay under. A 4 MiB window measured 6 MiB less at the peak and the
// same stored size (`make bench`, 256 MiB keyspace: 136.9 MB both ways).
// Objects written with the larger window still restore: the decoder takes
// the window from the frame.
const zstdWindow = 4 << 20
