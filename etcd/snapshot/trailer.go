package snapshot

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
)

// etcd appends the sha256 of the database to the snapshot stream; a trailer is
// present when size%512 == 32 (the database is a whole number of pages).
const trailerSize = sha256.Size

var (
	// ErrMissingTrailer means the stream ended without etcd's sha256 trailer
	// (truncated stream, or not an etcd snapshot).
	ErrMissingTrailer = errors.New("etcd snapshot has no sha256 trailer")
	// ErrTrailerMismatch means the bytes do not hash to etcd's sha256 trailer.
	ErrTrailerMismatch = errors.New("etcd snapshot sha256 trailer mismatch")
)

// trailerCheck hashes everything except the last 32 bytes seen so far, which it
// holds back as the candidate trailer. Bytes are never delayed for the caller:
// only the hashing lags 32 bytes behind.
type trailerCheck struct {
	db   hash.Hash // sha256 of the database part
	tail [trailerSize]byte
	n    int // bytes held in tail
	size int64
}

func newTrailerCheck() *trailerCheck { return &trailerCheck{db: sha256.New()} }

func (c *trailerCheck) Write(p []byte) (int, error) {
	c.size += int64(len(p))
	if len(p) >= trailerSize {
		c.db.Write(c.tail[:c.n])
		c.db.Write(p[:len(p)-trailerSize])
		c.n = copy(c.tail[:], p[len(p)-trailerSize:])
		return len(p), nil
	}
	if over := c.n + len(p) - trailerSize; over > 0 {
		c.db.Write(c.tail[:over])
		c.n = copy(c.tail[:], c.tail[over:c.n])
	}
	c.n += copy(c.tail[c.n:], p)
	return len(p), nil
}

// verify is called once the stream has ended.
func (c *trailerCheck) verify() error {
	if c.size < trailerSize || c.size%512 != trailerSize {
		return fmt.Errorf("%w (%d bytes)", ErrMissingTrailer, c.size)
	}
	if got := c.db.Sum(nil); !bytes.Equal(got, c.tail[:]) {
		return fmt.Errorf("%w: trailer %x, database hashes to %x (%d bytes)", ErrTrailerMismatch, c.tail[:], got, c.size)
	}
	return nil
}

// wholeSum is the sha256 of every byte written, trailer included: the
// database hash carried on over the trailer, so an uncompressed snapshot is
// hashed once rather than twice. Call it once, after verify.
func (c *trailerCheck) wholeSum() []byte {
	c.db.Write(c.tail[:c.n])
	c.n = 0
	return c.db.Sum(nil)
}

// VerifyReader passes r through and, at the end, checks etcd's sha256 trailer of
// the raw snapshot: instead of io.EOF it returns an error wrapping
// ErrMissingTrailer or ErrTrailerMismatch. Use it when restoring, after
// decompression, so that a damaged object is never restored silently.
func VerifyReader(r io.Reader) io.Reader { return &verifyReader{r: r, c: newTrailerCheck()} }

type verifyReader struct {
	r   io.Reader
	c   *trailerCheck
	err error
}

func (v *verifyReader) Read(p []byte) (int, error) {
	if v.err != nil {
		return 0, v.err
	}
	n, err := v.r.Read(p)
	v.c.Write(p[:n])
	if err == io.EOF {
		if verr := v.c.verify(); verr != nil {
			err = verr
		}
	}
	if err != nil {
		v.err = err
	}
	return n, err
}
