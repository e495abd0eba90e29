// Package kube connects the plugin process to the Kubernetes API. Velero
// starts plugins with its own server flags, so the plugin learns Velero's
// namespace and kubeconfig from the same flags, then from the environment.
package kube

import (
	"context"
	"fmt"
	"os"
	"sync"

	"github.com/spf13/pflag"
	velerov1 "github.com/vmware-tanzu/velero/pkg/apis/velero/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// Settings are the connection settings, bound to Velero's server flags.
type Settings struct {
	Kubeconfig string
	Namespace  string

	once    sync.Once
	clients *Clients
	err     error
}

// Clients returns clients made on first use and shared afterwards, so a
// plugin process that never sees an etcd item never connects to the API.
func (s *Settings) Clients() (*Clients, error) {
	s.once.Do(func() {
		cfg, err := s.RESTConfig()
		if err != nil {
			s.err = err
			return
		}
		s.clients, s.err = NewClients(cfg)
	})
	return s.clients, s.err
}

// BindFlags adds the two `velero server` flags the plugin cares about.
func (s *Settings) BindFlags(fs *pflag.FlagSet) {
	fs.StringVar(&s.Kubeconfig, "kubeconfig", "", "kubeconfig of the cluster Velero runs against")
	fs.StringVar(&s.Namespace, "namespace", "", "namespace Velero runs in")
}

// VeleroNamespace is the --namespace flag, else VELERO_NAMESPACE, else "velero".
func (s *Settings) VeleroNamespace() string {
	if s.Namespace != "" {
		return s.Namespace
	}
	if ns := os.Getenv("VELERO_NAMESPACE"); ns != "" {
		return ns
	}
	return "velero"
}

// RESTConfig prefers an explicit kubeconfig (flag, then KUBECONFIG) over the
// in-cluster config, as kubectl and Velero do.
func (s *Settings) RESTConfig() (*rest.Config, error) {
	path := s.Kubeconfig
	if path == "" {
		path = os.Getenv("KUBECONFIG")
	}
	if path != "" {
		cfg, err := clientcmd.BuildConfigFromFlags("", path)
		if err != nil {
			return nil, fmt.Errorf("loading kubeconfig %s: %w", path, err)
		}
		return cfg, nil
	}
	cfg, err := rest.InClusterConfig()
	if err != nil {
		return nil, fmt.Errorf("no kubeconfig (--kubeconfig or KUBECONFIG) and not in a cluster: %w", err)
	}
	return cfg, nil
}

// Clients is what the actions read: Secrets, storage locations, and the
// EtcdCluster objects themselves.
type Clients struct {
	Core    kubernetes.Interface
	Dynamic dynamic.Interface
}

// NewClients builds both clients from one REST config.
func NewClients(cfg *rest.Config) (*Clients, error) {
	core, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	return &Clients{Core: core, Dynamic: dyn}, nil
}

// GetSecret returns a Secret's data. The error names the Secret, never its
// contents.
func (c *Clients) GetSecret(ctx context.Context, namespace, name string) (map[string][]byte, error) {
	s, err := c.Core.CoreV1().Secrets(namespace).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("secret %s/%s not found", namespace, name)
	}
	if err != nil {
		return nil, fmt.Errorf("reading secret %s/%s: %w", namespace, name, err)
	}
	return s.Data, nil
}

// GetBackupStorageLocation reads a BSL through the dynamic client, so the
// plugin needs no generated Velero clientset.
func (c *Clients) GetBackupStorageLocation(ctx context.Context, namespace, name string) (*velerov1.BackupStorageLocation, error) {
	gvr := velerov1.SchemeGroupVersion.WithResource("backupstoragelocations")
	u, err := c.Dynamic.Resource(gvr).Namespace(namespace).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("backup storage location %s/%s not found", namespace, name)
	}
	if err != nil {
		return nil, fmt.Errorf("reading backup storage location %s/%s: %w", namespace, name, err)
	}
	bsl := &velerov1.BackupStorageLocation{}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, bsl); err != nil {
		return nil, fmt.Errorf("decoding backup storage location %s/%s: %w", namespace, name, err)
	}
	return bsl, nil
}
