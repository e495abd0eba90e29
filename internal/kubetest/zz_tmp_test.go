package kubetest

import (
	"testing"
	"time"
)

func TestTmpTimeout(t *testing.T) {
	Start(t)
	time.Sleep(time.Hour)
}
