package osslocal

import (
	"bytes"
	"crypto/md5"
	"encoding/base64"
	"encoding/xml"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

const (
	maxKeyLength       = 1023
	defaultMaxKeys     = 100
	maxMaxKeys         = 1000
	maxPutObjectSize   = 5 << 30
	defaultContentType = "application/octet-stream"
)

// storedHeaders are standard headers kept with an object and returned on GET/HEAD.
var storedHeaders = []string{"Content-Disposition", "Content-Encoding", "Cache-Control", "Content-Language", "Expires"}

func validateKey(key string) *ossError {
	if key == "" || len(key) > maxKeyLength || !utf8.ValidString(key) {
		return newError(http.StatusBadRequest, "InvalidObjectName", "The specified object name is not valid.")
	}
	return nil
}

// objectAttrs collects content type, user metadata and stored headers of an
// upload request.
func objectAttrs(r *http.Request) (contentType string, userMeta, headers map[string]string) {
	contentType = r.Header.Get("Content-Type")
	if contentType == "" {
		contentType = defaultContentType
	}
	for k := range r.Header {
		if lk := strings.ToLower(k); strings.HasPrefix(lk, "x-oss-meta-") {
			if userMeta == nil {
				userMeta = map[string]string{}
			}
			userMeta[lk] = r.Header.Get(k)
		}
	}
	for _, k := range storedHeaders {
		if v := r.Header.Get(k); v != "" {
			if headers == nil {
				headers = map[string]string{}
			}
			headers[k] = v
		}
	}
	return contentType, userMeta, headers
}

// receiveBody streams the request body to a temp file and checks its length
// and Content-MD5. Objects and parts are both synced as they arrive, as OSS
// stores a part durably before acknowledging it: syncing a 1 GiB object's
// parts only at completion left the disk idle during the upload and then
// stalled the completion for over a second.
func (s *Server) receiveBody(r *http.Request, limit int64) (*tempFile, *ossError) {
	var wantMD5 []byte
	if v := r.Header.Get("Content-MD5"); v != "" {
		var err error
		if wantMD5, err = base64.StdEncoding.DecodeString(v); err != nil || len(wantMD5) != md5.Size {
			return nil, newError(http.StatusBadRequest, "InvalidDigest", "The Content-MD5 you specified is not valid.")
		}
	}
	if r.ContentLength > limit {
		return nil, newError(http.StatusBadRequest, "EntityTooLarge", "Your proposed upload exceeds the maximum allowed size.")
	}
	t, err := s.writeTemp(io.LimitReader(r.Body, limit+1))
	if err != nil {
		return nil, newError(http.StatusBadRequest, "IncompleteBody", "reading the request body: "+err.Error())
	}
	switch {
	case t.size > limit:
		t.discard()
		return nil, newError(http.StatusBadRequest, "EntityTooLarge", "Your proposed upload exceeds the maximum allowed size.")
	case r.ContentLength >= 0 && t.size != r.ContentLength:
		t.discard()
		return nil, newError(http.StatusBadRequest, "IncompleteBody", "You did not provide the number of bytes specified by the Content-Length HTTP header.")
	case wantMD5 != nil && !bytes.Equal(wantMD5, t.md5):
		t.discard()
		return nil, newError(http.StatusBadRequest, "InvalidDigest", "The Content-MD5 you specified did not match what we received.")
	}
	return t, nil
}

// objectTarget is the bucket of a request that names a new object, or nil
// after answering with the error when the bucket or the key is not usable.
func (s *Server) objectTarget(w http.ResponseWriter, r *http.Request, req *request) *bucket {
	b, e := s.bucketFor(req)
	if e == nil {
		e = validateKey(req.key)
	}
	if e != nil {
		drainBody(r)
		writeError(w, r, e)
		return nil
	}
	return b
}

func (s *Server) putObject(w http.ResponseWriter, r *http.Request, req *request) {
	b := s.objectTarget(w, r, req)
	if b == nil {
		return
	}
	t, e := s.receiveBody(r, maxPutObjectSize)
	if e != nil {
		writeError(w, r, e)
		return
	}
	ct, userMeta, headers := objectAttrs(r)
	m := &objectMeta{
		Key: req.key, Size: t.size, ETag: t.etag(), CRC64: t.crc, ContentType: ct,
		LastModified: time.Now().UTC(), Type: "Normal", UserMeta: userMeta, Headers: headers,
	}
	if err := s.commitObject(b, m, t); err != nil {
		writeError(w, r, errInternal("storing object: "+err.Error()))
		return
	}
	h := w.Header()
	h.Set("ETag", quoteETag(m.ETag))
	h.Set("x-oss-hash-crc64ecma", strconv.FormatUint(m.CRC64, 10))
	h.Set("Content-MD5", base64.StdEncoding.EncodeToString(t.md5))
	h.Set("Content-Length", "0")
	w.WriteHeader(http.StatusOK)
}

func quoteETag(etag string) string { return `"` + etag + `"` }

// lookup returns the metadata of an existing object.
func (s *Server) lookup(req *request) (*bucket, *objectMeta, *ossError) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.lookupLocked(req)
}

// lookupLocked is lookup for callers holding s.mu.
func (s *Server) lookupLocked(req *request) (*bucket, *objectMeta, *ossError) {
	b := s.buckets[req.bucket]
	if b == nil {
		return nil, nil, errNoSuchBucket()
	}
	m := b.objects[req.key]
	if m == nil {
		return b, nil, errNoSuchKey()
	}
	return b, m, nil
}

// openObject returns the object's metadata and its open data files. The
// files stay readable even if the object is overwritten or deleted meanwhile.
func (s *Server) openObject(req *request) (*objectMeta, *objectData, *ossError) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	b, m, e := s.lookupLocked(req)
	if e != nil {
		return nil, nil, e
	}
	d := &objectData{}
	for _, seg := range m.segments() {
		f, err := os.Open(filepath.Join(b.objectDir(), seg.DataFile))
		if err != nil {
			d.Close()
			return nil, nil, errInternal("opening object data: " + err.Error())
		}
		d.files = append(d.files, f)
		d.sizes = append(d.sizes, seg.Size)
	}
	return m, d, nil
}

// objectData is an object's bytes: one file, or a completed multipart
// upload's parts in order.
type objectData struct {
	files []*os.File
	sizes []int64
}

func (d *objectData) Close() {
	for _, f := range d.files {
		_ = f.Close()
	}
}

// copyRange writes length bytes from offset start to w. Each file goes
// through io.CopyN, so the kernel sends it (sendfile) when w is a connection.
func (d *objectData) copyRange(w io.Writer, start, length int64) {
	for i, f := range d.files {
		if length <= 0 {
			return
		}
		if start >= d.sizes[i] {
			start -= d.sizes[i]
			continue
		}
		n := min(length, d.sizes[i]-start)
		if _, err := f.Seek(start, io.SeekStart); err != nil {
			return
		}
		if _, err := io.CopyN(w, f, n); err != nil {
			return
		}
		start, length = 0, length-n
	}
}

func setObjectHeaders(h http.Header, m *objectMeta) {
	h.Set("Content-Type", m.ContentType)
	h.Set("ETag", quoteETag(m.ETag))
	h.Set("Last-Modified", m.LastModified.UTC().Format(http.TimeFormat))
	h.Set("Accept-Ranges", "bytes")
	h.Set("x-oss-object-type", m.Type)
	h.Set("x-oss-storage-class", "Standard")
	h.Set("x-oss-hash-crc64ecma", strconv.FormatUint(m.CRC64, 10))
	for k, v := range m.UserMeta {
		h.Set(k, v)
	}
	for k, v := range m.Headers {
		h.Set(k, v)
	}
}

// parseRange parses a single "bytes=a-b", "bytes=a-" or "bytes=-n" range.
// ok is false for anything else, which OSS answers with the whole object;
// unsatisfiable is true when the range starts past the end.
func parseRange(spec string, size int64) (start, end int64, ok, unsatisfiable bool) {
	spec, found := strings.CutPrefix(strings.TrimSpace(spec), "bytes=")
	if !found || strings.Contains(spec, ",") {
		return 0, 0, false, false
	}
	a, bs, found := strings.Cut(spec, "-")
	if !found {
		return 0, 0, false, false
	}
	a, bs = strings.TrimSpace(a), strings.TrimSpace(bs)
	if a == "" {
		n, err := strconv.ParseInt(bs, 10, 64)
		if err != nil || n <= 0 {
			return 0, 0, false, false
		}
		if size == 0 {
			return 0, 0, false, true
		}
		if n > size {
			n = size
		}
		return size - n, size - 1, true, false
	}
	start, err := strconv.ParseInt(a, 10, 64)
	if err != nil || start < 0 {
		return 0, 0, false, false
	}
	end = size - 1
	if bs != "" {
		if end, err = strconv.ParseInt(bs, 10, 64); err != nil || end < start {
			return 0, 0, false, false
		}
		if end > size-1 {
			end = size - 1
		}
	}
	if start >= size {
		return 0, 0, false, true
	}
	return start, end, true, false
}

// getObject streams the object from disk. With resetAfter > 0 (a fault) it
// writes that many body bytes and then resets the connection.
func (s *Server) getObject(w http.ResponseWriter, r *http.Request, req *request, resetAfter int64) {
	m, data, e := s.openObject(req)
	if e != nil {
		writeError(w, r, e)
		return
	}
	defer data.Close()
	h := w.Header()
	setObjectHeaders(h, m)
	for param, header := range map[string]string{
		"response-content-type": "Content-Type", "response-content-disposition": "Content-Disposition",
		"response-content-encoding": "Content-Encoding", "response-cache-control": "Cache-Control",
		"response-content-language": "Content-Language", "response-expires": "Expires",
	} {
		if v := req.query.Get(param); v != "" {
			h.Set(header, v)
		}
	}
	start, length, status := int64(0), m.Size, http.StatusOK
	if spec := r.Header.Get("Range"); spec != "" {
		a, b, ok, unsatisfiable := parseRange(spec, m.Size)
		if unsatisfiable {
			h.Del("x-oss-hash-crc64ecma")
			writeError(w, r, newError(http.StatusRequestedRangeNotSatisfiable, "InvalidRange", "The requested range cannot be satisfied."))
			return
		}
		if ok {
			start, length, status = a, b-a+1, http.StatusPartialContent
			h.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", a, b, m.Size))
			// The CRC describes the whole object, not the range.
			h.Del("x-oss-hash-crc64ecma")
		}
	}
	h.Set("Content-Length", strconv.FormatInt(length, 10))
	w.WriteHeader(status)
	if r.Method == http.MethodHead {
		return
	}
	if resetAfter > 0 {
		data.copyRange(w, start, min(resetAfter, length))
		if fl, ok := w.(http.Flusher); ok {
			fl.Flush()
		}
		resetConnection(w)
		return
	}
	data.copyRange(w, start, length)
}

func (s *Server) headObject(w http.ResponseWriter, r *http.Request, req *request) {
	_, m, e := s.lookup(req)
	if e != nil {
		writeError(w, r, e)
		return
	}
	h := w.Header()
	if req.op == "GetObjectMeta" {
		h.Set("ETag", quoteETag(m.ETag))
		h.Set("Last-Modified", m.LastModified.UTC().Format(http.TimeFormat))
		h.Set("x-oss-hash-crc64ecma", strconv.FormatUint(m.CRC64, 10))
		h.Set("x-oss-last-access-time", m.LastModified.UTC().Format(http.TimeFormat))
	} else {
		setObjectHeaders(h, m)
	}
	h.Set("Content-Length", strconv.FormatInt(m.Size, 10))
	w.WriteHeader(http.StatusOK)
}

func (s *Server) deleteObjectOp(w http.ResponseWriter, r *http.Request, req *request) {
	b, e := s.bucketFor(req)
	if e != nil {
		writeError(w, r, e)
		return
	}
	if err := s.deleteObject(b, req.key); err != nil {
		writeError(w, r, errInternal("deleting object: "+err.Error()))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

type deleteRequest struct {
	Quiet   bool `xml:"Quiet"`
	Objects []struct {
		Key string `xml:"Key"`
	} `xml:"Object"`
}

type deletedObject struct {
	Key string `xml:"Key"`
}

type deleteResult struct {
	XMLName      xml.Name        `xml:"DeleteResult"`
	EncodingType string          `xml:"EncodingType,omitempty"`
	Deleted      []deletedObject `xml:"Deleted"`
}

// maxXMLBody bounds the XML bodies of DeleteMultipleObjects and
// CompleteMultipartUpload.
const maxXMLBody = 2 << 20

// readXMLBody reads a small XML request body and checks its Content-MD5.
func readXMLBody(r *http.Request) ([]byte, *ossError) {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxXMLBody))
	if err != nil {
		return nil, newError(http.StatusBadRequest, "IncompleteBody", err.Error())
	}
	if e := checkContentMD5(r, body); e != nil {
		return nil, e
	}
	return body, nil
}

func (s *Server) deleteMultiple(w http.ResponseWriter, r *http.Request, req *request) {
	b, e := s.bucketFor(req)
	if e != nil {
		drainBody(r)
		writeError(w, r, e)
		return
	}
	body, e := readXMLBody(r)
	if e != nil {
		writeError(w, r, e)
		return
	}
	var dr deleteRequest
	if err := xml.Unmarshal(body, &dr); err != nil {
		writeError(w, r, newError(http.StatusBadRequest, "MalformedXML", "The XML you provided was not well-formed."))
		return
	}
	if len(dr.Objects) > 1000 {
		writeError(w, r, newError(http.StatusBadRequest, "MalformedXML", "At most 1000 objects may be deleted at once."))
		return
	}
	urlEncode := req.query.Get("encoding-type") == "url"
	res := deleteResult{}
	if urlEncode {
		res.EncodingType = "url"
	}
	for _, o := range dr.Objects {
		if err := s.deleteObject(b, o.Key); err != nil {
			writeError(w, r, errInternal("deleting object: "+err.Error()))
			return
		}
		if !dr.Quiet {
			res.Deleted = append(res.Deleted, deletedObject{Key: encodeKey(o.Key, urlEncode)})
		}
	}
	writeXML(w, res)
}

func encodeKey(k string, urlEncode bool) string {
	if urlEncode {
		return url.QueryEscape(k)
	}
	return k
}

type listEntry struct {
	Key          string `xml:"Key"`
	LastModified string `xml:"LastModified"`
	ETag         string `xml:"ETag"`
	Type         string `xml:"Type"`
	Size         int64  `xml:"Size"`
	StorageClass string `xml:"StorageClass"`
	Owner        *owner `xml:"Owner,omitempty"`
}

type owner struct {
	ID          string `xml:"ID"`
	DisplayName string `xml:"DisplayName"`
}

type commonPrefix struct {
	Prefix string `xml:"Prefix"`
}

type listBucketResult struct {
	XMLName               xml.Name       `xml:"ListBucketResult"`
	Name                  string         `xml:"Name"`
	Prefix                string         `xml:"Prefix"`
	Marker                *string        `xml:"Marker"`
	StartAfter            string         `xml:"StartAfter,omitempty"`
	ContinuationToken     string         `xml:"ContinuationToken,omitempty"`
	MaxKeys               int            `xml:"MaxKeys"`
	Delimiter             string         `xml:"Delimiter"`
	EncodingType          string         `xml:"EncodingType,omitempty"`
	IsTruncated           bool           `xml:"IsTruncated"`
	NextMarker            string         `xml:"NextMarker,omitempty"`
	NextContinuationToken string         `xml:"NextContinuationToken,omitempty"`
	KeyCount              *int           `xml:"KeyCount"`
	Contents              []listEntry    `xml:"Contents"`
	CommonPrefixes        []commonPrefix `xml:"CommonPrefixes"`
}

const isoTimeMillis = "2006-01-02T15:04:05.000Z"

// listObjects serves ListObjectsV2 and the older ListObjects (marker-based).
// The continuation token is the base64 of the last key or common prefix
// returned; listing resumes strictly after it.
func (s *Server) listObjects(w http.ResponseWriter, r *http.Request, req *request) {
	q := req.query
	v2 := req.op == "ListObjectsV2"
	maxKeys := defaultMaxKeys
	if v := q.Get("max-keys"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > maxMaxKeys {
			writeError(w, r, errInvalidArgument("max-keys must be an integer between 0 and 1000."))
			return
		}
		maxKeys = n
	}
	if et := q.Get("encoding-type"); et != "" && et != "url" {
		writeError(w, r, errInvalidArgument("encoding-type must be url."))
		return
	}
	prefix, delimiter := q.Get("prefix"), q.Get("delimiter")
	urlEncode := q.Get("encoding-type") == "url"
	var after string
	if v2 {
		after = q.Get("start-after")
		if tok := q.Get("continuation-token"); tok != "" {
			raw, err := base64.RawURLEncoding.DecodeString(tok)
			if err != nil {
				writeError(w, r, errInvalidArgument("The continuation token provided is incorrect."))
				return
			}
			if string(raw) > after {
				after = string(raw)
			}
		}
	} else {
		after = q.Get("marker")
	}

	s.mu.RLock()
	b := s.buckets[req.bucket]
	if b == nil {
		s.mu.RUnlock()
		writeError(w, r, errNoSuchBucket())
		return
	}
	keys := make([]string, 0, len(b.objects))
	for k := range b.objects {
		if strings.HasPrefix(k, prefix) && k > after {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	res := listBucketResult{Name: b.name, MaxKeys: maxKeys}
	var last string
	lastPrefix := ""
	for _, k := range keys {
		cp := ""
		if delimiter != "" {
			if i := strings.Index(k[len(prefix):], delimiter); i >= 0 {
				cp = k[:len(prefix)+i+len(delimiter)]
			}
		}
		if cp != "" && (cp == lastPrefix || cp == after) {
			continue // rolled up into a common prefix already returned
		}
		if len(res.Contents)+len(res.CommonPrefixes) >= maxKeys {
			res.IsTruncated = true
			break
		}
		if cp != "" {
			res.CommonPrefixes = append(res.CommonPrefixes, commonPrefix{Prefix: encodeKey(cp, urlEncode)})
			lastPrefix, last = cp, cp
			continue
		}
		m := b.objects[k]
		res.Contents = append(res.Contents, listEntry{
			Key:          encodeKey(k, urlEncode),
			LastModified: m.LastModified.UTC().Format(isoTimeMillis),
			ETag:         quoteETag(m.ETag),
			Type:         m.Type,
			Size:         m.Size,
			StorageClass: "Standard",
			Owner:        &owner{ID: "osslocal", DisplayName: "osslocal"},
		})
		last = k
	}
	s.mu.RUnlock()

	res.Prefix = encodeKey(prefix, urlEncode)
	res.Delimiter = encodeKey(delimiter, urlEncode)
	if urlEncode {
		res.EncodingType = "url"
	}
	if v2 {
		n := len(res.Contents) + len(res.CommonPrefixes)
		res.KeyCount = &n
		res.StartAfter = encodeKey(q.Get("start-after"), urlEncode)
		res.ContinuationToken = q.Get("continuation-token")
		if res.IsTruncated {
			res.NextContinuationToken = base64.RawURLEncoding.EncodeToString([]byte(last))
		}
	} else {
		marker := encodeKey(q.Get("marker"), urlEncode)
		res.Marker = &marker
		if res.IsTruncated {
			res.NextMarker = encodeKey(last, urlEncode)
		}
	}
	writeXML(w, res)
}

type bucketInfoResult struct {
	XMLName xml.Name `xml:"BucketInfo"`
	Bucket  struct {
		Name             string `xml:"Name"`
		Location         string `xml:"Location"`
		CreationDate     string `xml:"CreationDate"`
		StorageClass     string `xml:"StorageClass"`
		ExtranetEndpoint string `xml:"ExtranetEndpoint"`
	} `xml:"Bucket"`
}

func (s *Server) getBucketInfo(w http.ResponseWriter, r *http.Request, req *request) {
	b, e := s.bucketFor(req)
	if e != nil {
		writeError(w, r, e)
		return
	}
	var res bucketInfoResult
	res.Bucket.Name = b.name
	res.Bucket.Location = "oss-local"
	res.Bucket.StorageClass = "Standard"
	res.Bucket.ExtranetEndpoint = r.Host
	if st, err := os.Stat(b.dir); err == nil {
		res.Bucket.CreationDate = st.ModTime().UTC().Format(isoTimeMillis)
	}
	writeXML(w, res)
}

type accessControlPolicy struct {
	XMLName xml.Name `xml:"AccessControlPolicy"`
	Owner   owner    `xml:"Owner"`
	Grant   string   `xml:"AccessControlList>Grant"`
}

// getBucketACL answers for IsBucketExist, which the v2 SDK implements with it.
func (s *Server) getBucketACL(w http.ResponseWriter, r *http.Request, req *request) {
	if _, e := s.bucketFor(req); e != nil {
		writeError(w, r, e)
		return
	}
	writeXML(w, accessControlPolicy{Owner: owner{ID: "osslocal", DisplayName: "osslocal"}, Grant: "private"})
}

// checkContentMD5 verifies the Content-MD5 header, if any, of a small body.
func checkContentMD5(r *http.Request, body []byte) *ossError {
	v := r.Header.Get("Content-MD5")
	if v == "" {
		return nil
	}
	sum := md5.Sum(body)
	if v != base64.StdEncoding.EncodeToString(sum[:]) {
		return newError(http.StatusBadRequest, "InvalidDigest", "The Content-MD5 you specified did not match what we received.")
	}
	return nil
}
