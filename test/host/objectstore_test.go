package host

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/velero-etcd/velero-plugin-for-etcd/internal/actiontest"

	"github.com/sirupsen/logrus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	velerov1 "github.com/vmware-tanzu/velero/pkg/apis/velero/v1"
	"github.com/vmware-tanzu/velero/pkg/persistence"
	"github.com/vmware-tanzu/velero/pkg/plugin/velero"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/velero-etcd/velero-plugin-for-etcd/internal/osslocal/osstest"
	"github.com/velero-etcd/velero-plugin-for-etcd/internal/plugintest"
	"github.com/velero-etcd/velero-plugin-for-etcd/objectstore"
)

func newLogger() (*logrus.Logger, *actiontest.Log) { return actiontest.NewLogger() }

// credentialsFile writes a dotenv credentials file as Velero writes a BSL's
// spec.credential Secret key to disk.
func credentialsFile(t *testing.T, ak, sk string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "cloud")
	body := fmt.Sprintf("ALIBABA_CLOUD_ACCESS_KEY_ID=%s\nALIBABA_CLOUD_ACCESS_KEY_SECRET=%s\n", ak, sk)
	require.NoError(t, os.WriteFile(p, []byte(body), 0o600))
	return p
}

func storeConfig(t *testing.T, env *osstest.Env) map[string]string {
	return map[string]string{
		"bucket":          env.Bucket,
		"region":          env.Region,
		"endpoint":        env.URL,
		"credentialsFile": credentialsFile(t, env.AccessKeyID, env.AccessKeySecret),
	}
}

func objectStore(t *testing.T, log logrus.FieldLogger, config map[string]string) velero.ObjectStore {
	t.Helper()
	store, err := plugintest.Manager(t, log).GetObjectStore(objectstore.PluginName)
	require.NoError(t, err)
	require.NoError(t, store.Init(config))
	return store
}

func TestObjectStoreOverGRPC(t *testing.T) {
	env := osstest.Start(t)
	log, captured := newLogger()
	store := objectStore(t, log, storeConfig(t, env))
	b := env.Bucket

	small := []byte("hello from velero")
	big := make([]byte, 20<<20+12345) // several default parts plus a tail
	_, err := rand.Read(big)
	require.NoError(t, err)

	require.NoError(t, store.PutObject(b, "p/backups/b1/small.txt", bytes.NewReader(small)))
	require.NoError(t, store.PutObject(b, "p/backups/b1/big.bin", bytes.NewReader(big)))
	require.NoError(t, store.PutObject(b, "p/backups/b2/velero-backup.json", strings.NewReader("{}")))
	assert.Zero(t, env.Server.PendingUploads(b), "a completed multipart upload leaves no pending upload")
	assert.Positive(t, env.Server.RequestCount("CompleteMultipartUpload"), "a body bigger than a part goes multipart")

	ok, err := store.ObjectExists(b, "p/backups/b1/small.txt")
	require.NoError(t, err)
	assert.True(t, ok)
	ok, err = store.ObjectExists(b, "p/backups/b1/missing")
	require.NoError(t, err, "a missing key is (false, nil), not an error")
	assert.False(t, ok)

	for key, want := range map[string][]byte{"p/backups/b1/small.txt": small, "p/backups/b1/big.bin": big} {
		rc, err := store.GetObject(b, key)
		require.NoError(t, err)
		got, err := io.ReadAll(rc)
		require.NoError(t, err)
		require.NoError(t, rc.Close())
		assert.True(t, bytes.Equal(want, got), "%s round trips byte for byte", key)
	}

	// Over gRPC the error of a missing key surfaces at the first Read; Velero
	// matches its text on NoSuchKey.
	rc, err := store.GetObject(b, "p/backups/b1/missing")
	if err == nil {
		_, err = io.ReadAll(rc)
		rc.Close()
	}
	require.Error(t, err)
	assert.Contains(t, err.Error(), "NoSuchKey")

	prefixes, err := store.ListCommonPrefixes(b, "p/backups/", "/")
	require.NoError(t, err)
	sort.Strings(prefixes)
	assert.Equal(t, []string{"p/backups/b1/", "p/backups/b2/"}, prefixes)

	keys, err := store.ListObjects(b, "p/backups/b1/")
	require.NoError(t, err)
	sort.Strings(keys)
	assert.Equal(t, []string{"p/backups/b1/big.bin", "p/backups/b1/small.txt"}, keys)

	url, err := store.CreateSignedURL(b, "p/backups/b1/small.txt", time.Minute)
	require.NoError(t, err)
	resp, err := http.Get(url)
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode, "%s", body)
	assert.Equal(t, small, body)

	require.NoError(t, store.DeleteObject(b, "p/backups/b1/small.txt"))
	require.NoError(t, store.DeleteObject(b, "p/backups/b1/small.txt"), "delete is idempotent")
	ok, err = store.ObjectExists(b, "p/backups/b1/small.txt")
	require.NoError(t, err)
	assert.False(t, ok)

	assert.NotContains(t, captured.String(), env.AccessKeySecret)
}

// TestBackupStoreOnPlugin runs Velero's real backup store on the plugin.
func TestBackupStoreOnPlugin(t *testing.T) {
	env := osstest.Start(t)
	log, captured := newLogger()
	manager := plugintest.Manager(t, log)

	config := storeConfig(t, env)
	delete(config, "bucket")
	bsl := &velerov1.BackupStorageLocation{
		ObjectMeta: metav1.ObjectMeta{Namespace: "velero", Name: "default"},
		Spec: velerov1.BackupStorageLocationSpec{
			Provider: objectstore.PluginName,
			Config:   config,
			StorageType: velerov1.StorageType{ObjectStorage: &velerov1.ObjectStorageLocation{
				Bucket: env.Bucket, Prefix: "cluster-a",
			}},
		},
	}
	bs, err := persistence.NewObjectBackupStoreGetter(nil).Get(bsl, manager, log)
	require.NoError(t, err)
	require.NoError(t, bs.IsValid())

	contents := make([]byte, 9<<20) // bigger than one part
	_, err = rand.Read(contents)
	require.NoError(t, err)
	backup := &velerov1.Backup{
		TypeMeta:   metav1.TypeMeta{APIVersion: "velero.io/v1", Kind: "Backup"},
		ObjectMeta: metav1.ObjectMeta{Namespace: "velero", Name: "nightly"},
	}
	metadata, err := json.Marshal(backup)
	require.NoError(t, err)
	require.NoError(t, bs.PutBackup(persistence.BackupInfo{
		Name:     "nightly",
		Metadata: bytes.NewReader(metadata),
		Contents: bytes.NewReader(contents),
		Log:      strings.NewReader("log line\n"),
	}))

	names, err := bs.ListBackups()
	require.NoError(t, err)
	assert.Equal(t, []string{"nightly"}, names)

	got, err := bs.GetBackupMetadata("nightly")
	require.NoError(t, err)
	assert.Equal(t, "nightly", got.Name)

	rc, err := bs.GetBackupContents("nightly")
	require.NoError(t, err)
	data, err := io.ReadAll(rc)
	rc.Close()
	require.NoError(t, err)
	assert.True(t, bytes.Equal(contents, data), "backup contents round trip")

	url, err := bs.GetDownloadURL(velerov1.DownloadTarget{Kind: velerov1.DownloadTargetKindBackupContents, Name: "nightly"})
	require.NoError(t, err)
	resp, err := http.Get(url)
	require.NoError(t, err)
	data, err = io.ReadAll(resp.Body)
	resp.Body.Close()
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	assert.True(t, bytes.Equal(contents, data), "download URL serves the contents")

	require.NoError(t, bs.DeleteBackup("nightly"))
	store, err := manager.GetObjectStore(objectstore.PluginName)
	require.NoError(t, err)
	left, err := store.ListObjects(env.Bucket, "cluster-a/backups/nightly/")
	require.NoError(t, err)
	assert.Empty(t, left, "DeleteBackup leaves nothing under backups/nightly/")
	names, err = bs.ListBackups()
	require.NoError(t, err)
	assert.Empty(t, names)

	assert.NotContains(t, captured.String(), env.AccessKeySecret)
}

// TestVeleroInstallSecretFile is a location without spec.credential on a
// Velero installed with --secret-file: Velero passes no credentials file, and
// the plugin process inherits ALIBABA_CLOUD_CREDENTIALS_FILE from the server.
func TestVeleroInstallSecretFile(t *testing.T) {
	env := osstest.Start(t)
	t.Setenv(objectstore.EnvCredentialsFile, credentialsFile(t, env.AccessKeyID, env.AccessKeySecret))
	log, captured := newLogger()
	cfg := storeConfig(t, env)
	delete(cfg, "credentialsFile")
	store := objectStore(t, log, cfg)
	require.NoError(t, store.PutObject(env.Bucket, "installed/k", strings.NewReader("v")))
	rc, err := store.GetObject(env.Bucket, "installed/k")
	require.NoError(t, err)
	body, err := io.ReadAll(rc)
	rc.Close()
	require.NoError(t, err)
	assert.Equal(t, "v", string(body))
	assert.NotContains(t, captured.String(), env.AccessKeySecret)
}

// TestBadInputOverGRPC checks that bad configuration gives a clear error
// through the real plugin boundary, and that no secret leaks in any error or
// log line on the way.
func TestBadInputOverGRPC(t *testing.T) {
	env := osstest.Start(t)
	log, captured := newLogger()
	manager := plugintest.Manager(t, log)
	var errs []string

	initErr := func(config map[string]string) error {
		store, err := manager.GetObjectStore(objectstore.PluginName)
		require.NoError(t, err)
		err = store.Init(config)
		require.Error(t, err)
		errs = append(errs, err.Error())
		return err
	}

	cfg := storeConfig(t, env)
	cfg["regoin"] = "cn-hangzhou"
	err := initErr(cfg)
	assert.Contains(t, err.Error(), "regoin")
	assert.Contains(t, err.Error(), "signatureVersion", "the error lists the valid keys")

	cfg = storeConfig(t, env)
	delete(cfg, "region")
	assert.Contains(t, initErr(cfg).Error(), "region")

	cfg = storeConfig(t, env)
	delete(cfg, "bucket")
	assert.Contains(t, initErr(cfg).Error(), "bucket")

	cfg = storeConfig(t, env)
	cfg["credentialsFile"] = filepath.Join(t.TempDir(), "nope")
	assert.Contains(t, initErr(cfg).Error(), "nope")

	// A wrong secret is only found out by the server.
	cfg = storeConfig(t, env)
	cfg["credentialsFile"] = credentialsFile(t, env.AccessKeyID, "wrong-"+env.AccessKeySecret)
	store, err := manager.GetObjectStore(objectstore.PluginName)
	require.NoError(t, err)
	require.NoError(t, store.Init(cfg))
	_, err = store.ObjectExists(env.Bucket, "anything")
	require.Error(t, err, "an auth failure is an error, never a silent false")
	assert.Contains(t, err.Error(), "SignatureDoesNotMatch")
	errs = append(errs, err.Error())
	err = store.PutObject(env.Bucket, "k", strings.NewReader("v"))
	require.Error(t, err)
	errs = append(errs, err.Error())

	// An endpoint nobody answers on fails within a bounded time.
	cfg = storeConfig(t, env)
	cfg["endpoint"] = "http://127.0.0.1:1"
	store, err = manager.GetObjectStore(objectstore.PluginName)
	require.NoError(t, err)
	require.NoError(t, store.Init(cfg))
	_, err = store.ObjectExists(env.Bucket, "anything")
	require.Error(t, err)
	errs = append(errs, err.Error())

	all := strings.Join(errs, "\n") + captured.String()
	for _, secret := range []string{env.AccessKeySecret, "wrong-" + env.AccessKeySecret} {
		assert.NotContains(t, all, secret, "a credential leaked into an error or a log line")
	}
}
