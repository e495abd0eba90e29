//go:build e2e

package e2e_test

import (
	"os"
	"testing"

	"github.com/velero-etcd/velero-plugin-for-etcd/test/e2e/scenario"
)

// TestE2E runs the scenario of issue 5 against a real kube-apiserver and
// velero server. The first run on a machine builds kube-apiserver and velero
// (hack/build-tools.sh, cached afterwards): give it -timeout 60m.
func TestE2E(t *testing.T) {
	// The step lines go to stdout as they happen, like the demo's; details
	// (every command's full output) go to the test log.
	r := scenario.NewReporter(os.Stdout)
	scenario.Run(t, scenario.TestSubtests{T: t}, r)
}
