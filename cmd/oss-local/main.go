// Command oss-local runs the local OSS-compatible server (internal/osslocal)
// for the demo, benchmarks and manual testing.
//
//	oss-local --addr 127.0.0.1:9000 --data-dir /tmp/oss --access-key-id AK --bucket velero
//
// The secret comes from --access-key-secret or, to keep it off the command
// line, from OSS_LOCAL_ACCESS_KEY_SECRET.
package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"github.com/velero-etcd/velero-plugin-for-etcd/internal/osslocal"
)

const (
	flagAddr            = "addr"
	flagDataDir         = "data-dir"
	flagAccessKeyID     = "access-key-id"
	flagAccessKeySecret = "access-key-secret"
	flagBucket          = "bucket"
	flagQuiet           = "quiet"
	envAccessKeySecret  = "OSS_LOCAL_ACCESS_KEY_SECRET"
	shutdownTimeout     = 10 * time.Second
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "oss-local:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := pflag.NewFlagSet("oss-local", pflag.ContinueOnError)
	addr := fs.String(flagAddr, "127.0.0.1:9000", "address to listen on (port 0 picks a free one)")
	dataDir := fs.String(flagDataDir, "", "directory holding objects and uploads (required)")
	ak := fs.String(flagAccessKeyID, "", "access key id accepted by the server (required)")
	sk := fs.String(flagAccessKeySecret, "", "access key secret (default $"+envAccessKeySecret+")")
	buckets := fs.StringArray(flagBucket, nil, "bucket to create; repeatable")
	quiet := fs.Bool(flagQuiet, false, "do not log requests")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return nil
		}
		return err
	}
	if *sk == "" {
		*sk = os.Getenv(envAccessKeySecret)
	}
	switch {
	case *dataDir == "":
		return errors.New("--" + flagDataDir + " is required")
	case *ak == "":
		return errors.New("--" + flagAccessKeyID + " is required")
	case *sk == "":
		return errors.New("--" + flagAccessKeySecret + " or $" + envAccessKeySecret + " is required")
	}

	logger := log.New(os.Stderr, "oss-local: ", log.LstdFlags)
	var reqLogger *log.Logger
	if !*quiet {
		reqLogger = logger
	}
	srv, err := osslocal.New(osslocal.Config{
		DataDir:     *dataDir,
		Credentials: map[string]string{*ak: *sk},
		Buckets:     *buckets,
		Logger:      reqLogger,
	})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", *addr, err)
	}
	httpServer := &http.Server{Handler: srv, ReadHeaderTimeout: 30 * time.Second, ErrorLog: logger}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	serveErr := make(chan error, 1)
	go func() { serveErr <- httpServer.Serve(ln) }()
	logger.Printf("listening on http://%s (data dir %s, buckets %v)", ln.Addr(), *dataDir, *buckets)

	select {
	case err := <-serveErr:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	logger.Printf("shutting down")
	shutdownCtx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := httpServer.Shutdown(shutdownCtx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	logger.Printf("stopped")
	return nil
}
