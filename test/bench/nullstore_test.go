package bench

import (
	"errors"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/vmware-tanzu/velero/pkg/plugin/velero"
)

// nullStoreName is an ObjectStore served by the benchmark binary itself
// through Velero's plugin framework. It stores nothing and serves zeros, so
// PutObject and GetObject through it measure Velero's gRPC plugin path alone
// (16 KiB messages over go-plugin's connection): the ceiling any ObjectStore
// plugin has on this machine.
const nullStoreName = "velero-etcd.io/bench-null"

type nullStore struct{}

var _ velero.ObjectStore = nullStore{}

func (nullStore) Init(map[string]string) error { return nil }

// PutObject drains body the way the OSS store reads it: 64 KiB per Read.
func (nullStore) PutObject(_, _ string, body io.Reader) error {
	buf := make([]byte, 64<<10)
	for {
		if _, err := body.Read(buf); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
}

// GetObject serves as many zero bytes as the key's last path element says.
func (nullStore) GetObject(_, key string) (io.ReadCloser, error) {
	n, err := strconv.ParseInt(key[strings.LastIndex(key, "/")+1:], 10, 64)
	if err != nil {
		return nil, err
	}
	return io.NopCloser(io.LimitReader(zeros{}, n)), nil
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

func (nullStore) ObjectExists(string, string) (bool, error)                   { return false, nil }
func (nullStore) ListCommonPrefixes(string, string, string) ([]string, error) { return nil, nil }
func (nullStore) ListObjects(string, string) ([]string, error)                { return nil, nil }
func (nullStore) DeleteObject(string, string) error                           { return nil }
func (nullStore) CreateSignedURL(string, string, time.Duration) (string, error) {
	return "", errors.New("not supported")
}
