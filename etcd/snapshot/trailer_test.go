package snapshot

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"testing"
	"testing/iotest"
)

func fakeSnapshot(pages int) []byte {
	db := make([]byte, pages*512)
	r := rand.NewChaCha8([32]byte{1})
	r.Read(db)
	sum := sha256.Sum256(db)
	return append(db, sum[:]...)
}

func TestVerifyReader(t *testing.T) {
	good := fakeSnapshot(9)
	for name, r := range map[string]io.Reader{
		"whole":    bytes.NewReader(good),
		"one-byte": iotest.OneByteReader(bytes.NewReader(good)),
		"half":     iotest.HalfReader(bytes.NewReader(good)),
	} {
		got, err := io.ReadAll(VerifyReader(r))
		if err != nil || !bytes.Equal(got, good) {
			t.Fatalf("%s: %v", name, err)
		}
	}

	bad := bytes.Clone(good)
	bad[700] ^= 1
	if _, err := io.ReadAll(VerifyReader(iotest.HalfReader(bytes.NewReader(bad)))); !errors.Is(err, ErrTrailerMismatch) {
		t.Fatalf("corrupt: %v", err)
	}
	bad = bytes.Clone(good)
	bad[len(bad)-1] ^= 1
	if _, err := io.ReadAll(VerifyReader(bytes.NewReader(bad))); !errors.Is(err, ErrTrailerMismatch) {
		t.Fatalf("corrupt trailer: %v", err)
	}
	if _, err := io.ReadAll(VerifyReader(bytes.NewReader(good[:len(good)-100]))); !errors.Is(err, ErrMissingTrailer) {
		t.Fatalf("truncated: %v", err)
	}
	if _, err := io.ReadAll(VerifyReader(bytes.NewReader(good[:len(good)-512]))); !errors.Is(err, ErrTrailerMismatch) {
		t.Fatalf("truncated by a page: %v", err)
	}
	if _, err := io.ReadAll(VerifyReader(bytes.NewReader(nil))); !errors.Is(err, ErrMissingTrailer) {
		t.Fatalf("empty: %v", err)
	}
}

func TestPipeSinkPutFailsEarly(t *testing.T) {
	boom := errors.New("boom")
	s := PipeSink(func(r io.Reader) error { return boom })
	var err error
	for i := 0; i < 3 && err == nil; i++ {
		_, err = s.Write([]byte("x"))
	}
	if !errors.Is(err, boom) {
		t.Fatalf("write after put failed: %v", err)
	}
	if err := s.Commit(); !errors.Is(err, boom) {
		t.Fatalf("commit: %v", err)
	}
}

func TestPipeSinkAbort(t *testing.T) {
	seen := make(chan error, 1)
	s := PipeSink(func(r io.Reader) error {
		_, err := io.ReadAll(r)
		seen <- err
		return err
	})
	s.Write([]byte("partial"))
	cause := errors.New("member died")
	s.Abort(cause)
	if err := <-seen; !errors.Is(err, cause) {
		t.Fatalf("put saw %v, want %v", err, cause)
	}
}
