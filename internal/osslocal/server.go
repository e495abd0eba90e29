// Package osslocal is a local Alibaba Cloud OSS-compatible server for tests,
// the demo and benchmarks. It speaks the OSS REST API that the official
// clients use (path- and virtual-host-style addressing, V1 and V4 signatures
// in headers and presigned URLs), keeps objects on disk and verifies every
// signature for real.
package osslocal

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

const headerRequestID = "x-oss-request-id"

// Config configures a Server.
type Config struct {
	DataDir     string            // objects, parts and temp files live here (on disk, never whole objects in memory)
	Credentials map[string]string // AccessKeyID -> AccessKeySecret
	Buckets     []string          // created at start (existing data in DataDir is kept)
	Logger      *log.Logger       // nil = discard; one line per request, never secrets or signatures
}

// Server is an http.Handler serving the OSS API.
type Server struct {
	dataDir string
	tmpDir  string
	creds   map[string]string
	logger  *log.Logger
	fsync   bool

	mu      sync.RWMutex
	buckets map[string]*bucket

	faultMu sync.Mutex
	faults  []*activeFault

	countMu sync.Mutex
	counts  map[string]int

	reqSeq atomic.Uint64
}

// New opens (or creates) DataDir, creates the configured buckets and indexes
// the objects and multipart uploads already on disk.
func New(cfg Config) (*Server, error) {
	if cfg.DataDir == "" {
		return nil, errors.New("osslocal: DataDir is required")
	}
	if len(cfg.Credentials) == 0 {
		return nil, errors.New("osslocal: at least one credential is required")
	}
	dataDir, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		return nil, fmt.Errorf("osslocal: data dir: %w", err)
	}
	s := &Server{
		dataDir: dataDir,
		tmpDir:  filepath.Join(dataDir, "tmp"),
		creds:   map[string]string{},
		logger:  cfg.Logger,
		fsync:   true,
		buckets: map[string]*bucket{},
		counts:  map[string]int{},
	}
	for k, v := range cfg.Credentials {
		s.creds[k] = v
	}
	// Leftovers in tmp/ are writes that never committed.
	if err := os.RemoveAll(s.tmpDir); err != nil {
		return nil, fmt.Errorf("osslocal: clean %s: %w", s.tmpDir, err)
	}
	if err := os.MkdirAll(s.tmpDir, 0o755); err != nil {
		return nil, fmt.Errorf("osslocal: create %s: %w", s.tmpDir, err)
	}
	names := map[string]bool{}
	if entries, err := os.ReadDir(filepath.Join(dataDir, "buckets")); err == nil {
		for _, e := range entries {
			if e.IsDir() && bucketNameRE.MatchString(e.Name()) {
				names[e.Name()] = true
			}
		}
	}
	for _, name := range cfg.Buckets {
		if !bucketNameRE.MatchString(name) {
			return nil, fmt.Errorf("osslocal: invalid bucket name %q", name)
		}
		names[name] = true
	}
	for name := range names {
		b, err := s.loadBucket(name)
		if err != nil {
			return nil, fmt.Errorf("osslocal: load bucket %s: %w", name, err)
		}
		s.buckets[name] = b
	}
	return s, nil
}

// PendingUploads is the number of multipart uploads in bucket that were
// initiated but neither completed nor aborted.
func (s *Server) PendingUploads(bucket string) int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if b := s.buckets[bucket]; b != nil {
		return len(b.uploads)
	}
	return 0
}

// RequestCount is the number of requests seen for an operation name such as
// "PutObject", whether or not they succeeded.
func (s *Server) RequestCount(op string) int {
	s.countMu.Lock()
	defer s.countMu.Unlock()
	return s.counts[op]
}

// request is what routing found out about one request.
type request struct {
	op     string
	bucket string
	key    string
	query  url.Values
}

// statusWriter records the status for the request log; it keeps the
// Flusher and Hijacker of the underlying writer, which faults need.
type statusWriter struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(p)
	w.bytes += int64(n)
	return n, err
}

func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *statusWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	hj, ok := w.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, errors.New("hijack not supported")
	}
	w.status = -1 // connection reset
	return hj.Hijack()
}

// ServeHTTP serves one OSS API request.
func (s *Server) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	start := time.Now()
	w := &statusWriter{ResponseWriter: rw}
	w.Header().Set(headerRequestID, s.newRequestID())
	w.Header().Set("Server", "AliyunOSS")
	w.Header().Set("Date", time.Now().UTC().Format(http.TimeFormat))

	req, rerr := s.route(r)
	if req != nil {
		s.countMu.Lock()
		s.counts[req.op]++
		s.countMu.Unlock()
	}
	op := "Unknown"
	if req != nil {
		op = req.op
	}
	defer func() {
		if s.logger != nil {
			status := fmt.Sprint(w.status)
			if w.status == -1 {
				status = "reset"
			}
			// Only the path: the query may carry a presigned signature.
			s.logger.Printf("%s %s op=%s status=%s duration=%s", r.Method, r.URL.Path, op, status, time.Since(start).Round(time.Microsecond))
		}
	}()
	if rerr != nil {
		drainBody(r)
		writeError(w, r, rerr)
		return
	}
	if aerr := s.authenticate(r, req); aerr != nil {
		drainBody(r)
		writeError(w, r, aerr)
		return
	}
	if f := s.takeFault(req.op); f != nil {
		if f.Latency > 0 {
			select {
			case <-time.After(f.Latency):
			case <-r.Context().Done():
				return
			}
		}
		if f.ResetAfter > 0 && req.op != "GetObject" {
			s.resetAfterReading(w, r, f.ResetAfter)
			return
		}
		if f.Status != 0 || f.Code != "" {
			status, code := f.Status, f.Code
			if status == 0 {
				status = http.StatusInternalServerError
			}
			if code == "" {
				code = "InternalError"
			}
			drainBody(r)
			writeError(w, r, newError(status, code, "injected fault"))
			return
		}
		if f.ResetAfter > 0 {
			s.getObject(w, r, req, f.ResetAfter)
			return
		}
		if f.CorruptBody {
			r.Body = &flipFirstBit{ReadCloser: r.Body}
		}
	}
	s.dispatch(w, r, req)
}

func (s *Server) dispatch(w http.ResponseWriter, r *http.Request, req *request) {
	switch req.op {
	case "PutObject":
		s.putObject(w, r, req)
	case "GetObject":
		s.getObject(w, r, req, 0)
	case "HeadObject", "GetObjectMeta":
		s.headObject(w, r, req)
	case "DeleteObject":
		s.deleteObjectOp(w, r, req)
	case "ListObjectsV2", "ListObjects":
		s.listObjects(w, r, req)
	case "DeleteMultipleObjects":
		s.deleteMultiple(w, r, req)
	case "InitiateMultipartUpload":
		s.initiateMultipart(w, r, req)
	case "UploadPart":
		s.uploadPart(w, r, req)
	case "CompleteMultipartUpload":
		s.completeMultipart(w, r, req)
	case "AbortMultipartUpload":
		s.abortMultipart(w, r, req)
	case "ListParts":
		s.listParts(w, r, req)
	case "GetBucketInfo":
		s.getBucketInfo(w, r, req)
	case "GetBucketAcl":
		s.getBucketACL(w, r, req)
	default:
		writeError(w, r, newError(http.StatusNotImplemented, "NotImplemented", "operation not implemented"))
	}
}

func (s *Server) newRequestID() string {
	return fmt.Sprintf("%016X%08X", time.Now().UnixNano(), uint32(s.reqSeq.Add(1)))
}

// drainBody reads a little of an unused request body so that the connection
// can be reused; larger bodies close the connection instead.
func drainBody(r *http.Request) {
	_, _ = io.CopyN(io.Discard, r.Body, 256<<10)
}

// route finds the bucket, key and operation of r.
func (s *Server) route(r *http.Request) (*request, *ossError) {
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return nil, errInvalidArgument("malformed query string")
	}
	req := &request{query: q}
	path := r.URL.Path
	// Virtual-host style when the Host names an existing bucket, unless the
	// path repeats that bucket: ali-oss with an IP endpoint and sldEnable
	// sends Host "<bucket>.oss-<region>.aliyuncs.com" with a path-style path.
	// (So a virtual-host request for the key "<bucket>/..." is misread.)
	if host := virtualHostBucket(r.Host); host != "" && s.hasBucket(host) &&
		path != "/"+host && !strings.HasPrefix(path, "/"+host+"/") {
		req.bucket = host
		req.key = strings.TrimPrefix(path, "/")
	} else {
		rest := strings.TrimPrefix(path, "/")
		req.bucket, req.key, _ = strings.Cut(rest, "/")
	}
	has := func(k string) bool { _, ok := q[k]; return ok }
	switch {
	case req.bucket == "":
		req.op = "ListBuckets"
	case req.key == "":
		switch {
		case r.Method == http.MethodPost && has("delete"):
			req.op = "DeleteMultipleObjects"
		case r.Method == http.MethodGet && has("bucketInfo"):
			req.op = "GetBucketInfo"
		case r.Method == http.MethodGet && has("acl"):
			req.op = "GetBucketAcl"
		case r.Method == http.MethodGet && q.Get("list-type") == "2":
			req.op = "ListObjectsV2"
		case r.Method == http.MethodGet && len(subresources(q)) == 0:
			req.op = "ListObjects"
		default:
			req.op = "Bucket" + r.Method
		}
	default:
		switch r.Method {
		case http.MethodPut:
			switch {
			case has("uploadId") || has("partNumber"):
				req.op = "UploadPart"
			case r.Header.Get("x-oss-copy-source") != "":
				req.op = "CopyObject"
			case len(subresources(q)) > 0:
				req.op = "Object" + r.Method
			default:
				req.op = "PutObject"
			}
		case http.MethodGet:
			switch {
			case has("uploadId"):
				req.op = "ListParts"
			case len(subresources(q)) > 0:
				req.op = "Object" + r.Method
			default:
				req.op = "GetObject"
			}
		case http.MethodHead:
			if has("objectMeta") {
				req.op = "GetObjectMeta"
			} else {
				req.op = "HeadObject"
			}
		case http.MethodDelete:
			if has("uploadId") {
				req.op = "AbortMultipartUpload"
			} else {
				req.op = "DeleteObject"
			}
		case http.MethodPost:
			switch {
			case has("uploads"):
				req.op = "InitiateMultipartUpload"
			case has("uploadId"):
				req.op = "CompleteMultipartUpload"
			default:
				req.op = "Object" + r.Method
			}
		default:
			req.op = "Object" + r.Method
		}
	}
	return req, nil
}

// subresources lists query parameters naming an operation this server does
// not implement (ACL, tagging, ...), so those are not taken for a plain GET/PUT.
func subresources(q url.Values) []string {
	var out []string
	for k := range q {
		if _, ok := unsupportedSubresources[k]; ok {
			out = append(out, k)
		}
	}
	return out
}

var unsupportedSubresources = map[string]struct{}{
	"acl": {}, "tagging": {}, "symlink": {}, "append": {}, "restore": {}, "versions": {}, "versioning": {},
	"cors": {}, "lifecycle": {}, "logging": {}, "website": {}, "referer": {}, "policy": {}, "stat": {},
	"location": {}, "encryption": {}, "worm": {}, "inventory": {}, "replication": {}, "uploads": {},
}

// virtualHostBucket is the first label of a host name, or "" for an IP address.
func virtualHostBucket(host string) string {
	h := host
	if hh, _, err := net.SplitHostPort(host); err == nil {
		h = hh
	}
	if net.ParseIP(strings.Trim(h, "[]")) != nil {
		return ""
	}
	label, rest, ok := strings.Cut(h, ".")
	if !ok || rest == "" {
		return ""
	}
	return label
}

func (s *Server) hasBucket(name string) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.buckets[name] != nil
}

// bucketFor returns the bucket of req or NoSuchBucket.
func (s *Server) bucketFor(req *request) (*bucket, *ossError) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	b := s.buckets[req.bucket]
	if b == nil {
		return nil, errNoSuchBucket()
	}
	return b, nil
}
