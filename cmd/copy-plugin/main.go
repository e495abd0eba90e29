// Command copy-plugin is the plugin image's entrypoint. `velero plugin add`
// runs the image as an init container with no command and an emptyDir at
// /target; Velero then launches every executable it finds there. So the
// image copies the plugin binary, and only it, into /target.
package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
)

const (
	defaultSource = "/plugins/velero-plugin-for-etcd"
	defaultTarget = "/target"
)

func main() {
	src, dst := defaultSource, defaultTarget
	if len(os.Args) > 1 {
		src = os.Args[1]
	}
	if len(os.Args) > 2 {
		dst = os.Args[2]
	}
	if len(os.Args) > 3 {
		fmt.Fprintln(os.Stderr, "usage: copy-plugin [SOURCE [TARGET-DIR]]")
		os.Exit(2)
	}
	if err := copyPlugin(src, dst); err != nil {
		fmt.Fprintln(os.Stderr, "copy-plugin:", err)
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "copied %s to %s\n", src, dst)
}

// copyPlugin writes a temp file in the target dir and renames it, so Velero
// never finds a half-copied executable.
func copyPlugin(src, dstDir string) error {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("opening plugin binary: %w", err)
	}
	defer in.Close()
	if fi, err := os.Stat(dstDir); err != nil {
		return fmt.Errorf("target directory: %w", err)
	} else if !fi.IsDir() {
		return fmt.Errorf("target %s is not a directory", dstDir)
	}
	tmp, err := os.CreateTemp(dstDir, ".copy-*")
	if err != nil {
		return fmt.Errorf("creating temp file in %s: %w", dstDir, err)
	}
	defer os.Remove(tmp.Name())
	if _, err := io.Copy(tmp, in); err != nil {
		tmp.Close()
		return fmt.Errorf("copying %s: %w", src, err)
	}
	if err := tmp.Chmod(0o755); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	dst := filepath.Join(dstDir, filepath.Base(src))
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return fmt.Errorf("installing %s: %w", dst, err)
	}
	return nil
}
