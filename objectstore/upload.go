package objectstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"sync"

	"github.com/aliyun/alibabacloud-oss-go-sdk-v2/oss"

	"github.com/velero-etcd/velero-plugin-for-etcd/internal/crc64ecma"
)

// Why not oss.Uploader: with a reader of unknown length it always goes
// multipart (even for a 2 KiB velero-backup.json), and it aborts a failed
// upload with the caller's context, so a deadline that already expired leaves
// the parts behind. This uploader reads one part first and sends a single
// PutObject when the body ends inside it; otherwise it runs a multipart upload
// with at most concurrency+1 part buffers, and aborts with a fresh context.

// maxRead bounds one Read of an upload body (see fill).
const maxRead = 64 << 10

// bodyReadError marks a failure of the caller's body reader, as opposed to OSS.
type bodyReadError struct{ err error }

func (e *bodyReadError) Error() string { return "reading the body to upload: " + e.err.Error() }
func (e *bodyReadError) Unwrap() error { return e.err }

// fill reads until buf is full or the reader fails. Unlike io.ReadFull it
// keeps an error that arrives together with the last bytes of a full buffer:
// the etcd action's verifying reader reports a bad snapshot exactly that way.
//
// Each Read asks for at most maxRead bytes: Velero's gRPC stream reader
// (framework.StreamReadCloser) answers a Read only once its own buffer holds
// len(p) bytes, so asking for a whole part would make it grow a second,
// part-sized buffer and stall the pipeline until the part had arrived.
func fill(r io.Reader, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := r.Read(buf[n:min(len(buf), n+maxRead)])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

func (o *ObjectStore) putRequestHeaders() (sse, kms *string, class oss.StorageClassType) {
	if o.cfg.sse != "" {
		sse = oss.Ptr(o.cfg.sse)
	}
	if o.cfg.kmsKeyID != "" {
		kms = oss.Ptr(o.cfg.kmsKeyID)
	}
	return sse, kms, oss.StorageClassType(o.cfg.storageClass)
}

// chunk is one part's worth of body, read ahead of sending.
type chunk struct {
	buf  []byte
	n    int
	last bool // the body ended with this chunk
}

// readChunk fills the next pooled buffer from body.
func readChunk(ctx context.Context, pool *partPool, body io.Reader) (chunk, error) {
	buf, err := pool.get(ctx)
	if err != nil {
		return chunk{}, err
	}
	n, err := fill(body, buf)
	if err != nil && !errors.Is(err, io.EOF) {
		pool.put(buf)
		return chunk{}, &bodyReadError{err}
	}
	return chunk{buf: buf, n: n, last: err != nil}, nil
}

func (o *ObjectStore) upload(ctx context.Context, bucket, key string, body io.Reader) error {
	pool := newPartPool(o.cfg.partSize, o.cfg.concurrency+1)
	first, err := readChunk(ctx, pool, body)
	if err != nil {
		return err
	}
	if first.last {
		defer pool.put(first.buf)
		return o.putSingle(ctx, bucket, key, first.buf[:first.n])
	}
	// A full first part: only the next read tells whether the body ends here
	// (a body of exactly one part still goes as a single PutObject).
	second, err := readChunk(ctx, pool, body)
	if err != nil {
		pool.put(first.buf)
		return err
	}
	if second.n == 0 {
		pool.put(second.buf)
		defer pool.put(first.buf)
		return o.putSingle(ctx, bucket, key, first.buf[:first.n])
	}
	return o.putMultipart(ctx, bucket, key, body, pool, []chunk{first, second})
}

func (o *ObjectStore) putSingle(ctx context.Context, bucket, key string, data []byte) error {
	sse, kms, class := o.putRequestHeaders()
	// bytes.Reader is seekable, so the SDK can retry.
	res, err := o.client.PutObject(ctx, &oss.PutObjectRequest{
		Bucket:                    oss.Ptr(bucket),
		Key:                       oss.Ptr(key),
		Body:                      bytes.NewReader(data),
		ServerSideEncryption:      sse,
		ServerSideEncryptionKeyId: kms,
		StorageClass:              class,
	})
	if err != nil {
		return err
	}
	if err := checkCRC(res.HashCRC64, crc64ecma.Checksum(data)); err != nil {
		// A single PutObject replaced the key at once: remove what it left
		// rather than a corrupt object at the key.
		o.deleteCorrupt(ctx, bucket, key)
		return fmt.Errorf("%w; object deleted", err)
	}
	return nil
}

// checkCRC compares the CRC-64 OSS reports for what it stored with the one
// computed over the bytes sent. The SDK's own check is off (see
// newOSSClient): it hashes with hash/crc64, several times slower than
// crc64ecma, and every uploaded byte goes through it.
func checkCRC(reported *string, sent uint64) error {
	got := oss.ToString(reported)
	if got == "" || got == strconv.FormatUint(sent, 10) {
		return nil
	}
	return fmt.Errorf("CRC64 OSS stored (%s) does not match the data sent (%d)", got, sent)
}

// deleteCorrupt removes an object whose stored content does not match what
// was sent, with a fresh deadline: the caller's context may be done.
func (o *ObjectStore) deleteCorrupt(ctx context.Context, bucket, key string) {
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), o.cfg.requestTimeout)
	defer cancel()
	if _, err := o.client.DeleteObject(dctx, &oss.DeleteObjectRequest{Bucket: oss.Ptr(bucket), Key: oss.Ptr(key)}); err != nil {
		o.log.WithError(o.wrapErr("DeleteObject", bucket, key, err)).Error("Cannot delete OSS object whose CRC64 does not match what was uploaded")
	}
}

type uploadedPart struct {
	number int32
	etag   *string
	crc    uint64
	size   int
}

func (o *ObjectStore) putMultipart(ctx context.Context, bucket, key string, body io.Reader, pool *partPool, readAhead []chunk) (retErr error) {
	log := o.log.WithField("bucket", bucket).WithField("key", key)
	sse, kms, class := o.putRequestHeaders()

	initCtx, cancelInit := context.WithTimeout(ctx, o.cfg.requestTimeout)
	initRes, err := o.client.InitiateMultipartUpload(initCtx, &oss.InitiateMultipartUploadRequest{
		Bucket:                    oss.Ptr(bucket),
		Key:                       oss.Ptr(key),
		ServerSideEncryption:      sse,
		ServerSideEncryptionKeyId: kms,
		StorageClass:              class,
	})
	cancelInit()
	if err != nil {
		for _, c := range readAhead {
			pool.put(c.buf)
		}
		return err
	}
	uploadID := oss.ToString(initRes.UploadId)
	log = log.WithField("uploadId", uploadID)
	log.Debug("Started OSS multipart upload")

	defer func() {
		if retErr != nil {
			o.abortUpload(ctx, bucket, key, uploadID, retErr)
		}
	}()

	// A failed part stops the producer but not the parts in flight: they
	// finish (or fail) first, so the abort never races a part still arriving
	// at OSS. Only the caller's own deadline cuts them short.
	pctx, stopProducer := context.WithCancel(ctx)
	defer stopProducer()

	var (
		mu       sync.Mutex
		firstErr error
		parts    []uploadedPart
		wg       sync.WaitGroup
	)
	fail := func(err error) {
		mu.Lock()
		if firstErr == nil {
			firstErr = err
		}
		mu.Unlock()
		stopProducer()
	}
	failed := func() error {
		mu.Lock()
		defer mu.Unlock()
		return firstErr
	}

	type job struct {
		number int32
		buf    []byte
		n      int
	}
	jobs := make(chan job)
	for i := 0; i < o.cfg.concurrency; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				if failed() == nil {
					data := j.buf[:j.n]
					res, err := o.client.UploadPart(ctx, &oss.UploadPartRequest{
						Bucket:     oss.Ptr(bucket),
						Key:        oss.Ptr(key),
						UploadId:   oss.Ptr(uploadID),
						PartNumber: j.number,
						Body:       bytes.NewReader(data),
					})
					var crc uint64
					if err == nil {
						crc = crc64ecma.Checksum(data)
						err = checkCRC(res.HashCRC64, crc)
					}
					if err != nil {
						fail(fmt.Errorf("part %d: %w", j.number, err))
					} else {
						p := uploadedPart{number: j.number, etag: res.ETag, crc: crc, size: j.n}
						mu.Lock()
						parts = append(parts, p)
						mu.Unlock()
					}
				}
				pool.put(j.buf)
			}
		}()
	}

	// Producer: the caller's goroutine reads the body one part at a time.
	send := func(j job) bool {
		select {
		case jobs <- j:
			return true
		case <-pctx.Done():
			pool.put(j.buf)
			return false
		}
	}
	next := func() (chunk, error) {
		if len(readAhead) > 0 {
			c := readAhead[0]
			readAhead = readAhead[1:]
			return c, nil
		}
		return readChunk(pctx, pool, body)
	}
	var readErr error
	for number := int32(1); ; number++ {
		c, err := next()
		if err != nil {
			readErr = err
			break
		}
		if c.n == 0 { // the body ended exactly on a part boundary
			pool.put(c.buf)
			break
		}
		if number > oss.MaxUploadParts {
			pool.put(c.buf)
			readErr = fmt.Errorf("body exceeds %d parts of %d MiB; raise config key %q", oss.MaxUploadParts, o.cfg.partSize>>20, ConfigPartSizeMiB)
			break
		}
		if !send(job{number: number, buf: c.buf, n: c.n}) {
			readErr = context.Cause(pctx)
			break
		}
		if c.last {
			break
		}
	}
	for _, c := range readAhead { // left unsent after a failure
		pool.put(c.buf)
	}
	close(jobs)
	wg.Wait()

	// A worker's OSS error explains a cancelled producer better than "context canceled".
	if err := failed(); err != nil {
		return err
	}
	if readErr != nil {
		return readErr
	}

	sort.Slice(parts, func(i, j int) bool { return parts[i].number < parts[j].number })
	complete := &oss.CompleteMultipartUpload{}
	var crc uint64
	for _, p := range parts {
		complete.Parts = append(complete.Parts, oss.UploadPart{PartNumber: p.number, ETag: p.etag})
		crc = oss.CRC64Combine(crc, p.crc, uint64(p.size))
	}
	cctx, cancelComplete := context.WithTimeout(ctx, o.cfg.requestTimeout)
	defer cancelComplete()
	res, err := o.client.CompleteMultipartUpload(cctx, &oss.CompleteMultipartUploadRequest{
		Bucket:                  oss.Ptr(bucket),
		Key:                     oss.Ptr(key),
		UploadId:                oss.Ptr(uploadID),
		CompleteMultipartUpload: complete,
	})
	if err != nil {
		return err
	}
	if err := checkCRC(res.HashCRC64, crc); err != nil {
		// The object now exists with the wrong content: remove it rather than
		// leave a corrupt backup at the key.
		o.deleteCorrupt(ctx, bucket, key)
		return fmt.Errorf("completed object: %w; object deleted", err)
	}
	log.WithField("parts", len(parts)).Debug("Completed OSS multipart upload")
	return nil
}

// abortUpload runs with a fresh deadline: the caller's context may be the
// very thing that expired, and an abort that never runs leaves billed parts.
func (o *ObjectStore) abortUpload(ctx context.Context, bucket, key, uploadID string, cause error) {
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), o.cfg.requestTimeout)
	defer cancel()
	log := o.log.WithField("bucket", bucket).WithField("key", key).WithField("uploadId", uploadID)
	_, err := o.client.AbortMultipartUpload(actx, &oss.AbortMultipartUploadRequest{
		Bucket:   oss.Ptr(bucket),
		Key:      oss.Ptr(key),
		UploadId: oss.Ptr(uploadID),
	})
	if err != nil && !isCode(err, "NoSuchUpload") { // a retried abort may find it already gone
		log.WithError(o.wrapErr("AbortMultipartUpload", bucket, key, err)).Error("Cannot abort failed OSS multipart upload; its parts remain until a lifecycle rule removes them")
		return
	}
	log.WithField("cause", o.secrets.redact(cause.Error())).Warn("Aborted failed OSS multipart upload")
}

// partPool hands out at most max part buffers, allocated on first use, so an
// upload holds at most max*partSize bytes whatever the body length.
type partPool struct {
	size  int64
	free  chan []byte
	slots chan struct{}
}

func newPartPool(size int64, max int) *partPool {
	p := &partPool{size: size, free: make(chan []byte, max), slots: make(chan struct{}, max)}
	for i := 0; i < max; i++ {
		p.slots <- struct{}{}
	}
	return p
}

func (p *partPool) get(ctx context.Context) ([]byte, error) {
	select {
	case b := <-p.free:
		return b, nil
	default:
	}
	select {
	case b := <-p.free:
		return b, nil
	case <-p.slots:
		return make([]byte, p.size), nil
	case <-ctx.Done():
		return nil, context.Cause(ctx)
	}
}

func (p *partPool) put(b []byte) {
	if b != nil {
		p.free <- b[:cap(b)]
	}
}
