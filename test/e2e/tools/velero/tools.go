//go:build tools

// Package tools records the command this module exists to build, so that
// `go mod tidy` keeps its dependencies.
package tools

import _ "github.com/vmware-tanzu/velero/cmd/velero"
