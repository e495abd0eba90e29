package osslocal

import (
	"crypto/md5"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

const (
	maxPartNumber   = 10000
	maxPartSize     = 5 << 30
	minPartSize     = 100 << 10 // every part but the last
	defaultMaxParts = 1000
)

var errUploadGone = errors.New("upload no longer exists")

type initiateResult struct {
	XMLName      xml.Name `xml:"InitiateMultipartUploadResult"`
	Bucket       string   `xml:"Bucket"`
	Key          string   `xml:"Key"`
	UploadID     string   `xml:"UploadId"`
	EncodingType string   `xml:"EncodingType,omitempty"`
}

func (s *Server) initiateMultipart(w http.ResponseWriter, r *http.Request, req *request) {
	b := s.objectTarget(w, r, req)
	if b == nil {
		return
	}
	drainBody(r)
	ct, userMeta, headers := objectAttrs(r)
	u := &upload{
		ID: strings.ToUpper(randomHex(16)), Bucket: b.name, Key: req.key, Initiated: time.Now().UTC(),
		ContentType: ct, UserMeta: userMeta, Headers: headers, parts: map[int]*partMeta{},
	}
	u.dir = filepath.Join(b.dir, "uploads", u.ID)
	if err := os.MkdirAll(u.dir, 0o755); err != nil {
		writeError(w, r, errInternal("creating upload: "+err.Error()))
		return
	}
	if err := s.writeJSONFile(filepath.Join(u.dir, "upload.json"), u); err != nil {
		_ = os.RemoveAll(u.dir)
		writeError(w, r, errInternal("creating upload: "+err.Error()))
		return
	}
	s.mu.Lock()
	b.uploads[u.ID] = u
	s.mu.Unlock()
	urlEncode := req.query.Get("encoding-type") == "url"
	res := initiateResult{Bucket: b.name, Key: encodeKey(req.key, urlEncode), UploadID: u.ID}
	if urlEncode {
		res.EncodingType = "url"
	}
	writeXML(w, res)
}

// findUpload returns the upload named by the uploadId parameter of req.
func (s *Server) findUpload(req *request) (*bucket, *upload, *ossError) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	b := s.buckets[req.bucket]
	if b == nil {
		return nil, nil, errNoSuchBucket()
	}
	u := b.uploads[req.query.Get("uploadId")]
	if u == nil || u.Key != req.key {
		return b, nil, errNoSuchUpload()
	}
	return b, u, nil
}

func (s *Server) uploadPart(w http.ResponseWriter, r *http.Request, req *request) {
	_, u, e := s.findUpload(req)
	n, err := strconv.Atoi(req.query.Get("partNumber"))
	if e == nil && (err != nil || n < 1 || n > maxPartNumber) {
		e = errInvalidArgument("Part number must be an integer between 1 and 10000, inclusive.")
	}
	if e != nil {
		drainBody(r)
		writeError(w, r, e)
		return
	}
	t, e := s.receiveBody(r, maxPartSize)
	if e != nil {
		writeError(w, r, e)
		return
	}
	p := &partMeta{Number: n, Size: t.size, ETag: t.etag(), CRC64: t.crc, LastModified: time.Now().UTC(),
		DataFile: fmt.Sprintf("part-%05d.%s.data", n, randomHex(8))}
	if err := s.commitPart(u, p, t); err != nil {
		if errors.Is(err, errUploadGone) {
			writeError(w, r, errNoSuchUpload())
			return
		}
		writeError(w, r, errInternal("storing part: "+err.Error()))
		return
	}
	h := w.Header()
	h.Set("ETag", quoteETag(p.ETag))
	h.Set("x-oss-hash-crc64ecma", strconv.FormatUint(p.CRC64, 10))
	h.Set("Content-MD5", r.Header.Get("Content-MD5"))
	h.Set("Content-Length", "0")
	w.WriteHeader(http.StatusOK)
}

// commitPart moves a received part into the upload directory; the part's
// JSON, renamed under s.mu, is the commit point.
func (s *Server) commitPart(u *upload, p *partMeta, t *tempFile) error {
	dataPath := filepath.Join(u.dir, p.DataFile)
	if err := os.Rename(t.path, dataPath); err != nil {
		t.discard()
		if errors.Is(err, os.ErrNotExist) {
			return errUploadGone
		}
		return err
	}
	metaPath := filepath.Join(u.dir, fmt.Sprintf("part-%05d.json", p.Number))
	tmpMeta, err := s.writeTempJSON(p)
	if err != nil {
		_ = os.Remove(dataPath)
		return err
	}
	s.mu.Lock()
	if !s.uploadLive(u) {
		s.mu.Unlock()
		_ = os.Remove(tmpMeta)
		_ = os.Remove(dataPath)
		return errUploadGone
	}
	err = os.Rename(tmpMeta, metaPath)
	old := u.parts[p.Number]
	if err == nil {
		u.parts[p.Number] = p
	}
	s.mu.Unlock()
	if err != nil {
		_ = os.Remove(tmpMeta)
		_ = os.Remove(dataPath)
		return err
	}
	if old != nil {
		_ = os.Remove(filepath.Join(u.dir, old.DataFile))
	}
	return nil
}

// claimUpload takes u out of b's pending uploads, so that of a concurrent
// complete and abort exactly one goes on; false if another got there first.
func (s *Server) claimUpload(b *bucket, u *upload) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.uploadLive(u) {
		return false
	}
	delete(b.uploads, u.ID)
	return true
}

// uploadLive reports whether u is still pending; s.mu must be held.
func (s *Server) uploadLive(u *upload) bool {
	b := s.buckets[u.Bucket]
	return b != nil && b.uploads[u.ID] == u
}

type completeRequest struct {
	Parts []struct {
		PartNumber int    `xml:"PartNumber"`
		ETag       string `xml:"ETag"`
	} `xml:"Part"`
}

type completeResult struct {
	XMLName      xml.Name `xml:"CompleteMultipartUploadResult"`
	EncodingType string   `xml:"EncodingType,omitempty"`
	Location     string   `xml:"Location"`
	Bucket       string   `xml:"Bucket"`
	Key          string   `xml:"Key"`
	ETag         string   `xml:"ETag"`
}

func normalizeETag(s string) string {
	return strings.ToUpper(strings.Trim(strings.TrimSpace(s), `"`))
}

func (s *Server) completeMultipart(w http.ResponseWriter, r *http.Request, req *request) {
	b, u, e := s.findUpload(req)
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

	// Snapshot the parts to combine.
	s.mu.RLock()
	available := make(map[int]*partMeta, len(u.parts))
	for n, p := range u.parts {
		available[n] = p
	}
	s.mu.RUnlock()

	var chosen []*partMeta
	if strings.EqualFold(r.Header.Get("x-oss-complete-all"), "yes") {
		if len(body) > 0 {
			writeError(w, r, errInvalidArgument("x-oss-complete-all requires an empty body."))
			return
		}
		for _, p := range available {
			chosen = append(chosen, p)
		}
		sort.Slice(chosen, func(i, j int) bool { return chosen[i].Number < chosen[j].Number })
	} else {
		var cr completeRequest
		if err := xml.Unmarshal(body, &cr); err != nil || len(cr.Parts) == 0 {
			writeError(w, r, newError(http.StatusBadRequest, "MalformedXML", "The XML you provided was not well-formed or did not validate against our published schema."))
			return
		}
		prev := 0
		for _, cp := range cr.Parts {
			if cp.PartNumber <= prev {
				writeError(w, r, newError(http.StatusBadRequest, "InvalidPartOrder",
					"The list of parts was not in ascending order. Parts list must be specified in order by part number."))
				return
			}
			prev = cp.PartNumber
			p := available[cp.PartNumber]
			if p == nil || normalizeETag(cp.ETag) != p.ETag {
				writeError(w, r, newError(http.StatusBadRequest, "InvalidPart",
					"One or more of the specified parts could not be found or the specified entity tag might not have matched the part's entity tag."))
				return
			}
			chosen = append(chosen, p)
		}
	}
	if len(chosen) == 0 {
		writeError(w, r, newError(http.StatusBadRequest, "MalformedXML", "No parts to complete."))
		return
	}
	for _, p := range chosen[:len(chosen)-1] {
		if p.Size < minPartSize {
			writeError(w, r, newError(http.StatusBadRequest, "EntityTooSmall",
				"Your proposed upload is smaller than the minimum allowed size."))
			return
		}
	}

	segments, size, crc, err := s.partSegments(u, chosen)
	if err != nil {
		writeError(w, r, errInternal("combining parts: "+err.Error()))
		return
	}
	// The multipart ETag is the MD5 of the concatenated binary part MD5s, "-N".
	etagSum := md5.New()
	for _, p := range chosen {
		raw, _ := hex.DecodeString(p.ETag)
		etagSum.Write(raw)
	}
	m := &objectMeta{
		Key: u.Key, Size: size, ETag: fmt.Sprintf("%s-%d", strings.ToUpper(hex.EncodeToString(etagSum.Sum(nil))), len(chosen)),
		CRC64: crc, ContentType: u.ContentType, LastModified: time.Now().UTC(), Type: "Multipart",
		UserMeta: u.UserMeta, Headers: u.Headers, Segments: segments,
	}

	if !s.claimUpload(b, u) {
		writeError(w, r, errNoSuchUpload())
		return
	}
	paths := make([]string, len(chosen))
	for i, p := range chosen {
		paths[i] = filepath.Join(u.dir, p.DataFile)
	}
	if err := s.commitFiles(b, m, paths); err != nil {
		writeError(w, r, errInternal("storing object: "+err.Error()))
		return
	}
	_ = os.RemoveAll(u.dir)

	urlEncode := req.query.Get("encoding-type") == "url"
	res := completeResult{
		Location: "http://" + r.Host + "/" + b.name + "/" + u.Key,
		Bucket:   b.name, Key: encodeKey(u.Key, urlEncode), ETag: quoteETag(m.ETag),
	}
	if urlEncode {
		res.EncodingType = "url"
	}
	w.Header().Set("ETag", quoteETag(m.ETag))
	w.Header().Set("x-oss-hash-crc64ecma", strconv.FormatUint(m.CRC64, 10))
	writeXML(w, res)
}

// partSegments checks the chosen parts on disk and returns them as segments
// with the object's size and CRC64, combined from the parts' CRCs without
// reading the data again (MD5 is not needed: a multipart ETag is not the
// object's MD5). The parts' data was synced as each arrived.
func (s *Server) partSegments(u *upload, parts []*partMeta) ([]segment, int64, uint64, error) {
	segments := make([]segment, len(parts))
	var (
		size int64
		crc  uint64
	)
	for i, p := range parts {
		path := filepath.Join(u.dir, p.DataFile)
		fi, err := os.Stat(path)
		if err != nil {
			return nil, 0, 0, err
		}
		if fi.Size() != p.Size {
			return nil, 0, 0, fmt.Errorf("part %d has %d bytes on disk, want %d", p.Number, fi.Size(), p.Size)
		}
		segments[i] = segment{Size: p.Size}
		size += p.Size
		crc = crc64Combine(crc, p.CRC64, p.Size)
	}
	return segments, size, crc, nil
}

func (s *Server) abortMultipart(w http.ResponseWriter, r *http.Request, req *request) {
	b, u, e := s.findUpload(req)
	if e != nil {
		writeError(w, r, e)
		return
	}
	if !s.claimUpload(b, u) {
		writeError(w, r, errNoSuchUpload())
		return
	}
	if err := os.RemoveAll(u.dir); err != nil {
		writeError(w, r, errInternal("removing upload: "+err.Error()))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

type listPartsResult struct {
	XMLName              xml.Name       `xml:"ListPartsResult"`
	Bucket               string         `xml:"Bucket"`
	Key                  string         `xml:"Key"`
	UploadID             string         `xml:"UploadId"`
	EncodingType         string         `xml:"EncodingType,omitempty"`
	PartNumberMarker     int            `xml:"PartNumberMarker"`
	NextPartNumberMarker int            `xml:"NextPartNumberMarker"`
	MaxParts             int            `xml:"MaxParts"`
	IsTruncated          bool           `xml:"IsTruncated"`
	Parts                []listPartItem `xml:"Part"`
}

type listPartItem struct {
	PartNumber    int    `xml:"PartNumber"`
	LastModified  string `xml:"LastModified"`
	ETag          string `xml:"ETag"`
	HashCrc64ecma uint64 `xml:"HashCrc64ecma"`
	Size          int64  `xml:"Size"`
}

func (s *Server) listParts(w http.ResponseWriter, r *http.Request, req *request) {
	b, u, e := s.findUpload(req)
	if e != nil {
		writeError(w, r, e)
		return
	}
	maxParts, marker := defaultMaxParts, 0
	if v := req.query.Get("max-parts"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > defaultMaxParts {
			writeError(w, r, errInvalidArgument("max-parts must be an integer between 0 and 1000."))
			return
		}
		maxParts = n
	}
	if v := req.query.Get("part-number-marker"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			writeError(w, r, errInvalidArgument("part-number-marker is invalid."))
			return
		}
		marker = n
	}
	s.mu.RLock()
	var parts []*partMeta
	for n, p := range u.parts {
		if n > marker {
			parts = append(parts, p)
		}
	}
	s.mu.RUnlock()
	sort.Slice(parts, func(i, j int) bool { return parts[i].Number < parts[j].Number })
	urlEncode := req.query.Get("encoding-type") == "url"
	res := listPartsResult{Bucket: b.name, Key: encodeKey(u.Key, urlEncode), UploadID: u.ID, PartNumberMarker: marker, MaxParts: maxParts}
	if urlEncode {
		res.EncodingType = "url"
	}
	if len(parts) > maxParts {
		parts, res.IsTruncated = parts[:maxParts], true
	}
	for _, p := range parts {
		res.Parts = append(res.Parts, listPartItem{
			PartNumber: p.Number, LastModified: p.LastModified.Format(isoTimeMillis),
			ETag: quoteETag(p.ETag), HashCrc64ecma: p.CRC64, Size: p.Size,
		})
		res.NextPartNumberMarker = p.Number
	}
	writeXML(w, res)
}
