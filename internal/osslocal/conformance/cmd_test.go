package conformance

import (
	"bufio"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aliyun/alibabacloud-oss-go-sdk-v2/oss"
	"github.com/stretchr/testify/require"
)

// TestOSSLocalBinary builds cmd/oss-local, runs it on a free port, makes a
// signed request with the Go SDK v2 and stops it with SIGTERM.
func TestOSSLocalBinary(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	bin := filepath.Join(t.TempDir(), "oss-local")
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/oss-local")
	build.Dir = filepath.Join("..", "..", "..")
	out, err := build.CombinedOutput()
	require.NoError(t, err, "go build:\n%s", out)

	const ak, sk = "LTAIbinarytest", "binary-test-secret"
	dataDir := t.TempDir()
	cmd := exec.CommandContext(ctx, bin, "--addr", "127.0.0.1:0", "--data-dir", dataDir,
		"--access-key-id", ak, "--bucket", "velero", "--bucket", "second")
	cmd.Env = append(os.Environ(), "OSS_LOCAL_ACCESS_KEY_SECRET="+sk)
	stderr, err := cmd.StderrPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})

	lines := make(chan string, 100)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	addrRE := regexp.MustCompile(`listening on (http://127\.0\.0\.1:\d+)`)
	var endpoint string
	var log []string
	for endpoint == "" {
		select {
		case line, ok := <-lines:
			require.True(t, ok, "oss-local exited before listening:\n%s", strings.Join(log, "\n"))
			log = append(log, line)
			if m := addrRE.FindStringSubmatch(line); m != nil {
				endpoint = m[1]
			}
		case <-ctx.Done():
			t.Fatalf("no address logged:\n%s", strings.Join(log, "\n"))
		}
	}

	c := oss.NewClient(oss.LoadDefaultConfig().
		WithCredentialsProvider(credentialsFor(ak, sk)).
		WithRegion("cn-hangzhou").WithEndpoint(endpoint).WithRetryMaxAttempts(1))
	_, err = c.PutObject(ctx, &oss.PutObjectRequest{Bucket: oss.Ptr("second"), Key: oss.Ptr("k"), Body: strings.NewReader("v")})
	require.NoError(t, err)
	get, err := c.GetObject(ctx, &oss.GetObjectRequest{Bucket: oss.Ptr("second"), Key: oss.Ptr("k")})
	require.NoError(t, err)
	body, _ := io.ReadAll(get.Body)
	get.Body.Close()
	require.Equal(t, "v", string(body))

	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	for line := range lines {
		log = append(log, line)
	}
	require.NoError(t, cmd.Wait(), "exit after SIGTERM:\n%s", strings.Join(log, "\n"))
	all := strings.Join(log, "\n")
	require.Contains(t, all, "op=PutObject status=200")
	require.Contains(t, all, "stopped")
	require.NotContains(t, all, sk, "the secret must never be logged")
}
