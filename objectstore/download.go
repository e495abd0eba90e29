package objectstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/velero-etcd/velero-plugin-for-etcd/internal/crc64ecma"
)

// Read-ahead of a download: one goroutine reads the HTTP body and checks its
// CRC64 while the caller (Velero's gRPC server, sending one 16 KiB message per
// Read) consumes what is already here. Without it the socket read, the CRC
// and the gRPC send run one after another for every 16 KiB; with it they
// overlap. Memory stays bounded at readAheadChunks x readAheadChunkSize.
const (
	readAheadChunkSize = 256 << 10
	readAheadChunks    = 4
)

var errReaderClosed = errors.New("read after Close")

type chunkResult struct {
	buf []byte // nil with err only
	err error  // set on the last chunk: io.EOF or the failure
}

// objectReader streams one object's body. It fails the read that reaches the
// end if the content does not match the CRC64 OSS stored, so a caller never
// sees a clean EOF for corrupt data.
type objectReader struct {
	chunks chan chunkResult
	free   chan []byte
	stop   chan struct{}
	wg     sync.WaitGroup
	body   io.ReadCloser
	cancel context.CancelFunc

	cur     []byte // unread part of the current chunk
	curBuf  []byte // the pool buffer cur points into
	err     error  // sticky: returned once cur is drained
	closeMu sync.Once
}

// newObjectReader starts the read-ahead. wrap turns a read failure into the
// store's error for this object; hasCRC says whether want is known.
func newObjectReader(body io.ReadCloser, cancel context.CancelFunc, hasCRC bool, want uint64, wrap func(error) error) *objectReader {
	r := &objectReader{
		chunks: make(chan chunkResult, readAheadChunks),
		free:   make(chan []byte, readAheadChunks),
		stop:   make(chan struct{}),
		body:   body,
		cancel: cancel,
	}
	for range readAheadChunks - 1 {
		r.free <- make([]byte, readAheadChunkSize)
	}
	r.wg.Add(1)
	go r.readAhead(hasCRC, want, wrap)
	return r
}

func (r *objectReader) readAhead(hasCRC bool, want uint64, wrap func(error) error) {
	defer r.wg.Done()
	var crc uint64
	buf := make([]byte, readAheadChunkSize)
	for {
		n, err := fill(r.body, buf)
		if hasCRC {
			crc = crc64ecma.Update(crc, buf[:n])
		}
		switch {
		case err == io.EOF && hasCRC && crc != want:
			err = wrap(fmt.Errorf("CRC64 of the downloaded data (%d) does not match the object's (%d)", crc, want))
		case err != nil && err != io.EOF:
			err = wrap(err)
		}
		select {
		case r.chunks <- chunkResult{buf: buf[:n], err: err}:
		case <-r.stop:
			return
		}
		if err != nil {
			return
		}
		select {
		case buf = <-r.free:
		case <-r.stop:
			return
		}
	}
}

func (r *objectReader) Read(p []byte) (int, error) {
	select {
	case <-r.stop:
		return 0, errReaderClosed
	default:
	}
	for len(r.cur) == 0 {
		if r.err != nil {
			return 0, r.err
		}
		if r.curBuf != nil {
			r.free <- r.curBuf[:cap(r.curBuf)]
			r.curBuf = nil
		}
		select {
		case c := <-r.chunks:
			r.cur, r.curBuf, r.err = c.buf, c.buf, c.err
		case <-r.stop:
			r.err = errReaderClosed
		}
	}
	n := copy(p, r.cur)
	r.cur = r.cur[n:]
	if len(r.cur) == 0 && r.err != nil {
		return n, r.err
	}
	return n, nil
}

// Close stops the read-ahead and releases the connection. It is safe to call
// more than once and before the body has been read to the end.
func (r *objectReader) Close() error {
	var err error
	r.closeMu.Do(func() {
		close(r.stop)
		// Closing the body unblocks a read-ahead stuck in a socket read.
		err = r.body.Close()
		r.wg.Wait()
		r.cancel()
	})
	return err
}
