// Package e2e holds the end-to-end test of the plugin (e2e_test.go, build tag
// e2e): a real kube-apiserver and velero server run the commands a user
// types. The scenario itself is package scenario, which `make demo`
// (cmd/demo) runs too.
//
//	cd test/e2e && go test -tags e2e -count=1 -timeout 60m ./...
package e2e
