package scenario

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	velerov1 "github.com/vmware-tanzu/velero/pkg/apis/velero/v1"
	velerov2alpha1 "github.com/vmware-tanzu/velero/pkg/apis/velero/v2alpha1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apiextv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	ctrlclient "sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/velero-etcd/velero-plugin-for-etcd/etcd/backup"
	"github.com/velero-etcd/velero-plugin-for-etcd/etcd/restore"
	"github.com/velero-etcd/velero-plugin-for-etcd/internal/kubetest"
	"github.com/velero-etcd/velero-plugin-for-etcd/internal/osslocal/osstest"
	"github.com/velero-etcd/velero-plugin-for-etcd/internal/pluginhost"
	"github.com/velero-etcd/velero-plugin-for-etcd/objectstore"
)

// Names the scenario gives to things.
const (
	Namespace        = kubetest.VeleroNamespace
	CredentialSecret = "oss-credentials"
	CredentialKey    = "cloud"
	DefaultLocation  = "default"
)

// Versions of the tools hack/build-tools.sh builds (test/e2e/tools).
const (
	kubeVersion   = "v1.33.13"
	veleroVersion = "v1.18.3"
)

// Server timings shortened for a local run (defaults: 1m, 10s, 1m).
const (
	storeValidationFrequency  = "5s"
	itemOperationSyncInterval = "2s"
	backupSyncPeriod          = "30s"
)

// Stack is everything a user's cluster would run: kube-apiserver with its
// etcd, the object store, and the velero server with the plugin.
type Stack struct {
	T      testing.TB // the whole run: long-lived things hang on it
	R      *Reporter
	Kube   *kubetest.Env
	Client ctrlclient.Client // Velero's types and the core ones
	OSS    *osstest.Env
	Bucket *Bucket
	CLI    *CLI
	Server *Process

	VeleroBin string
	PluginDir string
	Dir       string
	// RestoreRegistered reports whether `velero plugin get` lists the restore action.
	RestoreRegistered bool
}

// StartStack starts the stack step by step, with the real velero CLI for
// everything a user would type.
func StartStack(t testing.TB, r *Reporter) *Stack {
	t.Helper()
	s := &Stack{T: t, R: r, Dir: t.TempDir()}

	r.Step("Tools: kube-apiserver %s, velero %s and the plugin, built from the Go module proxy (cached)", kubeVersion, veleroVersion)
	begin := time.Now()
	apiserverBin := kubetest.Binary(t, kubetest.ToolKubeAPIServer)
	s.VeleroBin = kubetest.Binary(t, kubetest.ToolVelero)
	r.Show("kube-apiserver: %s", apiserverBin)
	r.Show("velero:         %s", s.VeleroBin)
	dir, err := pluginhost.Build()
	if err != nil {
		t.Fatalf("%v", err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	s.PluginDir = dir
	r.Show("plugin:         %s (the only file in --plugin-dir)", filepath.Join(dir, pluginhost.BinaryName))
	r.Show("ready in %s", time.Since(begin).Round(100*time.Millisecond))

	r.Step("Starting etcd and kube-apiserver on 127.0.0.1 (token auth)")
	s.Kube = kubetest.Start(t)
	r.Show("kubeconfig: %s", s.Kube.Kubeconfig)
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{velerov1.AddToScheme, velerov2alpha1.AddToScheme, corev1.AddToScheme, appsv1.AddToScheme} {
		if err := add(scheme); err != nil {
			t.Fatalf("%v", err)
		}
	}
	if s.Client, err = ctrlclient.New(s.Kube.Config, ctrlclient.Options{Scheme: scheme}); err != nil {
		t.Fatalf("%v", err)
	}

	home := filepath.Join(s.Dir, "home") // no velero client config of the machine's user leaks in
	if err := os.MkdirAll(home, 0o700); err != nil {
		t.Fatalf("%v", err)
	}
	s.CLI = &CLI{
		Bin: s.VeleroBin, Kubeconfig: s.Kube.Kubeconfig, Namespace: Namespace, R: r,
		Env: append(os.Environ(), "HOME="+home),
	}
	r.Show("every velero command below also gets --kubeconfig %s --namespace %s", s.Kube.Kubeconfig, Namespace)

	s.installVeleroCRDs(t)
	s.createVeleroDeployment(t)

	r.Step("Starting oss-local, the local OSS server")
	s.OSS = osstest.Start(t)
	s.Bucket = newBucket(s.OSS)
	s.CLI.Secrets = append(s.CLI.Secrets, s.OSS.AccessKeySecret)
	r.Show("endpoint %s, bucket %q, region %s, access key id %s", s.OSS.URL, s.OSS.Bucket, s.OSS.Region, s.OSS.AccessKeyID)

	r.Step("Credentials Secret %s/%s (dotenv, as examples/credentials-velero)", Namespace, CredentialSecret)
	s.CreateCredentialSecret(t, CredentialSecret, s.OSS.AccessKeyID, s.OSS.AccessKeySecret)

	r.Step("Backup storage location %q with the plugin's provider %s", DefaultLocation, objectstore.PluginName)
	s.CLI.Run(t, 10, "backup-location", "create", DefaultLocation,
		"--provider", objectstore.PluginName,
		"--bucket", s.OSS.Bucket,
		"--config", fmt.Sprintf("region=%s,endpoint=%s", s.OSS.Region, s.OSS.URL),
		"--credential", CredentialSecret+"="+CredentialKey,
		"--default")

	s.startServer(t)

	r.Step("Waiting for the velero server to validate the location through the plugin")
	s.WaitLocationPhase(t, DefaultLocation, velerov1.BackupStorageLocationPhaseAvailable, 2*time.Minute)
	s.CLI.Run(t, 5, "backup-location", "get")

	r.Step("The velero server found the plugin's three plugins in --plugin-dir")
	out := s.CLI.Run(t, -1, "plugin", "get")
	for _, name := range []string{objectstore.PluginName, backup.PluginName, restore.PluginName} {
		if l := lineWith(out, name); l != "" {
			r.Show("%s", strings.Join(strings.Fields(l), "  "))
		}
	}
	if lineWith(out, objectstore.PluginName, "ObjectStore") == "" {
		t.Fatalf("velero plugin get does not list ObjectStore %s:\n%s", objectstore.PluginName, out)
	}
	if lineWith(out, backup.PluginName, "BackupItemAction") == "" {
		t.Fatalf("velero plugin get does not list BackupItemAction %s:\n%s", backup.PluginName, out)
	}
	s.RestoreRegistered = lineWith(out, restore.PluginName, "RestoreItemAction") != ""
	if !s.RestoreRegistered {
		r.Show("NOTE: RestoreItemAction %s is not registered by the plugin binary (main.go); the restore part will fail", restore.PluginName)
	}
	return s
}

// installVeleroCRDs replaces the Velero CRDs kubetest installs from Go by the
// ones `velero install --crds-only` installs, so that the CLI is what the
// rest of the run depends on.
func (s *Stack) installVeleroCRDs(t testing.TB) {
	t.Helper()
	s.R.Step("Installing Velero's CRDs with the velero CLI (the EtcdCluster CRDs come from examples/crds)")
	ext, err := apiextclient.NewForConfig(s.Kube.Config)
	if err != nil {
		t.Fatalf("%v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	veleroCRDs := func() []apiextv1.CustomResourceDefinition {
		list, err := ext.ApiextensionsV1().CustomResourceDefinitions().List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatalf("list CRDs: %v", err)
		}
		var out []apiextv1.CustomResourceDefinition
		for _, c := range list.Items {
			if c.Spec.Group == "velero.io" {
				out = append(out, c)
			}
		}
		return out
	}
	for _, c := range veleroCRDs() {
		if err := ext.ApiextensionsV1().CustomResourceDefinitions().Delete(ctx, c.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			t.Fatalf("delete CRD %s: %v", c.Name, err)
		}
	}
	gone := func(timeout time.Duration) bool {
		wctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		return wait.PollUntilContextCancel(wctx, 200*time.Millisecond, true, func(context.Context) (bool, error) {
			return len(veleroCRDs()) == 0, nil
		}) == nil
	}
	// Deletion takes half a second, but it was once seen to hang in the
	// apiserver's CRD finalizer. No custom resource exists yet, so dropping
	// the cleanup finalizer loses nothing.
	if !gone(20 * time.Second) {
		for _, c := range veleroCRDs() {
			t.Logf("CRD %s still present 20s after deletion: finalizers %v, conditions %+v; removing its finalizers", c.Name, c.Finalizers, c.Status.Conditions)
			patch := []byte(`{"metadata":{"finalizers":null}}`)
			if _, err := ext.ApiextensionsV1().CustomResourceDefinitions().Patch(ctx, c.Name, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil && !apierrors.IsNotFound(err) {
				t.Fatalf("remove finalizers of CRD %s: %v", c.Name, err)
			}
		}
		if !gone(30 * time.Second) {
			t.Fatalf("Velero CRDs still present after deletion: %d", len(veleroCRDs()))
		}
	}

	out := s.CLI.Run(t, -1, "install", "--crds-only")
	var shown []string
	for _, l := range strings.Split(out, "\n") {
		if !strings.Contains(l, "attempting to create") && strings.TrimSpace(l) != "" {
			shown = append(shown, l)
		}
	}
	s.R.Output(strings.Join(shown, "\n"), 0)
	if !strings.Contains(out, "Velero is installed") {
		t.Fatalf("velero install --crds-only did not finish:\n%s", out)
	}
	installed := veleroCRDs()
	var names []string
	for _, c := range installed {
		established := false
		for _, cond := range c.Status.Conditions {
			if cond.Type == apiextv1.Established && cond.Status == apiextv1.ConditionTrue {
				established = true
			}
		}
		if !established {
			t.Fatalf("CRD %s is not Established after velero install", c.Name)
		}
		names = append(names, c.Name)
	}
	if len(installed) < 10 {
		t.Fatalf("velero install --crds-only installed only %d CRDs: %v", len(installed), names)
	}
	s.R.Show("%d Velero CRDs established", len(installed))
}

// createVeleroDeployment creates the Deployment object `velero install`
// would create. The velero server runs here as a local process, but it
// reads its own Deployment (the pod-volume restore action takes the image
// from it, and every restore fails without it). No controller-manager runs,
// so the object never starts a pod.
func (s *Stack) createVeleroDeployment(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	labels := map[string]string{"component": "velero", "deploy": "velero"}
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "velero", Namespace: Namespace, Labels: labels},
		Spec: appsv1.DeploymentSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{
					Name: "velero", Image: "velero/velero:" + veleroVersion, Command: []string{"/velero"}, Args: []string{"server"},
				}}},
			},
		},
	}
	if err := s.Client.Create(ctx, d); err != nil {
		t.Fatalf("create Deployment velero: %v", err)
	}
	s.R.Show("Deployment %s/velero (the object only: the server runs as a local process, but restores read its image)", Namespace)
}

// CreateCredentialSecret creates a Secret holding a dotenv credentials file,
// as `kubectl create secret generic NAME --from-file=cloud=FILE` does.
func (s *Stack) CreateCredentialSecret(t testing.TB, name, id, secret string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sec := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: Namespace},
		Data: map[string][]byte{CredentialKey: fmt.Appendf(nil,
			"ALIBABA_CLOUD_ACCESS_KEY_ID=%s\nALIBABA_CLOUD_ACCESS_KEY_SECRET=%s\n", id, secret)},
	}
	if err := s.Client.Create(ctx, sec); err != nil {
		t.Fatalf("create secret %s: %v", name, err)
	}
	s.R.Show("kubectl -n %s create secret generic %s --from-file=%s=<dotenv file>   (done through the API: no kubectl here)", Namespace, name, CredentialKey)
}

func (s *Stack) startServer(t testing.TB) {
	t.Helper()
	metrics := freeLoopbackAddr(t)
	args := []string{
		"server",
		"--kubeconfig", s.Kube.Kubeconfig,
		"--namespace", Namespace,
		"--plugin-dir", s.PluginDir,
		"--uploader-type", "kopia",
		"--metrics-address", metrics,
		"--default-backup-storage-location", DefaultLocation,
		"--store-validation-frequency", storeValidationFrequency,
		"--item-operation-sync-frequency", itemOperationSyncInterval,
		"--backup-sync-period", backupSyncPeriod,
		"--log-level", "info",
	}
	s.R.Step("Starting the velero server with the plugin")
	s.R.Command("velero " + strings.Join(args, " "))
	env := append(append([]string{}, s.CLI.Env...),
		"KUBECONFIG="+s.Kube.Kubeconfig, // the plugin processes inherit it
		"VELERO_NAMESPACE="+Namespace,
	)
	logPath := filepath.Join(s.Dir, "velero-server.log")
	s.Server = StartProcess(t, "velero server", s.VeleroBin, args, env, s.Dir, logPath)
	s.R.Show("pid %d, metrics on http://%s/metrics, log %s", s.Server.PID(), metrics, logPath)
	// Registered after StartProcess, so it runs before the server is stopped.
	t.Cleanup(func() {
		if t.Failed() {
			kept := keepLog(logPath, "velero-server.log")
			t.Logf("--- last lines of the velero server log (whole log kept in %s) ---\n%s", kept, s.Server.Tail(150))
		}
	})
}

// WaitLocationPhase polls a storage location until it reaches phase.
func (s *Stack) WaitLocationPhase(t testing.TB, name string, phase velerov1.BackupStorageLocationPhase, timeout time.Duration) *velerov1.BackupStorageLocation {
	t.Helper()
	bsl := &velerov1.BackupStorageLocation{}
	s.poll(t, timeout, fmt.Sprintf("storage location %s to be %s", name, phase), func(ctx context.Context) (bool, string) {
		if err := s.Client.Get(ctx, ctrlclient.ObjectKey{Namespace: Namespace, Name: name}, bsl); err != nil {
			return false, err.Error()
		}
		return bsl.Status.Phase == phase, fmt.Sprintf("phase %q, message %q", bsl.Status.Phase, bsl.Status.Message)
	})
	return bsl
}

// poll calls cond every 500 ms until it is true; on timeout the test fails
// with cond's last description. It also fails at once when the velero server
// has exited.
func (s *Stack) poll(t testing.TB, timeout time.Duration, what string, cond func(ctx context.Context) (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last string
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		ok, desc := cond(ctx)
		cancel()
		if ok {
			return
		}
		last = desc
		if s.Server != nil {
			select {
			case <-s.Server.Exited():
				t.Fatalf("the velero server exited while waiting for %s:\n%s", what, s.Server.Tail(60))
			default:
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s; last: %s", timeout, what, last)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func freeLoopbackAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("%v", err)
	}
	defer l.Close()
	return l.Addr().String()
}
