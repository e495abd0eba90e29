// Package keyspace reads the live keyspace of an etcd snapshot: every key
// that exists at the snapshot's revision, with its value and lease, in key
// order, plus the leases themselves. It knows nothing about where the
// snapshot came from or where the keys go.
//
// An etcd snapshot is a bbolt database, and bbolt needs a file: the stream is
// spooled into one temporary file (os.CreateTemp in TMPDIR), verified while it
// is written, opened read-only and unlinked at once, so the file's name is
// gone before the first key is read and its space is freed when the Snapshot
// is closed or the process dies.
package keyspace

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"math"
	"os"
	"slices"
	"strings"
	"syscall"
	"time"
	"unsafe"

	bolt "go.etcd.io/bbolt"
	"go.etcd.io/etcd/server/v3/lease/leasepb"
	"google.golang.org/protobuf/encoding/protowire"
)

// bbolt bucket names and the layout of mvcc revision keys, as written by
// etcd's storage/mvcc and storage/schema.
var (
	keyBucket   = []byte("key")
	leaseBucket = []byte("lease")
)

const (
	revBytesLen       = 8 + 1 + 8 // main, '_', sub
	markedRevBytesLen = revBytesLen + 1
	markTombstone     = 't'

	trailerLen = sha256.Size
	// etcd appends a sha256 of the db to a snapshot stream; the db is a
	// whole number of pages, so a trailer leaves size%512 == 32.
	trailerAlign = 512

	// dropEvery bounds how much of the mapped file stays resident while the
	// key bucket is scanned: after this many bytes, the mapping's pages are
	// released (clean file pages; they come back on the next touch).
	dropEvery = 64 << 20

	arenaChunk = 4 << 20
)

// Expect is what the caller knows about the stream from elsewhere.
type Expect struct {
	// SHA256 is the hex sha256 of the whole stream, trailer included (the
	// manifest's rawSHA256). Empty skips the check; the trailer is checked
	// regardless.
	SHA256 string
}

// Lease is a lease as stored in the snapshot.
type Lease struct {
	ID  int64
	TTL int64
}

// KV is one live key. Key and Value are valid only during the callback
// that receives them: copy what you keep.
type KV struct {
	Key, Value []byte
	Lease      int64
}

// Snapshot is an opened, verified snapshot.
type Snapshot struct {
	// Revision is the highest revision in the snapshot's key bucket.
	Revision int64
	// Keys and Bytes (sum of key and value lengths) count the live keys.
	Keys  int64
	Bytes int64
	// Leases are every lease in the snapshot, by ID.
	Leases []Lease
	// LargestKey and LargestSize describe the live key with the largest
	// len(key)+len(value), so a caller can refuse before writing anything.
	LargestKey  string
	LargestSize int
	// StreamSize is the size of the verified stream; StreamSHA256 its sha256.
	StreamSize   int64
	StreamSHA256 string

	db      *bolt.DB
	tx      *bolt.Tx
	file    *os.File // the unlinked spool file, for reads by offset
	index   []entry  // live keys, sorted by key
	arena   arena    // the index's key bytes
	mapped  int64
	summary *Summary
}

// Summary is what a full pass over the values yields.
type Summary struct {
	Keys       int64
	LeasedKeys int64
	Digest     string
}

// entry locates the latest revision of one key: the file offset and length
// of its mvccpb.KeyValue record, and where its key bytes are in the arena.
// It holds no pointer, so the collector never scans the index: with a
// million keys, a string per entry made garbage collection the restore's
// largest CPU cost.
type entry struct {
	off   int64
	chunk uint32 // arena chunk holding the key
	koff  uint32 // offset of the key in that chunk
	klen  uint32
	rlen  uint32
	vlen  uint32 // tombstone when == tombstoneLen
}

const tombstoneLen = math.MaxUint32

// Open spools r (a snapshot stream: db bytes and sha256 trailer) into a
// temporary file, verifying the trailer and want while writing, then opens
// the database read-only, unlinks the file and indexes the live keys.
// Nothing is returned from a stream that fails verification.
func Open(r io.Reader, want Expect) (*Snapshot, error) {
	f, err := os.CreateTemp("", "etcd-snapshot-*.db")
	if err != nil {
		return nil, fmt.Errorf("creating the snapshot spool file: %w", err)
	}
	path := f.Name()
	removed := false
	defer func() {
		if !removed {
			os.Remove(path)
		}
	}()
	s := &Snapshot{file: f}
	if err := spool(f, r, want, s); err != nil {
		f.Close()
		return nil, err
	}

	db, err := bolt.Open(path, 0o400, &bolt.Options{ReadOnly: true, Timeout: 10 * time.Second})
	// The mapping and descriptors keep the data; the name is not needed.
	os.Remove(path)
	removed = true
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("opening the snapshot database: %w", err)
	}
	s.db = db
	s.mapped = s.StreamSize - trailerLen
	if s.tx, err = db.Begin(false); err != nil {
		db.Close()
		f.Close()
		return nil, fmt.Errorf("reading the snapshot database: %w", err)
	}
	s.advise(syscall.MADV_SEQUENTIAL)
	if err := s.scan(); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// spool copies r into f without its trailer, hashing as it goes. Writes
// go straight to the file: they are already up to 1 MiB each, and a
// buffered writer would copy every byte once more.
func spool(f *os.File, r io.Reader, want Expect, s *Snapshot) error {
	dbHash := sha256.New()
	hb := &holdback{w: io.MultiWriter(f, dbHash)}
	n, err := io.CopyBuffer(hb, r, make([]byte, 1<<20))
	if err != nil {
		return fmt.Errorf("reading the snapshot: %w", err)
	}
	if hb.err != nil {
		return fmt.Errorf("writing the snapshot spool file: %w", hb.err)
	}
	if n < trailerLen || n%trailerAlign != trailerLen {
		return fmt.Errorf("snapshot is corrupt: %d bytes is not an etcd snapshot with a sha256 trailer", n)
	}
	dbSum := dbHash.Sum(nil)
	trailer := hb.held[:hb.n]
	if !bytes.Equal(trailer, dbSum) {
		return fmt.Errorf("snapshot is corrupt: sha256 trailer %x does not match the data's sha256 %x", trailer, dbSum)
	}
	dbHash.Write(trailer) // the stream's sha256 continues over the trailer
	s.StreamSize = n
	s.StreamSHA256 = hex.EncodeToString(dbHash.Sum(nil))
	if want.SHA256 != "" && !strings.EqualFold(want.SHA256, s.StreamSHA256) {
		return fmt.Errorf("snapshot is corrupt: sha256 %s, the manifest says %s", s.StreamSHA256, want.SHA256)
	}
	return nil
}

// holdback passes everything but the last trailerLen bytes written to it.
type holdback struct {
	w    io.Writer
	held [trailerLen]byte
	n    int
	err  error
}

func (h *holdback) Write(p []byte) (int, error) {
	if h.err != nil {
		return 0, h.err
	}
	total := h.n + len(p)
	if total <= trailerLen {
		h.n += copy(h.held[h.n:], p)
		return len(p), nil
	}
	emit := total - trailerLen
	fromHeld := min(emit, h.n)
	if fromHeld > 0 {
		if _, h.err = h.w.Write(h.held[:fromHeld]); h.err != nil {
			return 0, h.err
		}
	}
	fromP := emit - fromHeld
	if _, h.err = h.w.Write(p[:fromP]); h.err != nil {
		return 0, h.err
	}
	rest := copy(h.held[:], h.held[fromHeld:h.n])
	h.n = rest + copy(h.held[rest:], p[fromP:])
	return len(p), nil
}

// scan finds the latest revision of every key. The key bucket is ordered by
// revision, so the last entry seen for a key is its latest; a tombstone means
// the key did not exist at the snapshot's revision. Memory is one small entry
// per distinct key (plus the key bytes once), never the values.
func (s *Snapshot) scan() error {
	b := s.tx.Bucket(keyBucket)
	if b == nil {
		return errors.New("snapshot is corrupt: it has no mvcc key bucket")
	}
	latest := map[string]entry{}
	var sinceDrop int64
	c := b.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if len(k) != revBytesLen && len(k) != markedRevBytesLen || k[8] != '_' {
			return fmt.Errorf("snapshot is corrupt: key bucket entry %x is not a revision", k)
		}
		main := int64(binary.BigEndian.Uint64(k[:8]))
		sub := binary.BigEndian.Uint64(k[9:17])
		if main < 0 || len(v) >= math.MaxUint32 {
			return fmt.Errorf("snapshot is corrupt: revision %x out of range", k)
		}
		key, value, _, err := parseKeyValue(v)
		if err != nil {
			return fmt.Errorf("snapshot is corrupt: revision %d_%d: %w", main, sub, err)
		}
		vlen := uint32(len(value))
		if len(k) == markedRevBytesLen && k[revBytesLen] == markTombstone {
			vlen = tombstoneLen
		} else if len(value) >= tombstoneLen {
			return fmt.Errorf("snapshot is corrupt: revision %d_%d: value of %d bytes", main, sub, len(value))
		}
		e, ok := latest[string(key)]
		if !ok {
			e.chunk, e.koff = s.arena.add(key)
			e.klen = uint32(len(key))
		}
		e.off, e.rlen, e.vlen = s.offset(v), uint32(len(v)), vlen
		latest[s.arena.key(&e)] = e
		s.Revision = max(s.Revision, main)
		if sinceDrop += int64(len(k) + len(v)); sinceDrop > dropEvery {
			s.dropResident()
			sinceDrop = 0
		}
	}
	s.index = make([]entry, 0, len(latest))
	for _, e := range latest {
		if e.vlen == tombstoneLen {
			continue
		}
		s.index = append(s.index, e)
		size := int(e.klen) + int(e.vlen)
		s.Bytes += int64(size)
		if size > s.LargestSize {
			s.LargestKey, s.LargestSize = s.arena.key(&e), size
		}
	}
	clear(latest)
	slices.SortFunc(s.index, func(a, b entry) int { return strings.Compare(s.arena.key(&a), s.arena.key(&b)) })
	s.Keys = int64(len(s.index))
	s.dropResident()

	if lb := s.tx.Bucket(leaseBucket); lb != nil {
		err := lb.ForEach(func(k, v []byte) error {
			var l leasepb.Lease
			if err := l.Unmarshal(v); err != nil {
				return fmt.Errorf("snapshot is corrupt: lease %x: %w", k, err)
			}
			s.Leases = append(s.Leases, Lease{ID: l.ID, TTL: l.TTL})
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// Each calls fn for every live key from ordinal from on, in key order. The
// ordinal of a key is stable for a given snapshot, so a caller can resume.
func (s *Snapshot) Each(from int64, fn func(i int64, kv KV) error) error {
	var buf []byte
	for i := from; i < int64(len(s.index)); i++ {
		e := &s.index[i]
		ekey := s.arena.key(e)
		// Read with pread, not through the mapping: in key order the records
		// lie on random pages, and every fault on a mapping maps a whole
		// neighbourhood (fault-around, large folios), so the mapped file
		// would soon be resident in full.
		if cap(buf) < int(e.rlen) {
			buf = make([]byte, max(int(e.rlen), 64<<10))
		}
		rec := buf[:e.rlen]
		if _, err := s.file.ReadAt(rec, e.off); err != nil {
			return fmt.Errorf("reading key %q from the snapshot: %w", ekey, err)
		}
		key, value, lease, err := parseKeyValue(rec)
		if err != nil || string(key) != ekey {
			return fmt.Errorf("snapshot is corrupt: record of key %q at offset %d: %v", ekey, e.off, err)
		}
		if err := fn(i, KV{Key: key, Value: value, Lease: lease}); err != nil {
			return err
		}
	}
	return nil
}

// Summary returns the key count, leased key count and digest, reading every
// value once (the first time only).
func (s *Snapshot) Summary() (Summary, error) {
	if s.summary == nil {
		d := NewDigest()
		var leased int64
		err := s.Each(0, func(_ int64, kv KV) error {
			d.Add(kv.Key, kv.Value)
			if kv.Lease != 0 {
				leased++
			}
			return nil
		})
		if err != nil {
			return Summary{}, err
		}
		s.summary = &Summary{Keys: d.Count(), LeasedKeys: leased, Digest: d.Sum()}
	}
	return *s.summary, nil
}

// offset is the file offset of a slice bbolt returned from its mapping.
func (s *Snapshot) offset(v []byte) int64 {
	return int64(uintptr(unsafe.Pointer(unsafe.SliceData(v))) - s.db.Info().Data)
}

// SetSummary records a Summary computed by a caller's own full pass.
func (s *Snapshot) SetSummary(sm Summary) { s.summary = &sm }

// Key returns the key at ordinal i; the keys are sorted.
func (s *Snapshot) Key(i int64) string { return s.arena.key(&s.index[i]) }

// Close releases the database; the spool file's space goes with it.
func (s *Snapshot) Close() error {
	if s.db == nil {
		return nil
	}
	if s.tx != nil {
		s.tx.Rollback()
	}
	err := s.db.Close()
	s.file.Close()
	s.db, s.tx, s.file, s.index, s.arena = nil, nil, nil, nil, arena{}
	return err
}

// dropResident releases the mapped file's pages from this process's resident
// set. They are clean pages of a read-only mapping, so the data is unchanged:
// the kernel reads them back from the page cache on the next touch. Without
// this, reading a 1 GiB snapshot would leave 1 GiB resident.
func (s *Snapshot) dropResident() { s.advise(syscall.MADV_DONTNEED) }

// advise applies madvise to the whole mapping. bbolt exposes the mapping's
// address only as a uintptr; a raw syscall takes it as one, so no pointer is
// rebuilt from an integer. Errors are ignored: advice only changes memory use.
func (s *Snapshot) advise(advice int) {
	if s.db == nil || s.mapped <= 0 {
		return
	}
	page := int64(os.Getpagesize())
	length := (s.mapped + page - 1) / page * page
	_, _, _ = syscall.Syscall(syscall.SYS_MADVISE, s.db.Info().Data, uintptr(length), uintptr(advice))
}

// parseKeyValue reads the fields of an mvccpb.KeyValue that a restore needs,
// without copying: key (1), value (5), lease (6).
func parseKeyValue(b []byte) (key, value []byte, lease int64, err error) {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, nil, 0, fmt.Errorf("bad KeyValue: %w", protowire.ParseError(n))
		}
		b = b[n:]
		switch {
		case num == 1 && typ == protowire.BytesType:
			key, n = protowire.ConsumeBytes(b)
		case num == 5 && typ == protowire.BytesType:
			value, n = protowire.ConsumeBytes(b)
		case num == 6 && typ == protowire.VarintType:
			var l uint64
			l, n = protowire.ConsumeVarint(b)
			lease = int64(l)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return nil, nil, 0, fmt.Errorf("bad KeyValue: %w", protowire.ParseError(n))
		}
		b = b[n:]
	}
	if len(key) == 0 {
		return nil, nil, 0, errors.New("bad KeyValue: empty key")
	}
	return key, value, lease, nil
}

// arena holds key copies in large chunks: one allocation per 4 MiB rather
// than one per key, and entries refer to keys by chunk and offset.
type arena struct{ chunks [][]byte }

func (a *arena) add(b []byte) (chunk, off uint32) {
	n := len(a.chunks)
	if n == 0 || len(a.chunks[n-1])+len(b) > cap(a.chunks[n-1]) {
		a.chunks = append(a.chunks, make([]byte, 0, max(arenaChunk, len(b))))
		n++
	}
	c := a.chunks[n-1]
	a.chunks[n-1] = append(c, b...)
	return uint32(n - 1), uint32(len(c))
}

// key views e's key bytes as a string, without copying.
func (a *arena) key(e *entry) string {
	if e.klen == 0 {
		return ""
	}
	return unsafeString(a.chunks[e.chunk][e.koff : e.koff+e.klen])
}

// unsafeString views arena bytes as a string; the arena never changes bytes
// it has handed out.
func unsafeString(b []byte) string { return unsafe.String(&b[0], len(b)) }

// Digest is a SHA-256 over length-prefixed key and value pairs, added in
// ascending key order: the same for a snapshot and for a cluster holding the
// same keys and values, whatever the revisions.
type Digest struct {
	h   hash.Hash
	n   int64
	buf [8]byte
}

// NewDigest returns an empty digest.
func NewDigest() *Digest { return &Digest{h: sha256.New()} }

// Add adds one pair; pairs must come in ascending key order.
func (d *Digest) Add(key, value []byte) {
	binary.BigEndian.PutUint64(d.buf[:], uint64(len(key)))
	d.h.Write(d.buf[:])
	d.h.Write(key)
	binary.BigEndian.PutUint64(d.buf[:], uint64(len(value)))
	d.h.Write(d.buf[:])
	d.h.Write(value)
	d.n++
}

// Count is the number of pairs added.
func (d *Digest) Count() int64 { return d.n }

// Sum is the hex digest.
func (d *Digest) Sum() string { return hex.EncodeToString(d.h.Sum(nil)) }
