package osslocal

import (
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"
)

const (
	algorithmV4       = "OSS4-HMAC-SHA256"
	unsignedPayload   = "UNSIGNED-PAYLOAD"
	iso8601DateTime   = "20060102T150405Z"
	maxClockSkew      = 15 * time.Minute
	maxPresignExpires = 7 * 24 * 3600
)

// v1SignedSubresources are the query parameters that V1 signatures cover, the
// union of what the official SDKs sign (query parameters starting with x-oss-
// are signed too). Listing parameters such as prefix are not signed.
var v1SignedSubresources = map[string]bool{}

func init() {
	for _, k := range strings.Fields(`acl uploads location cors logging website referer lifecycle delete append
		tagging objectMeta uploadId partNumber security-token position img style styleName replication
		replicationProgress replicationLocation cname bucketInfo comp qos live status vod startTime endTime
		symlink response-content-type response-content-language response-expires response-cache-control
		response-content-disposition response-content-encoding udf udfName udfImage udfId udfImageDesc
		udfApplication udfApplicationLog restore callback callback-var qosInfo policy stat encryption versions
		versioning versionId requestPayment sequential inventory inventoryId continuation-token asyncFetch worm
		wormId wormExtend withHashContext transferAcceleration regionList cloudboxes metaQuery resourceGroup
		rtc responseHeader`) {
		v1SignedSubresources[k] = true
	}
}

// authenticate verifies the V1 or V4 signature of r, in the Authorization
// header or in a presigned URL. Anonymous requests are refused.
func (s *Server) authenticate(r *http.Request, req *request) *ossError {
	authz := r.Header.Get("Authorization")
	q := req.query
	switch {
	case strings.HasPrefix(authz, algorithmV4+" "):
		return s.verifyV4Header(r, req, strings.TrimPrefix(authz, algorithmV4+" "))
	case strings.HasPrefix(authz, "OSS "):
		return s.verifyV1Header(r, req, strings.TrimPrefix(authz, "OSS "))
	case authz != "":
		return errInvalidArgument("Authorization header is invalid.")
	case q.Has("x-oss-signature"):
		return s.verifyV4Query(r, req)
	case q.Has("Signature") || q.Has("OSSAccessKeyId"):
		return s.verifyV1Query(r, req)
	}
	return errAccessDenied("Anonymous access is forbidden for this operation.")
}

func errSignature(stringToSign string) *ossError {
	e := newError(http.StatusForbidden, "SignatureDoesNotMatch",
		"The request signature we calculated does not match the signature you provided. Check your key and signing method.")
	e.StringToSign = stringToSign
	return e
}

func errInvalidAccessKeyID() *ossError {
	return newError(http.StatusForbidden, "InvalidAccessKeyId", "The OSS Access Key Id you provided does not exist in our records.")
}

func errExpired() *ossError { return errAccessDenied("Request has expired.") }

func checkSkew(t time.Time) *ossError {
	if d := time.Since(t); d > maxClockSkew || d < -maxClockSkew {
		return newError(http.StatusForbidden, "RequestTimeTooSkewed",
			"The difference between the request time and the current time is too large.")
	}
	return nil
}

// ---- V1 ----

func (s *Server) verifyV1Header(r *http.Request, req *request, cred string) *ossError {
	i := strings.LastIndexByte(cred, ':')
	if i <= 0 {
		return errInvalidArgument("Authorization header is invalid.")
	}
	ak, sig := cred[:i], cred[i+1:]
	secret, ok := s.creds[ak]
	if !ok {
		return errInvalidAccessKeyID()
	}
	date := r.Header.Get("Date")
	if t, err := http.ParseTime(date); err == nil {
		if e := checkSkew(t); e != nil {
			return e
		}
	}
	// ali-oss puts x-oss-date where the others put Date; accept either.
	var first string
	for _, d := range []string{date, r.Header.Get("x-oss-date")} {
		sts := v1StringToSign(r, req, d, nil)
		if first == "" {
			first = sts
		}
		if hmac.Equal([]byte(v1Sign(secret, sts)), []byte(sig)) {
			return nil
		}
	}
	return errSignature(first)
}

func (s *Server) verifyV1Query(r *http.Request, req *request) *ossError {
	q := req.query
	ak, sig, expires := q.Get("OSSAccessKeyId"), q.Get("Signature"), q.Get("Expires")
	secret, ok := s.creds[ak]
	if !ok {
		return errInvalidAccessKeyID()
	}
	exp, err := strconv.ParseInt(expires, 10, 64)
	if err != nil {
		return errInvalidArgument("Expires is invalid.")
	}
	if time.Now().Unix() > exp {
		return errExpired()
	}
	sts := v1StringToSign(r, req, expires, map[string]bool{"Expires": true, "OSSAccessKeyId": true, "Signature": true})
	if !hmac.Equal([]byte(v1Sign(secret, sts)), []byte(sig)) {
		return errSignature(sts)
	}
	return nil
}

func v1Sign(secret, stringToSign string) string {
	h := hmac.New(sha1.New, []byte(secret))
	h.Write([]byte(stringToSign))
	return base64.StdEncoding.EncodeToString(h.Sum(nil))
}

func v1StringToSign(r *http.Request, req *request, date string, exclude map[string]bool) string {
	var b strings.Builder
	b.WriteString(r.Method + "\n")
	b.WriteString(r.Header.Get("Content-MD5") + "\n")
	b.WriteString(r.Header.Get("Content-Type") + "\n")
	b.WriteString(date + "\n")
	for _, h := range ossHeaders(r.Header) {
		b.WriteString(h + ":" + headerValue(r.Header, h) + "\n")
	}
	b.WriteString(canonicalResource(req))
	var params []string
	for k := range req.query {
		if exclude[k] {
			continue
		}
		if v1SignedSubresources[k] || strings.HasPrefix(k, "x-oss-") {
			params = append(params, k)
		}
	}
	sort.Strings(params)
	for i, k := range params {
		if i == 0 {
			b.WriteByte('?')
		} else {
			b.WriteByte('&')
		}
		b.WriteString(k)
		if v := req.query.Get(k); v != "" {
			b.WriteString("=" + v)
		}
	}
	return b.String()
}

// canonicalResource is /bucket/key, the same for path- and virtual-host style.
func canonicalResource(req *request) string {
	if req.bucket == "" {
		return "/"
	}
	return "/" + req.bucket + "/" + req.key
}

// ossHeaders are the sorted lower-case names of the x-oss-* headers.
func ossHeaders(h http.Header) []string {
	var out []string
	for k := range h {
		if lk := strings.ToLower(k); strings.HasPrefix(lk, "x-oss-") {
			out = append(out, lk)
		}
	}
	sort.Strings(out)
	return out
}

func headerValue(h http.Header, name string) string {
	vals := h.Values(name)
	for i, v := range vals {
		vals[i] = strings.TrimSpace(v)
	}
	return strings.Join(vals, ",")
}

// ---- V4 ----

type v4Params struct {
	accessKeyID string
	date        string // yyyymmdd
	region      string
	product     string
	timestamp   string // x-oss-date
	additional  []string
	signature   string
	presigned   bool
}

func parseCredential(cred string, p *v4Params) bool {
	parts := strings.Split(cred, "/")
	if len(parts) != 5 || parts[4] != "aliyun_v4_request" {
		return false
	}
	p.accessKeyID, p.date, p.region, p.product = parts[0], parts[1], parts[2], parts[3]
	return true
}

func parseAdditional(v string) []string {
	var out []string
	for _, h := range strings.Split(v, ";") {
		if h = strings.ToLower(strings.TrimSpace(h)); h != "" {
			out = append(out, h)
		}
	}
	return out
}

func (s *Server) verifyV4Header(r *http.Request, req *request, rest string) *ossError {
	var p v4Params
	var haveCred bool
	// The documentation puts a space after each comma, the SDKs do not.
	for _, field := range strings.Split(rest, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(field), "=")
		switch k {
		case "Credential":
			haveCred = parseCredential(v, &p)
		case "AdditionalHeaders":
			p.additional = parseAdditional(v)
		case "Signature":
			p.signature = v
		}
	}
	if !haveCred || p.signature == "" {
		return errInvalidArgument("Authorization header is invalid.")
	}
	p.timestamp = r.Header.Get("x-oss-date")
	if t, err := time.Parse(iso8601DateTime, p.timestamp); err == nil {
		if e := checkSkew(t); e != nil {
			return e
		}
	} else if p.timestamp == "" {
		p.timestamp = r.Header.Get("Date")
	}
	return s.verifyV4(r, req, &p)
}

func (s *Server) verifyV4Query(r *http.Request, req *request) *ossError {
	q := req.query
	var p v4Params
	p.presigned = true
	if q.Get("x-oss-signature-version") != algorithmV4 {
		return errInvalidArgument("x-oss-signature-version is invalid.")
	}
	if !parseCredential(q.Get("x-oss-credential"), &p) {
		return errInvalidArgument("x-oss-credential is invalid.")
	}
	p.additional = parseAdditional(q.Get("x-oss-additional-headers"))
	p.signature = q.Get("x-oss-signature")
	p.timestamp = q.Get("x-oss-date")
	if _, ok := s.creds[p.accessKeyID]; !ok {
		return errInvalidAccessKeyID()
	}
	t, err := time.Parse(iso8601DateTime, p.timestamp)
	if err != nil {
		return errInvalidArgument("x-oss-date is invalid.")
	}
	exp, err := strconv.ParseInt(q.Get("x-oss-expires"), 10, 64)
	if err != nil || exp <= 0 || exp > maxPresignExpires {
		return errInvalidArgument("x-oss-expires is invalid.")
	}
	if time.Now().After(t.Add(time.Duration(exp) * time.Second)) {
		return errExpired()
	}
	return s.verifyV4(r, req, &p)
}

func (s *Server) verifyV4(r *http.Request, req *request, p *v4Params) *ossError {
	secret, ok := s.creds[p.accessKeyID]
	if !ok {
		return errInvalidAccessKeyID()
	}
	key := v4SigningKey(secret, p.date, p.region, p.product)
	scope := p.date + "/" + p.region + "/" + p.product + "/aliyun_v4_request"
	var first string
	// Clients disagree on whether an empty query value is written "k" or "k=";
	// the signature decides which one this client used.
	for _, emptyWithEquals := range []bool{false, true} {
		cr := v4CanonicalRequest(r, req, p, emptyWithEquals)
		sum := sha256.Sum256([]byte(cr))
		sts := algorithmV4 + "\n" + p.timestamp + "\n" + scope + "\n" + hex.EncodeToString(sum[:])
		if first == "" {
			first = sts
		}
		mac := hmac.New(sha256.New, key)
		mac.Write([]byte(sts))
		if hmac.Equal([]byte(hex.EncodeToString(mac.Sum(nil))), []byte(p.signature)) {
			return nil
		}
	}
	return errSignature(first)
}

func v4SigningKey(secret, date, region, product string) []byte {
	k := []byte("aliyun_v4" + secret)
	for _, part := range []string{date, region, product, "aliyun_v4_request"} {
		h := hmac.New(sha256.New, k)
		h.Write([]byte(part))
		k = h.Sum(nil)
	}
	return k
}

func v4CanonicalRequest(r *http.Request, req *request, p *v4Params, emptyWithEquals bool) string {
	var b strings.Builder
	b.WriteString(r.Method + "\n")
	b.WriteString(escapeV4(canonicalResource(req), false) + "\n")

	type kv struct{ k, v string }
	var params []kv
	for k, vs := range req.query {
		if p.presigned && k == "x-oss-signature" {
			continue
		}
		for _, v := range vs {
			params = append(params, kv{escapeV4(k, true), escapeV4(v, true)})
		}
	}
	sort.Slice(params, func(i, j int) bool {
		if params[i].k != params[j].k {
			return params[i].k < params[j].k
		}
		return params[i].v < params[j].v
	})
	for i, kv := range params {
		if i > 0 {
			b.WriteByte('&')
		}
		b.WriteString(kv.k)
		if kv.v != "" || emptyWithEquals {
			b.WriteString("=" + kv.v)
		}
	}
	b.WriteByte('\n')

	additional := map[string]bool{}
	for _, h := range p.additional {
		additional[h] = true
	}
	var names []string
	for k := range r.Header {
		lk := strings.ToLower(k)
		if strings.HasPrefix(lk, "x-oss-") || lk == "content-type" || lk == "content-md5" || additional[lk] {
			names = append(names, lk)
		}
	}
	if additional["host"] {
		names = append(names, "host")
	}
	sort.Strings(names)
	for _, n := range names {
		v := headerValue(r.Header, n)
		if n == "host" {
			v = r.Host
		}
		b.WriteString(n + ":" + v + "\n")
	}
	b.WriteByte('\n')
	b.WriteString(strings.Join(p.additional, ";") + "\n")
	payload := unsignedPayload
	if v := r.Header.Get("x-oss-content-sha256"); v != "" {
		payload = v
	}
	b.WriteString(payload)
	return b.String()
}

// escapeV4 percent-encodes everything but RFC 3986 unreserved characters
// (and '/' unless encodeSlash), with upper-case hex.
func escapeV4(s string, encodeSlash bool) string {
	const hexDigits = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'A' <= c && c <= 'Z', 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '-', c == '.', c == '_', c == '~':
			b.WriteByte(c)
		case c == '/' && !encodeSlash:
			b.WriteByte(c)
		default:
			b.WriteByte('%')
			b.WriteByte(hexDigits[c>>4])
			b.WriteByte(hexDigits[c&15])
		}
	}
	return b.String()
}
