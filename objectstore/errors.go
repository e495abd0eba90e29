package objectstore

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"

	"github.com/aliyun/alibabacloud-oss-go-sdk-v2/oss"
	osscreds "github.com/aliyun/alibabacloud-oss-go-sdk-v2/oss/credentials"
)

// Error is returned by every ObjectStore operation. Its text names the
// operation, bucket and key and, for a service error, the OSS error code and
// request id, e.g.
//
//	oss GetObject bucket "velero" key "backups/b1/x": NoSuchKey (HTTP 404, request id 5F...): The specified key does not exist.
//
// Velero recognises a missing object on deletion by the text "NoSuchKey".
type Error struct {
	Op         string
	Bucket     string
	Key        string
	Prefix     string // for list operations, instead of Key
	Code       string // OSS error code, empty for client-side errors
	RequestID  string
	StatusCode int
	Message    string
	Err        error

	redact *secretRedactor
}

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "oss %s bucket %q", e.Op, e.Bucket)
	if e.Key != "" {
		fmt.Fprintf(&b, " key %q", e.Key)
	}
	if e.Prefix != "" {
		fmt.Fprintf(&b, " prefix %q", e.Prefix)
	}
	b.WriteString(": ")
	if e.Code != "" {
		fmt.Fprintf(&b, "%s (HTTP %d, request id %s)", e.Code, e.StatusCode, e.RequestID)
		if e.Message != "" {
			b.WriteString(": " + e.Message)
		}
	} else if e.Err != nil {
		b.WriteString(e.Err.Error())
	}
	return e.redact.redact(b.String())
}

func (e *Error) Unwrap() error { return e.Err }

// IsNotFound reports whether err is an OSS 404 for a missing object.
func IsNotFound(err error) bool {
	var se *oss.ServiceError
	if errors.As(err, &se) {
		return se.StatusCode == http.StatusNotFound && (se.Code == "NoSuchKey" || se.Code == "BadErrorResponse")
	}
	return false
}

func isCode(err error, code string) bool {
	var se *oss.ServiceError
	return errors.As(err, &se) && se.Code == code
}

// wrapListErr is wrapErr for operations on a prefix.
func (o *ObjectStore) wrapListErr(op, bucket, prefix string, err error) error {
	err = o.wrapErr(op, bucket, "", err)
	var e *Error
	if errors.As(err, &e) {
		e.Prefix = prefix
	}
	return err
}

func (o *ObjectStore) wrapErr(op, bucket, key string, err error) error {
	if err == nil {
		return nil
	}
	var already *Error
	if errors.As(err, &already) && already.Op == op {
		return err
	}
	e := &Error{Op: op, Bucket: bucket, Key: key, Err: err, redact: o.secrets}
	var se *oss.ServiceError
	if errors.As(err, &se) {
		e.Code, e.RequestID, e.StatusCode, e.Message = se.Code, se.RequestID, se.StatusCode, se.Message
		if e.Code == "BadErrorResponse" && se.StatusCode == http.StatusNotFound && key != "" {
			// HEAD responses carry no body; without x-oss-err the SDK cannot tell the code.
			e.Code = "NoSuchKey"
		}
	} else if errors.Is(err, context.DeadlineExceeded) {
		e.Err = fmt.Errorf("timed out: %w", err)
	}
	return e
}

// secretRedactor remembers the credential values handed to the SDK so that no
// error text can carry one, whatever a lower layer put into it.
type secretRedactor struct {
	mu     sync.RWMutex
	values map[string]struct{}
}

func newSecretRedactor() *secretRedactor {
	return &secretRedactor{values: map[string]struct{}{}}
}

func (r *secretRedactor) remember(c osscreds.Credentials) {
	r.mu.RLock()
	_, a := r.values[c.AccessKeySecret]
	_, b := r.values[c.SecurityToken]
	r.mu.RUnlock()
	if a && (b || c.SecurityToken == "") {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, v := range []string{c.AccessKeySecret, c.SecurityToken} {
		if len(v) >= 6 {
			r.values[v] = struct{}{}
		}
	}
}

func (r *secretRedactor) redact(s string) string {
	if r == nil {
		return s
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	for v := range r.values {
		if strings.Contains(s, v) {
			s = strings.ReplaceAll(s, v, "[REDACTED]")
		}
	}
	return s
}

// redactingProvider records every credential it passes on.
type redactingProvider struct {
	inner   osscreds.CredentialsProvider
	secrets *secretRedactor
}

func (p redactingProvider) GetCredentials(ctx context.Context) (osscreds.Credentials, error) {
	c, err := p.inner.GetCredentials(ctx)
	if err == nil {
		p.secrets.remember(c)
	}
	return c, err
}
