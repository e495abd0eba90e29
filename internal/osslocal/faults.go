package osslocal

import (
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"time"
)

// Fault makes the server misbehave for one operation, to test client retries
// and error handling.
type Fault struct {
	Op         string        // operation name, as counted by RequestCount ("PutObject", "UploadPart", ...)
	Nth        int           // fail the Nth matching request counted from injection (1 = the next one); 0 means every matching request
	Status     int           // HTTP status for an OSS XML error (Code below, default "InternalError")
	Code       string        // OSS error code; with Status 0 the status is 500
	ResetAfter int64         // if >0: read that many request-body bytes (uploads) or write that many response-body bytes (GetObject), then reset the TCP connection
	Latency    time.Duration // sleep before handling
	// CorruptBody flips one bit of an upload's body as it arrives, as a
	// faulty NIC or proxy would; the request then succeeds, storing and
	// reporting the digests of bytes the client did not send.
	CorruptBody bool
}

type activeFault struct {
	Fault
	seen int
}

// InjectFault adds f; faults fire in the order they were injected.
func (s *Server) InjectFault(f Fault) {
	s.faultMu.Lock()
	defer s.faultMu.Unlock()
	s.faults = append(s.faults, &activeFault{Fault: f})
}

// ClearFaults removes every injected fault.
func (s *Server) ClearFaults() {
	s.faultMu.Lock()
	defer s.faultMu.Unlock()
	s.faults = nil
}

// takeFault counts an authenticated request of op against the injected
// faults and returns the one that fires, if any. A fault with Nth > 0 fires
// once and is then removed.
func (s *Server) takeFault(op string) *Fault {
	s.faultMu.Lock()
	defer s.faultMu.Unlock()
	var fired *Fault
	kept := s.faults[:0]
	for _, f := range s.faults {
		if f.Op != op {
			kept = append(kept, f)
			continue
		}
		f.seen++
		switch {
		case fired != nil:
			kept = append(kept, f)
		case f.Nth == 0:
			ff := f.Fault
			fired = &ff
			kept = append(kept, f)
		case f.seen == f.Nth:
			ff := f.Fault
			fired = &ff // spent: not kept
		default:
			kept = append(kept, f)
		}
	}
	for i := len(kept); i < len(s.faults); i++ {
		s.faults[i] = nil
	}
	s.faults = kept
	return fired
}

// resetAfterReading reads n bytes of the request body, then resets the
// connection.
func (s *Server) resetAfterReading(w http.ResponseWriter, r *http.Request, n int64) {
	_, _ = io.CopyN(io.Discard, r.Body, n)
	resetConnection(w)
}

// resetConnection hijacks the connection and closes it with SO_LINGER 0, so
// the peer sees a TCP RST rather than an orderly close. Nothing buffered is
// flushed first: callers that want bytes on the wire flush them themselves.
func resetConnection(w http.ResponseWriter) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		return
	}
	conn, _, err := hj.Hijack()
	if err != nil {
		return
	}
	raw := conn
	if tc, ok := conn.(*tls.Conn); ok {
		raw = tc.NetConn()
	}
	if tcp, ok := raw.(*net.TCPConn); ok {
		_ = tcp.SetLinger(0)
		_ = tcp.Close()
		return
	}
	_ = conn.Close()
}

// flipFirstBit passes a body through with the first byte's low bit flipped.
type flipFirstBit struct {
	io.ReadCloser
	done bool
}

func (f *flipFirstBit) Read(p []byte) (int, error) {
	n, err := f.ReadCloser.Read(p)
	if n > 0 && !f.done {
		p[0] ^= 1
		f.done = true
	}
	return n, err
}
