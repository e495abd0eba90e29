package conformance

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/velero-etcd/velero-plugin-for-etcd/internal/osslocal/osstest"
)

const nodeDir = "node"

// lockStamp records which package-lock.json node_modules was installed from.
const lockStamp = "node_modules/.osslocal-lock-sha256"

// npmInstall runs `npm ci` unless node_modules already matches package-lock.json.
func npmInstall(t *testing.T) {
	t.Helper()
	npm, err := exec.LookPath("npm")
	require.NoError(t, err, "npm is required for the ali-oss conformance test")
	lock, err := os.ReadFile(filepath.Join(nodeDir, "package-lock.json"))
	require.NoError(t, err)
	sum := sha256.Sum256(lock)
	want := hex.EncodeToString(sum[:])
	if have, err := os.ReadFile(filepath.Join(nodeDir, lockStamp)); err == nil && string(have) == want {
		return
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, npm, "ci", "--no-audit", "--no-fund")
	cmd.Dir = nodeDir
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "npm ci:\n%s", out)
	require.NoError(t, os.WriteFile(filepath.Join(nodeDir, lockStamp), []byte(want), 0o644))
}

func TestAliOSSNode(t *testing.T) {
	npmInstall(t)
	node, err := exec.LookPath("node")
	require.NoError(t, err, "node is required for the ali-oss conformance test")
	env := osstest.Start(t)

	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "conformance.js")
	cmd.Dir = nodeDir
	cmd.Env = append(os.Environ(),
		"OSS_ENDPOINT="+env.URL,
		"OSS_HOST_ENDPOINT=http://"+env.Host,
		"OSS_ACCESS_KEY_ID="+env.AccessKeyID,
		"OSS_ACCESS_KEY_SECRET="+env.AccessKeySecret,
		"OSS_BUCKET="+env.Bucket,
		"OSS_REGION="+env.Region,
	)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	t.Logf("conformance.js stdout:\n%s", stdout.String())
	require.NoError(t, err, "conformance.js failed:\n%s", stderr.String())

	out := stdout.String()
	for _, want := range []string{
		"ok v1: signatureUrl GET", "ok v4: signatureUrlV4 GET",
		"ok v1: multipartUpload then get", "ok v4: multipartUpload then get",
		"ok v1: listV2 pages with continuation-token", "ok v4: listV2 pages with continuation-token",
		"ok v1: deleteMulti and delete", "ok v4: wrong secret and unknown key id are refused",
		"ali-oss conformance: ",
	} {
		require.Contains(t, out, want)
	}
	require.False(t, strings.Contains(out, " 0 passed"), "no checks ran")
	require.Greater(t, env.Server.RequestCount("UploadPart"), 8)
	require.Equal(t, 0, env.Server.PendingUploads(env.Bucket))
}
