package snapshot

import (
	"errors"
	"io"
)

// errPutReturned is what a writer sees if put stops reading before the end.
var errPutReturned = errors.New("upload stopped reading the snapshot")

// PipeSink adapts a consumer of an io.Reader, such as an object store's
// PutObject, to a Sink. put runs in its own goroutine on the read end of a
// pipe. Commit closes the pipe (put sees io.EOF and completes the upload) and
// returns put's error; Abort closes it with the error (put sees a non-EOF error
// and must abandon the upload) and waits for put to return.
func PipeSink(put func(io.Reader) error) Sink {
	pr, pw := io.Pipe()
	s := &pipeSink{pw: pw, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		s.err = put(pr)
		if s.err != nil {
			pr.CloseWithError(s.err)
		} else {
			pr.CloseWithError(errPutReturned)
		}
	}()
	return s
}

type pipeSink struct {
	pw   *io.PipeWriter
	done chan struct{}
	err  error // put's result, valid once done is closed
}

func (s *pipeSink) Write(p []byte) (int, error) { return s.pw.Write(p) }

func (s *pipeSink) Commit() error {
	s.pw.Close()
	<-s.done
	return s.err
}

func (s *pipeSink) Abort(err error) {
	if err == nil {
		err = errors.New("snapshot aborted")
	}
	s.pw.CloseWithError(err)
	<-s.done
}
