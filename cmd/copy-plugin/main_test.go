package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestImageContract builds the copier and runs it the way the init container
// does: the plugin lands in the target dir as an executable, byte for byte,
// and nothing else is left there.
func TestImageContract(t *testing.T) {
	dir := t.TempDir()
	copier := filepath.Join(dir, "copy-plugin")
	build := exec.Command("go", "build", "-o", copier, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	out, err := build.CombinedOutput()
	require.NoError(t, err, "%s", out)

	src := filepath.Join(dir, "plugins", "velero-plugin-for-etcd")
	require.NoError(t, os.MkdirAll(filepath.Dir(src), 0o755))
	payload := bytes.Repeat([]byte("plugin-binary"), 100000)
	require.NoError(t, os.WriteFile(src, payload, 0o755))
	target := filepath.Join(dir, "target")
	require.NoError(t, os.Mkdir(target, 0o777))

	out, err = exec.Command(copier, src, target).CombinedOutput()
	require.NoError(t, err, "%s", out)
	entries, err := os.ReadDir(target)
	require.NoError(t, err)
	require.Len(t, entries, 1, "only the plugin binary is copied")
	assert.Equal(t, "velero-plugin-for-etcd", entries[0].Name())
	fi, err := os.Stat(filepath.Join(target, "velero-plugin-for-etcd"))
	require.NoError(t, err)
	assert.NotZero(t, fi.Mode()&0o111, "the copy is executable, so Velero launches it")
	got, err := os.ReadFile(filepath.Join(target, "velero-plugin-for-etcd"))
	require.NoError(t, err)
	assert.Equal(t, payload, got)

	// Copying again (an init container restart) replaces the file cleanly.
	out, err = exec.Command(copier, src, target).CombinedOutput()
	require.NoError(t, err, "%s", out)

	// A missing target dir is a clear failure, not a panic.
	out, err = exec.Command(copier, src, filepath.Join(dir, "absent")).CombinedOutput()
	require.Error(t, err)
	assert.Contains(t, string(out), "target directory")
	out, err = exec.Command(copier, filepath.Join(dir, "nope"), target).CombinedOutput()
	require.Error(t, err)
	assert.Contains(t, string(out), "opening plugin binary")
}
