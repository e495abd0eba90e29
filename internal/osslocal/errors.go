package osslocal

import (
	"encoding/base64"
	"encoding/xml"
	"net/http"
	"strconv"
)

// ossError is an error the server answers with, in the shape OSS uses.
type ossError struct {
	Status  int
	Code    string
	Message string
	// StringToSign is echoed for SignatureDoesNotMatch, as OSS does, so that a
	// client author can compare it with their own.
	StringToSign string
}

func (e *ossError) Error() string { return e.Code + ": " + e.Message }

func newError(status int, code, msg string) *ossError {
	return &ossError{Status: status, Code: code, Message: msg}
}

func errNoSuchKey() *ossError {
	return newError(http.StatusNotFound, "NoSuchKey", "The specified key does not exist.")
}

func errNoSuchBucket() *ossError {
	return newError(http.StatusNotFound, "NoSuchBucket", "The specified bucket does not exist.")
}

func errNoSuchUpload() *ossError {
	return newError(http.StatusNotFound, "NoSuchUpload",
		"The specified upload does not exist. The upload ID may be invalid, or the upload may have been aborted or completed.")
}

func errAccessDenied(msg string) *ossError {
	return newError(http.StatusForbidden, "AccessDenied", msg)
}

func errInvalidArgument(msg string) *ossError {
	return newError(http.StatusBadRequest, "InvalidArgument", msg)
}

func errInternal(msg string) *ossError {
	return newError(http.StatusInternalServerError, "InternalError", msg)
}

// errorCodes maps OSS error codes to their EC values (diagnostic codes).
var errorCodes = map[string]string{
	"NoSuchKey":             "0026-00000001",
	"NoSuchBucket":          "0015-00000101",
	"NoSuchUpload":          "0042-00000002",
	"AccessDenied":          "0002-00000001",
	"SignatureDoesNotMatch": "0002-00000040",
	"InvalidAccessKeyId":    "0002-00000901",
	"RequestTimeTooSkewed":  "0002-00000504",
	"InvalidArgument":       "0017-00000001",
	"InvalidDigest":         "0016-00000301",
	"InvalidPart":           "0042-00000301",
	"InvalidPartOrder":      "0042-00000302",
	"EntityTooSmall":        "0042-00000303",
	"MalformedXML":          "0016-00000502",
	"InvalidRange":          "0026-00000003",
	"MethodNotAllowed":      "0003-00000001",
	"NotImplemented":        "0003-00000002",
	"IncompleteBody":        "0016-00000101",
	"InternalError":         "0000-00000000",
}

type errorBody struct {
	XMLName      xml.Name `xml:"Error"`
	Code         string   `xml:"Code"`
	Message      string   `xml:"Message"`
	RequestID    string   `xml:"RequestId"`
	HostID       string   `xml:"HostId"`
	StringToSign string   `xml:"StringToSign,omitempty"`
	EC           string   `xml:"EC"`
}

// writeError answers with an OSS XML error. HEAD responses carry no body, so
// the XML also goes base64-encoded into x-oss-err, where the SDKs look for it.
func writeError(w http.ResponseWriter, r *http.Request, e *ossError) {
	ec := errorCodes[e.Code]
	if ec == "" {
		ec = "0000-00000000"
	}
	body := errorBody{
		Code:         e.Code,
		Message:      e.Message,
		RequestID:    w.Header().Get(headerRequestID),
		HostID:       r.Host,
		StringToSign: e.StringToSign,
		EC:           ec,
	}
	out, err := xml.MarshalIndent(body, "", "  ")
	if err != nil {
		out = nil
	}
	out = append([]byte(xml.Header), out...)
	h := w.Header()
	h.Set("Content-Type", "application/xml")
	h.Set("x-oss-ec", ec)
	if r.Method == http.MethodHead {
		h.Set("x-oss-err", base64.StdEncoding.EncodeToString(out))
		h.Set("Content-Length", "0")
		w.WriteHeader(e.Status)
		return
	}
	h.Set("Content-Length", strconv.Itoa(len(out)))
	w.WriteHeader(e.Status)
	_, _ = w.Write(out)
}

// writeXML answers 200 with v marshalled as XML.
func writeXML(w http.ResponseWriter, v any) {
	out, err := xml.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	out = append([]byte(xml.Header), out...)
	w.Header().Set("Content-Type", "application/xml")
	w.Header().Set("Content-Length", strconv.Itoa(len(out)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(out)
}
