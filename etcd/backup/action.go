// Package backup is the BackupItemAction velero-etcd.io/etcd-snapshot: when
// Velero backs up an EtcdCluster that opts in, it streams a verified etcd
// snapshot into the backup's own folder of the backup storage location.
package backup

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/sirupsen/logrus"
	velerov1 "github.com/vmware-tanzu/velero/pkg/apis/velero/v1"
	"github.com/vmware-tanzu/velero/pkg/kuberesource"
	"github.com/vmware-tanzu/velero/pkg/plugin/velero"
	biav2 "github.com/vmware-tanzu/velero/pkg/plugin/velero/backupitemaction/v2"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/velero-etcd/velero-plugin-for-etcd/etcd/cluster"
	"github.com/velero-etcd/velero-plugin-for-etcd/etcd/location"
	"github.com/velero-etcd/velero-plugin-for-etcd/etcd/snapshot"
	"github.com/velero-etcd/velero-plugin-for-etcd/internal/kube"
)

// PluginName is the name users and Velero know the action by.
const PluginName = "velero-etcd.io/etcd-snapshot"

// Annotations the action writes on the backed-up item, for the restore action
// and for people reading the backup.
const (
	AnnotationSnapshotKey      = "velero-etcd.io/snapshot-key"
	AnnotationSnapshotSHA256   = "velero-etcd.io/snapshot-sha256"
	AnnotationSnapshotRevision = "velero-etcd.io/snapshot-revision"
	AnnotationSnapshotSize     = "velero-etcd.io/snapshot-size"
)

// Resources the action applies to, selected by API group: other projects ship
// an EtcdCluster kind too.
var Resources = []string{
	"etcdclusters." + cluster.GroupV1beta2,
	"etcdclusters." + cluster.GroupV1alpha1,
}

// Action implements biav2.BackupItemAction.
type Action struct {
	log      logrus.FieldLogger
	settings *kube.Settings
}

var _ biav2.BackupItemAction = (*Action)(nil)

// New returns the action; Kubernetes clients are made on first use, so a
// plugin process that never sees an etcd item never needs API access.
func New(log logrus.FieldLogger, settings *kube.Settings) *Action {
	return &Action{log: log, settings: settings}
}

func (a *Action) Name() string { return PluginName }

func (a *Action) AppliesTo() (velero.ResourceSelector, error) {
	return velero.ResourceSelector{IncludedResources: Resources}, nil
}

// Execute snapshots the cluster synchronously: the bytes are in the bucket,
// verified, before the item is written to the backup, so a Completed backup
// always holds a complete snapshot. The Secrets the cluster's restore needs
// go into the backup with it, as additional items.
func (a *Action) Execute(item runtime.Unstructured, backup *velerov1.Backup) (runtime.Unstructured, []velero.ResourceIdentifier, string, []velero.ResourceIdentifier, error) {
	obj := &unstructured.Unstructured{Object: item.UnstructuredContent()}
	if obj.GetAnnotations()[cluster.AnnotationSnapshot] != "true" {
		return item, nil, "", nil, nil
	}
	name := fmt.Sprintf("EtcdCluster %s/%s", obj.GetNamespace(), obj.GetName())
	if err := a.snapshot(obj, backup); err != nil {
		return nil, nil, "", nil, fmt.Errorf("etcd snapshot of %s: %w", name, err)
	}
	var secrets []velero.ResourceIdentifier
	for _, s := range cluster.ReferencedSecrets(obj) {
		secrets = append(secrets, velero.ResourceIdentifier{GroupResource: kuberesource.Secrets, Namespace: obj.GetNamespace(), Name: s})
	}
	return obj, secrets, "", nil, nil
}

func (a *Action) snapshot(obj *unstructured.Unstructured, backup *velerov1.Backup) error {
	log := a.log.WithFields(logrus.Fields{"etcdcluster": obj.GetNamespace() + "/" + obj.GetName(), "backup": backup.Name})
	clients, err := a.settings.Clients()
	if err != nil {
		return fmt.Errorf("connecting to the Kubernetes API: %w", err)
	}

	setup, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	target, err := cluster.Resolve(setup, obj, clients)
	if err != nil {
		return err
	}
	loc, err := a.openLocation(setup, clients, backup, log)
	if err != nil {
		return err
	}

	ctx, cancelStream := context.WithTimeout(context.Background(), target.ConnectTimeout+target.StreamTimeout)
	defer cancelStream()
	cands, err := snapshot.Pick(ctx, target, log)
	if err != nil {
		return err
	}

	folder := loc.Key("backups", backup.Name, "etcd-snapshots", obj.GetNamespace())
	key := folder + "/" + obj.GetName() + ".db"
	if target.Compression == "zstd" {
		key += ".zst"
	}
	res, err := snapshot.Take(ctx, target, cands, func(int) (snapshot.Sink, error) {
		return snapshot.PipeSink(func(r io.Reader) error {
			return loc.Store.PutObjectContext(ctx, loc.Bucket, key, r)
		}), nil
	}, log)
	if err != nil {
		return err
	}

	manifest := snapshot.NewManifest(res, backup.Name, string(backup.UID), key)
	body, err := json.MarshalIndent(manifest, "", "  ")
	if err != nil {
		return err
	}
	manifestKey := folder + "/" + obj.GetName() + ".json"
	if err := loc.Store.PutObjectContext(ctx, loc.Bucket, manifestKey, bytes.NewReader(body)); err != nil {
		// The snapshot without its manifest is not restorable by the plugin:
		// remove it rather than leave a half backup behind.
		if derr := loc.Store.DeleteObject(loc.Bucket, key); derr != nil {
			log.WithError(derr).Warnf("removing snapshot %s after the manifest failed", key)
		}
		return fmt.Errorf("writing manifest %s: %w", manifestKey, err)
	}

	ann := obj.GetAnnotations()
	ann[AnnotationSnapshotKey] = key
	ann[AnnotationSnapshotSHA256] = res.StoredSHA256
	ann[AnnotationSnapshotRevision] = strconv.FormatInt(res.Info.Revision, 10)
	ann[AnnotationSnapshotSize] = strconv.FormatInt(res.StoredSize, 10)
	obj.SetAnnotations(ann)
	log.Infof("etcd snapshot stored: oss://%s/%s (%d bytes, revision %d, sha256 %s), manifest %s",
		loc.Bucket, key, res.StoredSize, res.Info.Revision, res.StoredSHA256, manifestKey)
	return nil
}

func (a *Action) openLocation(ctx context.Context, clients *kube.Clients, backup *velerov1.Backup, log logrus.FieldLogger) (*location.Location, error) {
	name := backup.Spec.StorageLocation
	if name == "" {
		return nil, fmt.Errorf("backup %s names no storage location", backup.Name)
	}
	// The Backup lives in Velero's namespace, and so does its location.
	ns := backup.Namespace
	if ns == "" {
		ns = a.settings.VeleroNamespace()
	}
	bsl, err := clients.GetBackupStorageLocation(ctx, ns, name)
	if err != nil {
		return nil, err
	}
	return location.Open(ctx, bsl, clients, log)
}

// Progress and Cancel: the snapshot is taken synchronously in Execute, so
// there is never an operation to track.
func (a *Action) Progress(string, *velerov1.Backup) (velero.OperationProgress, error) {
	return velero.OperationProgress{}, biav2.AsyncOperationsNotSupportedError()
}

func (a *Action) Cancel(string, *velerov1.Backup) error { return nil }

// setupTimeout bounds the Kubernetes reads before the snapshot starts.
const setupTimeout = time.Minute
