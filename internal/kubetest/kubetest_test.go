package kubetest_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	velerov1 "github.com/vmware-tanzu/velero/pkg/apis/velero/v1"
	velerov2alpha1 "github.com/vmware-tanzu/velero/pkg/apis/velero/v2alpha1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	ctrlclient "sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/velero-etcd/velero-plugin-for-etcd/internal/kubetest"
)

var (
	coreosEtcdClusters   = schema.GroupVersionResource{Group: "etcd.database.coreos.com", Version: "v1beta2", Resource: "etcdclusters"}
	operatorEtcdClusters = schema.GroupVersionResource{Group: "operator.etcd.io", Version: "v1alpha1", Resource: "etcdclusters"}
)

func TestStart(t *testing.T) {
	env := kubetest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	_, err := env.Client.CoreV1().Namespaces().Get(ctx, kubetest.VeleroNamespace, metav1.GetOptions{})
	require.NoError(t, err, "namespace velero")
	require.FileExists(t, env.Kubeconfig)

	t.Run("BackupStorageLocation", func(t *testing.T) {
		// Velero itself talks to the apiserver through controller-runtime.
		scheme := runtime.NewScheme()
		require.NoError(t, velerov1.AddToScheme(scheme))
		require.NoError(t, velerov2alpha1.AddToScheme(scheme))
		vc, err := ctrlclient.New(env.Config, ctrlclient.Options{Scheme: scheme})
		require.NoError(t, err)
		bsl := &velerov1.BackupStorageLocation{
			ObjectMeta: metav1.ObjectMeta{Name: "default", Namespace: kubetest.VeleroNamespace},
			Spec: velerov1.BackupStorageLocationSpec{
				Provider: "velero.io/alibabacloud-etcd",
				StorageType: velerov1.StorageType{ObjectStorage: &velerov1.ObjectStorageLocation{
					Bucket: "bucket", Prefix: "cluster-a",
				}},
				Config: map[string]string{"region": "oss-cn-hangzhou"},
			},
		}
		require.NoError(t, vc.Create(ctx, bsl))
		got := &velerov1.BackupStorageLocation{}
		require.NoError(t, vc.Get(ctx, ctrlclient.ObjectKey{Namespace: kubetest.VeleroNamespace, Name: "default"}, got))
		require.Equal(t, "bucket", got.Spec.ObjectStorage.Bucket)
		require.Equal(t, "oss-cn-hangzhou", got.Spec.Config["region"])

		// The v2alpha1 CRDs (DataUpload, DataDownload) come with the v1 ones.
		require.NoError(t, vc.List(ctx, &velerov2alpha1.DataUploadList{}, ctrlclient.InNamespace(kubetest.VeleroNamespace)))
	})

	t.Run("EtcdCluster v1beta2", func(t *testing.T) {
		obj := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "etcd.database.coreos.com/v1beta2",
			"kind":       "EtcdCluster",
			"metadata":   map[string]any{"name": "example", "namespace": "default"},
			"spec": map[string]any{
				"size": int64(3), "version": "3.5.17", "repository": "quay.io/coreos/etcd",
				"TLS": map[string]any{"static": map[string]any{
					"member":         map[string]any{"peerSecret": "peer", "serverSecret": "server"},
					"operatorSecret": "client",
				}},
				"pod": map[string]any{"labels": map[string]any{"team": "a"}},
			},
			"status": map[string]any{
				"phase": "Running", "serviceName": "example-client", "clientPort": int64(2379), "size": int64(3),
				"members":        map[string]any{"ready": []any{"example-0", "example-1", "example-2"}},
				"currentVersion": "3.5.17",
			},
		}}
		env.Apply(t, obj)
		require.NotEmpty(t, obj.GetResourceVersion(), "Apply returns the server's copy")

		got, err := env.Dynamic.Resource(coreosEtcdClusters).Namespace("default").Get(ctx, "example", metav1.GetOptions{})
		require.NoError(t, err)
		operatorSecret, _, _ := unstructured.NestedString(got.Object, "spec", "TLS", "static", "operatorSecret")
		require.Equal(t, "client", operatorSecret)
		phase, _, _ := unstructured.NestedString(got.Object, "status", "phase")
		require.Equal(t, "Running", phase, "status is stored with the object")
		team, _, _ := unstructured.NestedString(got.Object, "spec", "pod", "labels", "team")
		require.Equal(t, "a", team, "unknown spec fields are preserved")

		// Apply again: an update that takes over the stored resourceVersion.
		obj = obj.DeepCopy()
		obj.SetResourceVersion("")
		require.NoError(t, unstructured.SetNestedField(obj.Object, true, "spec", "paused"))
		env.Apply(t, obj)
		got, err = env.Dynamic.Resource(coreosEtcdClusters).Namespace("default").Get(ctx, "example", metav1.GetOptions{})
		require.NoError(t, err)
		paused, _, _ := unstructured.NestedBool(got.Object, "spec", "paused")
		require.True(t, paused)
	})

	t.Run("EtcdCluster v1alpha1 from YAML", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "objs.yaml")
		require.NoError(t, os.WriteFile(path, []byte(`---
apiVersion: v1
kind: Secret
metadata:
  name: etcd-client-tls
  namespace: velero
type: Opaque
stringData:
  ca.crt: not-a-real-ca
---
apiVersion: operator.etcd.io/v1alpha1
kind: EtcdCluster
metadata:
  name: example
spec:
  size: 3
  version: v3.5.21
  imageRegistry: gcr.io/etcd-development/etcd
  storageSpec:
    accessModes: ReadWriteOnce
    volumeSizeRequest: 1Gi
  tls:
    provider: cert-manager
    providerCfg:
      certManagerCfg:
        commonName: example
  etcdOptions: ["--quota-backend-bytes=8589934592"]
  podTemplate:
    metadata:
      labels: {team: b}
status:
  readyReplicas: 3
  members:
  - {name: example-0, id: "8e9e05c52164694d", isHealthy: true, isLeader: true}
---
`), 0o600))
		env.ApplyYAMLFile(t, path)

		got, err := env.Dynamic.Resource(operatorEtcdClusters).Namespace("default").Get(ctx, "example", metav1.GetOptions{})
		require.NoError(t, err)
		size, _, _ := unstructured.NestedInt64(got.Object, "spec", "size")
		require.EqualValues(t, 3, size)
		opts, _, _ := unstructured.NestedStringSlice(got.Object, "spec", "etcdOptions")
		require.Equal(t, []string{"--quota-backend-bytes=8589934592"}, opts)
		members, _, _ := unstructured.NestedSlice(got.Object, "status", "members")
		require.Len(t, members, 1)

		secret, err := env.Client.CoreV1().Secrets(kubetest.VeleroNamespace).Get(ctx, "etcd-client-tls", metav1.GetOptions{})
		require.NoError(t, err)
		require.Equal(t, "not-a-real-ca", string(secret.Data["ca.crt"]))
	})

	t.Run("Secret", func(t *testing.T) {
		s := &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: "oss-credentials", Namespace: kubetest.VeleroNamespace},
			Data:       map[string][]byte{"cloud": []byte("ALIBABA_CLOUD_ACCESS_KEY_ID=id\n")},
		}
		_, err := env.Client.CoreV1().Secrets(kubetest.VeleroNamespace).Create(ctx, s, metav1.CreateOptions{})
		require.NoError(t, err)
		got, err := env.Client.CoreV1().Secrets(kubetest.VeleroNamespace).Get(ctx, "oss-credentials", metav1.GetOptions{})
		require.NoError(t, err)
		require.Equal(t, s.Data, got.Data)
	})

	t.Run("schema rejects a wrong type", func(t *testing.T) {
		obj := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "operator.etcd.io/v1alpha1",
			"kind":       "EtcdCluster",
			"metadata":   map[string]any{"name": "bad", "namespace": "default"},
			"spec":       map[string]any{"size": "three"},
		}}
		_, err := env.Dynamic.Resource(operatorEtcdClusters).Namespace("default").Create(ctx, obj, metav1.CreateOptions{})
		require.Error(t, err)
	})
}
