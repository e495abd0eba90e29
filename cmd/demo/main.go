// Command demo shows the plugin working on local defaults: it starts the
// local OSS server, launches the plugin binary through Velero's own plugin
// host code, and runs Velero's real backup store on top of it.
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/sirupsen/logrus"
	velerov1 "github.com/vmware-tanzu/velero/pkg/apis/velero/v1"
	"github.com/vmware-tanzu/velero/pkg/persistence"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/velero-etcd/velero-plugin-for-etcd/internal/osslocal"
	"github.com/velero-etcd/velero-plugin-for-etcd/internal/pluginhost"
	"github.com/velero-etcd/velero-plugin-for-etcd/objectstore"
)

const (
	bucket = "velero"
	region = "cn-hangzhou"
)

func main() {
	pluginhost.ServeDiscovery()
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "demo failed:", err)
		os.Exit(1)
	}
}

func step(format string, args ...any) { fmt.Printf("\n==> "+format+"\n", args...) }
func show(format string, args ...any) { fmt.Printf("    "+format+"\n", args...) }

func run() error {
	work, err := os.MkdirTemp("", "velero-etcd-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)

	step("Starting oss-local, the local OSS-compatible server")
	ak, sk := "demo-"+randomHex(4), randomHex(16)
	srv, err := osslocal.New(osslocal.Config{
		DataDir:     filepath.Join(work, "oss"),
		Credentials: map[string]string{ak: sk},
		Buckets:     []string{bucket},
	})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	httpSrv := &http.Server{Handler: srv, ReadHeaderTimeout: 10 * time.Second}
	go httpSrv.Serve(ln)
	defer httpSrv.Shutdown(context.Background())
	endpoint := "http://" + ln.Addr().String()
	show("endpoint %s, bucket %q, access key id %s", endpoint, bucket, ak)

	step("Building the plugin and launching it through Velero's plugin host (pkg/plugin/clientmgmt)")
	dir, err := pluginhost.Build()
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	hostLog := logrus.New()
	hostLog.SetOutput(io.Discard)
	manager, err := pluginhost.NewManager(dir, hostLog)
	if err != nil {
		return err
	}
	defer manager.CleanupClients()
	show("plugin binary %s", filepath.Join(dir, pluginhost.BinaryName))

	cred := filepath.Join(work, "cloud")
	if err := os.WriteFile(cred, []byte(fmt.Sprintf("ALIBABA_CLOUD_ACCESS_KEY_ID=%s\nALIBABA_CLOUD_ACCESS_KEY_SECRET=%s\n", ak, sk)), 0o600); err != nil {
		return err
	}
	bsl := &velerov1.BackupStorageLocation{
		ObjectMeta: metav1.ObjectMeta{Namespace: "velero", Name: "default"},
		Spec: velerov1.BackupStorageLocationSpec{
			Provider: objectstore.PluginName,
			Config:   map[string]string{"region": region, "endpoint": endpoint, "credentialsFile": cred},
			StorageType: velerov1.StorageType{ObjectStorage: &velerov1.ObjectStorageLocation{
				Bucket: bucket, Prefix: "demo",
			}},
		},
	}
	step("BackupStorageLocation %q with provider %s", bsl.Name, bsl.Spec.Provider)
	bs, err := persistence.NewObjectBackupStoreGetter(nil).Get(bsl, manager, hostLog)
	if err != nil {
		return err
	}
	if err := bs.IsValid(); err != nil {
		return fmt.Errorf("storage location invalid: %w", err)
	}
	show("IsValid: ok")

	step("Velero writes backup \"nightly\" (metadata, 24 MiB of contents, log) through the plugin")
	contents := make([]byte, 24<<20)
	rand.Read(contents)
	start := time.Now()
	err = bs.PutBackup(persistence.BackupInfo{
		Name:     "nightly",
		Metadata: bytes.NewReader([]byte(`{"apiVersion":"velero.io/v1","kind":"Backup","metadata":{"name":"nightly","namespace":"velero"}}`)),
		Contents: bytes.NewReader(contents),
		Log:      bytes.NewReader([]byte("demo log line\n")),
	})
	if err != nil {
		return err
	}
	show("PutBackup: ok in %s (multipart uploads completed: %d, pending: %d)",
		time.Since(start).Round(time.Millisecond), srv.RequestCount("CompleteMultipartUpload"), srv.PendingUploads(bucket))

	store, err := manager.GetObjectStore(objectstore.PluginName)
	if err != nil {
		return err
	}
	keys, err := store.ListObjects(bucket, "demo/backups/nightly/")
	if err != nil {
		return err
	}
	for _, k := range keys {
		show("oss://%s/%s", bucket, k)
	}

	names, err := bs.ListBackups()
	if err != nil {
		return err
	}
	show("ListBackups: %v", names)

	step("velero backup download: a presigned URL fetched with a plain HTTP GET")
	url, err := bs.GetDownloadURL(velerov1.DownloadTarget{Kind: velerov1.DownloadTargetKindBackupContents, Name: "nightly"})
	if err != nil {
		return err
	}
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK || !bytes.Equal(got, contents) {
		return fmt.Errorf("download: status %d, %d bytes, equal=%v", resp.StatusCode, len(got), bytes.Equal(got, contents))
	}
	show("HTTP %d, %d bytes, identical to what was written", resp.StatusCode, len(got))

	step("velero backup delete nightly")
	if err := bs.DeleteBackup("nightly"); err != nil {
		return err
	}
	keys, err = store.ListObjects(bucket, "demo/backups/nightly/")
	if err != nil {
		return err
	}
	show("objects left under demo/backups/nightly/: %d", len(keys))
	if len(keys) != 0 {
		return fmt.Errorf("DeleteBackup left %v", keys)
	}
	fmt.Println("\nDemo finished: the OSS object store works end to end through Velero's plugin host.")
	return nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		log.Fatal(err)
	}
	return hex.EncodeToString(b)
}
