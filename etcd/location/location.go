// Package location opens the object store behind a Velero
// BackupStorageLocation inside the plugin process, so the etcd actions can
// stream snapshots into the same bucket and prefix as the backup itself.
package location

import (
	"context"
	"fmt"
	"path"
	"strings"

	"github.com/sirupsen/logrus"
	velerov1 "github.com/vmware-tanzu/velero/pkg/apis/velero/v1"

	"github.com/velero-etcd/velero-plugin-for-etcd/objectstore"
)

// SecretGetter reads a Secret's data.
type SecretGetter interface {
	GetSecret(ctx context.Context, namespace, name string) (map[string][]byte, error)
}

// Location is an opened storage location.
type Location struct {
	Name   string
	Store  *objectstore.ObjectStore
	Bucket string
	Prefix string // without leading or trailing slash; may be empty
}

// Key joins the location's prefix with a path inside it, as Velero lays out
// its bucket (prefix/backups/<name>/...).
func (l *Location) Key(parts ...string) string {
	return path.Join(append([]string{l.Prefix}, parts...)...)
}

// Open builds an ObjectStore from a BSL's config and credential Secret, the
// way Velero would hand them to the plugin's Init.
func Open(ctx context.Context, bsl *velerov1.BackupStorageLocation, secrets SecretGetter, log logrus.FieldLogger) (*Location, error) {
	where := fmt.Sprintf("backup storage location %s/%s", bsl.Namespace, bsl.Name)
	if bsl.Spec.Provider != objectstore.PluginName {
		return nil, fmt.Errorf("%s uses provider %q: etcd snapshots are stored only through provider %q; use a location with that provider",
			where, bsl.Spec.Provider, objectstore.PluginName)
	}
	if bsl.Spec.ObjectStorage == nil || bsl.Spec.ObjectStorage.Bucket == "" {
		return nil, fmt.Errorf("%s has no object storage bucket", where)
	}
	obj := bsl.Spec.ObjectStorage
	config := map[string]string{}
	for k, v := range bsl.Spec.Config {
		config[k] = v
	}
	prefix := strings.Trim(obj.Prefix, "/")
	config["bucket"] = obj.Bucket
	config["prefix"] = prefix
	if len(obj.CACert) > 0 {
		config["caCert"] = string(obj.CACert)
	}
	if ref := obj.CACertRef; ref != nil {
		data, err := secrets.GetSecret(ctx, bsl.Namespace, ref.Name)
		if err != nil {
			return nil, fmt.Errorf("%s caCertRef: %w", where, err)
		}
		ca, ok := data[ref.Key]
		if !ok {
			return nil, fmt.Errorf("%s caCertRef: secret %s/%s has no key %q", where, bsl.Namespace, ref.Name, ref.Key)
		}
		config["caCert"] = string(ca)
	}

	var credentials []byte
	if ref := bsl.Spec.Credential; ref != nil {
		data, err := secrets.GetSecret(ctx, bsl.Namespace, ref.Name)
		if err != nil {
			return nil, fmt.Errorf("%s credential: %w", where, err)
		}
		c, ok := data[ref.Key]
		if !ok {
			return nil, fmt.Errorf("%s credential: secret %s/%s has no key %q", where, bsl.Namespace, ref.Name, ref.Key)
		}
		credentials = c
	}

	store := objectstore.New(log)
	if err := store.InitWithCredentials(config, credentials); err != nil {
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	return &Location{Name: bsl.Name, Store: store, Bucket: obj.Bucket, Prefix: prefix}, nil
}
