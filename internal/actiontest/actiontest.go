// Package actiontest sets up what the etcd actions meet under a real Velero:
// a kube-apiserver holding the storage locations and credential Secrets, and
// oss-local behind them. Host tests and benchmarks share it.
package actiontest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	velerov1 "github.com/vmware-tanzu/velero/pkg/apis/velero/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"

	"github.com/velero-etcd/velero-plugin-for-etcd/internal/kubetest"
	"github.com/velero-etcd/velero-plugin-for-etcd/internal/osslocal/osstest"
	"github.com/velero-etcd/velero-plugin-for-etcd/objectstore"
)

// Prefix is the storage locations' prefix in the bucket.
const Prefix = "cluster-a"

// Env is a kube-apiserver plus oss-local, with storage location "default"
// (provider velero-etcd.io/oss) and "aws" (a provider the actions refuse).
type Env struct {
	Kube  *kubetest.Env
	OSS   *osstest.Env
	Store *objectstore.ObjectStore // in the test process, for checking the bucket
}

// Start builds the environment. The plugin processes a test launches later
// inherit KUBECONFIG and VELERO_NAMESPACE, as under `velero server`.
func Start(t testing.TB) *Env {
	t.Helper()
	kube := kubetest.Start(t)
	oss := osstest.Start(t)
	t.Setenv("KUBECONFIG", kube.Kubeconfig)
	t.Setenv("VELERO_NAMESPACE", "velero")
	e := &Env{Kube: kube, OSS: oss}
	e.Secret(t, "velero", "oss-credentials", map[string][]byte{"cloud": []byte(Credentials(oss))})
	e.CreateBSL(t, "default", objectstore.PluginName)
	e.CreateBSL(t, "aws", "velero.io/aws")

	e.Store = objectstore.New(logrus.New())
	if err := e.Store.InitWithCredentials(map[string]string{"bucket": oss.Bucket, "region": oss.Region, "endpoint": oss.URL},
		[]byte(Credentials(oss))); err != nil {
		t.Fatal(err)
	}
	return e
}

// Credentials is oss-local's key pair in the dotenv form of a Velero
// credentials file.
func Credentials(oss *osstest.Env) string {
	return fmt.Sprintf("ALIBABA_CLOUD_ACCESS_KEY_ID=%s\nALIBABA_CLOUD_ACCESS_KEY_SECRET=%s\n", oss.AccessKeyID, oss.AccessKeySecret)
}

// CreateBSL creates a storage location on oss-local in Velero's namespace.
func (e *Env) CreateBSL(t testing.TB, name, provider string) {
	t.Helper()
	bsl := &velerov1.BackupStorageLocation{
		TypeMeta:   metav1.TypeMeta{APIVersion: "velero.io/v1", Kind: "BackupStorageLocation"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "velero"},
		Spec: velerov1.BackupStorageLocationSpec{
			Provider: provider,
			Config:   map[string]string{"region": e.OSS.Region, "endpoint": e.OSS.URL},
			Credential: &corev1.SecretKeySelector{
				LocalObjectReference: corev1.LocalObjectReference{Name: "oss-credentials"}, Key: "cloud",
			},
			StorageType: velerov1.StorageType{ObjectStorage: &velerov1.ObjectStorageLocation{Bucket: e.OSS.Bucket, Prefix: Prefix}},
		},
	}
	u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(bsl)
	if err != nil {
		t.Fatal(err)
	}
	e.Kube.Apply(t, &unstructured.Unstructured{Object: u})
}

// Secret creates a Secret, and its namespace when missing.
func (e *Env) Secret(t testing.TB, ns, name string, data map[string][]byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	e.Namespace(t, ns)
	_, err := e.Kube.Client.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}, Data: data}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
}

// Namespace creates a namespace unless it exists.
func (e *Env) Namespace(t testing.TB, ns string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := e.Kube.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
}

// Get reads a whole object from the bucket.
func (e *Env) Get(t testing.TB, key string) []byte {
	t.Helper()
	rc, err := e.Store.GetObject(e.OSS.Bucket, key)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Keys lists the bucket under prefix.
func (e *Env) Keys(t testing.TB, prefix string) []string {
	t.Helper()
	keys, err := e.Store.ListObjects(e.OSS.Bucket, prefix)
	if err != nil {
		t.Fatal(err)
	}
	return keys
}

// NewBackup is a Backup as Velero hands it to an action.
func NewBackup(name, location string) *velerov1.Backup {
	return &velerov1.Backup{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "velero", UID: types.UID("uid-" + name)},
		Spec:       velerov1.BackupSpec{StorageLocation: location},
	}
}

// EtcdCluster is an opted-in etcd-io operator EtcdCluster in namespace
// "apps", labelled app=etcd, pointing at eps through the endpoints
// annotation, with extra annotations added.
func EtcdCluster(name string, eps []string, extra map[string]string) *unstructured.Unstructured {
	ann := map[string]any{"velero-etcd.io/snapshot": "true", "velero-etcd.io/endpoints": strings.Join(eps, ",")}
	for k, v := range extra {
		ann[k] = v
	}
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "operator.etcd.io/v1alpha1",
		"kind":       "EtcdCluster",
		"metadata":   map[string]any{"name": name, "namespace": "apps", "labels": map[string]any{"app": "etcd"}, "annotations": ann},
		"spec":       map[string]any{"size": int64(3)},
	}}
}

// Log collects everything a logger writes, so a test can assert on the
// plugin's log lines and that no credential ever reaches one.
type Log struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (c *Log) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.Write(p)
}

func (c *Log) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.String()
}

// NewLogger returns a debug-level logger writing into a Log.
func NewLogger() (*logrus.Logger, *Log) {
	c := &Log{}
	l := logrus.New()
	l.SetOutput(c)
	l.SetLevel(logrus.DebugLevel)
	return l, c
}
