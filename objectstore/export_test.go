package objectstore

import (
	"testing"
	"time"
)

// SetCredentialsFileRecheckForTest shortens how often credentials files are
// re-checked, for the rest of the test.
func SetCredentialsFileRecheckForTest(t *testing.T, d time.Duration) {
	old := credentialsFileRecheck
	credentialsFileRecheck = d
	t.Cleanup(func() { credentialsFileRecheck = old })
}
