// Package bench holds `make bench`: every figure is measured next to a
// baseline in the same run and printed as a ratio, because the machines that
// run it are noisy.
package bench

import (
	"testing"

	"github.com/sirupsen/logrus"
	"github.com/vmware-tanzu/velero/pkg/plugin/framework"

	"github.com/velero-etcd/velero-plugin-for-etcd/internal/plugintest"
)

func TestMain(m *testing.M) {
	plugintest.Main(m, func(s framework.Server) framework.Server {
		return s.RegisterObjectStore(nullStoreName, func(logrus.FieldLogger) (any, error) { return nullStore{}, nil })
	})
}
