package osslocal

import (
	"crypto/md5"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/velero-etcd/velero-plugin-for-etcd/internal/crc64ecma"
)

// On-disk layout under Config.DataDir:
//
//	tmp/                                        files being written; emptied at start
//	buckets/<bucket>/objects/<sha256(key)>.json  object metadata, the commit point
//	buckets/<bucket>/objects/<sha256(key)>.<nonce>.data  (single PutObject)
//	buckets/<bucket>/objects/<sha256(key)>.<nonce>.p<N>.data  (multipart: the parts, in order)
//	buckets/<bucket>/uploads/<uploadID>/upload.json
//	buckets/<bucket>/uploads/<uploadID>/part-<N>.json and part-<N>.<nonce>.data
//
// Keys never become path components (only their SHA-256 does), so no key can
// escape DataDir. Data is written to tmp/, fsynced and renamed into place; the
// metadata JSON is renamed last, so a crash leaves at most an unreferenced
// data file, which the next start removes. A completed multipart upload keeps
// its parts as the object's segments rather than copying them into one file:
// completing a 1 GiB upload then costs an fsync and a few renames, not a
// second gigabyte of writes.

var bucketNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$`)

type objectMeta struct {
	Key          string            `json:"key"`
	Size         int64             `json:"size"`
	ETag         string            `json:"etag"` // upper-case hex MD5, or "HEX-N" for multipart
	CRC64        uint64            `json:"crc64"`
	ContentType  string            `json:"contentType"`
	LastModified time.Time         `json:"lastModified"`
	Type         string            `json:"type"`               // Normal or Multipart
	UserMeta     map[string]string `json:"userMeta,omitempty"` // lower-case x-oss-meta-* -> value
	Headers      map[string]string `json:"headers,omitempty"`  // Content-Disposition and friends
	DataFile     string            `json:"dataFile,omitempty"`
	Segments     []segment         `json:"segments,omitempty"` // multipart: the parts' data, in order
}

type segment struct {
	DataFile string `json:"dataFile"`
	Size     int64  `json:"size"`
}

// dataFiles names every file that holds the object's bytes, in order.
func (m *objectMeta) dataFiles() []string {
	if len(m.Segments) == 0 {
		return []string{m.DataFile}
	}
	names := make([]string, len(m.Segments))
	for i, seg := range m.Segments {
		names[i] = seg.DataFile
	}
	return names
}

// segments is the object's layout on disk, one entry per data file.
func (m *objectMeta) segments() []segment {
	if len(m.Segments) == 0 {
		return []segment{{DataFile: m.DataFile, Size: m.Size}}
	}
	return m.Segments
}

type partMeta struct {
	Number       int       `json:"number"`
	Size         int64     `json:"size"`
	ETag         string    `json:"etag"`
	CRC64        uint64    `json:"crc64"`
	LastModified time.Time `json:"lastModified"`
	DataFile     string    `json:"dataFile"`
}

type upload struct {
	ID          string            `json:"id"`
	Bucket      string            `json:"bucket"`
	Key         string            `json:"key"`
	Initiated   time.Time         `json:"initiated"`
	ContentType string            `json:"contentType"`
	UserMeta    map[string]string `json:"userMeta,omitempty"`
	Headers     map[string]string `json:"headers,omitempty"`

	parts map[int]*partMeta
	dir   string
}

type bucket struct {
	name    string
	dir     string
	objects map[string]*objectMeta
	uploads map[string]*upload
}

func (b *bucket) objectDir() string { return filepath.Join(b.dir, "objects") }

func keyHash(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:])
}

func randomHex(n int) string {
	buf := make([]byte, n)
	if _, err := rand.Read(buf); err != nil {
		panic(err)
	}
	return hex.EncodeToString(buf)
}

// loadBucket creates the bucket directories if needed and indexes what is there.
func (s *Server) loadBucket(name string) (*bucket, error) {
	b := &bucket{
		name:    name,
		dir:     filepath.Join(s.dataDir, "buckets", name),
		objects: map[string]*objectMeta{},
		uploads: map[string]*upload{},
	}
	if err := os.MkdirAll(b.objectDir(), 0o755); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(b.dir, "uploads"), 0o755); err != nil {
		return nil, err
	}
	entries, err := os.ReadDir(b.objectDir())
	if err != nil {
		return nil, err
	}
	referenced := map[string]bool{}
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		var m objectMeta
		if err := readJSON(filepath.Join(b.objectDir(), e.Name()), &m); err != nil {
			return nil, fmt.Errorf("load object metadata %s: %w", e.Name(), err)
		}
		b.objects[m.Key] = &m
		for _, name := range m.dataFiles() {
			referenced[name] = true
		}
	}
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".data") && !referenced[e.Name()] {
			_ = os.Remove(filepath.Join(b.objectDir(), e.Name()))
		}
	}
	ups, err := os.ReadDir(filepath.Join(b.dir, "uploads"))
	if err != nil {
		return nil, err
	}
	for _, e := range ups {
		u, err := loadUpload(filepath.Join(b.dir, "uploads", e.Name()))
		if err != nil {
			return nil, fmt.Errorf("load upload %s: %w", e.Name(), err)
		}
		if u != nil {
			b.uploads[u.ID] = u
		}
	}
	return b, nil
}

func loadUpload(dir string) (*upload, error) {
	var u upload
	if err := readJSON(filepath.Join(dir, "upload.json"), &u); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			// Initiation never committed.
			return nil, os.RemoveAll(dir)
		}
		return nil, err
	}
	u.dir = dir
	u.parts = map[int]*partMeta{}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	referenced := map[string]bool{}
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), "part-") || !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		var p partMeta
		if err := readJSON(filepath.Join(dir, e.Name()), &p); err != nil {
			return nil, err
		}
		u.parts[p.Number] = &p
		referenced[p.DataFile] = true
	}
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".data") && !referenced[e.Name()] {
			_ = os.Remove(filepath.Join(dir, e.Name()))
		}
	}
	return &u, nil
}

func readJSON(path string, v any) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	return json.Unmarshal(data, v)
}

// tempFile is a file being written under tmp/ with its digests.
type tempFile struct {
	path string
	size int64
	md5  []byte
	crc  uint64
}

func (t *tempFile) etag() string { return strings.ToUpper(hex.EncodeToString(t.md5)) }

func (t *tempFile) discard() {
	if t != nil && t.path != "" {
		_ = os.Remove(t.path)
	}
}

// writeTemp streams r to a new file under tmp/, fsyncs it (unless the server
// runs without fsync), and returns its digests. On error the file is removed.
func (s *Server) writeTemp(r io.Reader) (*tempFile, error) {
	f, err := os.CreateTemp(s.tmpDir, "put-*")
	if err != nil {
		return nil, err
	}
	t := &tempFile{path: f.Name()}
	md := md5.New()
	crc := crc64ecma.New()
	n, err := io.Copy(io.MultiWriter(f, md, crc), r)
	if err == nil && s.fsync {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.discard()
		return nil, err
	}
	t.size, t.md5, t.crc = n, md.Sum(nil), crc.Sum64()
	return t, nil
}

// writeJSONFile writes v to path atomically (temp file, fsync, rename).
func (s *Server) writeJSONFile(path string, v any) error {
	tmp, err := s.writeTempJSON(v)
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = os.Remove(tmp)
		return err
	}
	return nil
}

// writeTempJSON writes v to a new synced file under tmp/ and returns its
// path, for the caller to rename into place as its commit point.
func (s *Server) writeTempJSON(v any) (string, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return "", err
	}
	f, err := os.CreateTemp(s.tmpDir, "meta-*")
	if err != nil {
		return "", err
	}
	_, err = f.Write(data)
	if err == nil && s.fsync {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(f.Name())
		return "", err
	}
	return f.Name(), nil
}

func (s *Server) syncDir(dir string) {
	if !s.fsync {
		return
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
}

// commitObject moves a finished temp file into place as object m and makes it
// visible. The metadata rename, under s.mu, is the commit point.
func (s *Server) commitObject(b *bucket, m *objectMeta, t *tempFile) error {
	return s.commitFiles(b, m, []string{t.path})
}

// commitFiles moves the files holding m's bytes into the object directory,
// then commits m. One path becomes m.DataFile; several become m.Segments,
// whose sizes the caller has set. On failure every moved file is removed.
func (s *Server) commitFiles(b *bucket, m *objectMeta, paths []string) error {
	base := keyHash(m.Key)
	nonce := randomHex(8)
	var moved []string
	undo := func() {
		for _, p := range moved {
			_ = os.Remove(p)
		}
	}
	for i, src := range paths {
		name := base + "." + nonce + ".data"
		if len(m.Segments) > 0 {
			name = fmt.Sprintf("%s.%s.p%05d.data", base, nonce, i+1)
			m.Segments[i].DataFile = name
		} else {
			m.DataFile = name
		}
		dst := filepath.Join(b.objectDir(), name)
		if err := os.Rename(src, dst); err != nil {
			undo()
			for _, rest := range paths[i:] {
				_ = os.Remove(rest)
			}
			return err
		}
		moved = append(moved, dst)
	}
	metaTmp, err := s.writeTempJSON(m)
	if err != nil {
		undo()
		return err
	}
	s.mu.Lock()
	err = os.Rename(metaTmp, filepath.Join(b.objectDir(), base+".json"))
	var old *objectMeta
	if err == nil {
		old = b.objects[m.Key]
		b.objects[m.Key] = m
	}
	s.mu.Unlock()
	if err != nil {
		_ = os.Remove(metaTmp)
		undo()
		return err
	}
	s.syncDir(b.objectDir())
	if old != nil {
		s.removeData(b, old)
	}
	return nil
}

// removeData deletes the files of an object that is no longer referenced.
func (s *Server) removeData(b *bucket, m *objectMeta) {
	for _, name := range m.dataFiles() {
		_ = os.Remove(filepath.Join(b.objectDir(), name))
	}
}

// deleteObject removes key; a missing key is not an error.
func (s *Server) deleteObject(b *bucket, key string) error {
	s.mu.Lock()
	m := b.objects[key]
	if m == nil {
		s.mu.Unlock()
		return nil
	}
	err := os.Remove(filepath.Join(b.objectDir(), keyHash(key)+".json"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		s.mu.Unlock()
		return err
	}
	delete(b.objects, key)
	s.mu.Unlock()
	s.removeData(b, m)
	return nil
}
