// Package kubetest starts a real kube-apiserver for tests: the binary built
// from k8s.io/kubernetes by hack/build-tools.sh (cached outside the repo),
// backed by an etcd embedded in the test process, both on 127.0.0.1 only.
// Velero's CRDs and the EtcdCluster CRDs of examples/crds are installed and
// the "velero" namespace exists when Start returns.
//
// Everything Start runs is stopped by t.Cleanup, also when the test fails:
// the kube-apiserver first (SIGTERM to its process group, SIGKILL after a
// grace period), then etcd, then the working directory goes.
package kubetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	velerov1crds "github.com/vmware-tanzu/velero/config/crd/v1/crds"
	velerov2alpha1crds "github.com/vmware-tanzu/velero/config/crd/v2alpha1/crds"
	"go.etcd.io/etcd/server/v3/embed"
	corev1 "k8s.io/api/core/v1"
	apiextv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/yaml"
)

// VeleroNamespace is created by Start.
const VeleroNamespace = "velero"

const (
	readyTimeout = 60 * time.Second
	stopGrace    = 10 * time.Second
	// Attempts at starting a server on freshly picked ports: another process
	// can take a port between our probe and the server's bind.
	portAttempts = 5
)

// Env is a running kube-apiserver with its etcd.
type Env struct {
	Kubeconfig string // kubeconfig file: token auth, insecure-skip-tls-verify, server https://127.0.0.1:PORT
	Config     *rest.Config
	Client     kubernetes.Interface
	Dynamic    dynamic.Interface
	Dir        string // working directory: certificates, keys, kubeconfig, logs

	mapper *restmapper.DeferredDiscoveryRESTMapper
}

// Start runs etcd (embedded, in-process) and a kube-apiserver process, waits
// until the apiserver is ready, installs Velero's CRDs (as `velero install
// --crds-only` does) and the EtcdCluster CRDs from examples/crds, and creates
// the "velero" namespace.
func Start(t testing.TB) *Env {
	t.Helper()
	begin := time.Now()
	apiserverBin := Binary(t, ToolKubeAPIServer)
	root := RepoRoot(t)

	e := &Env{Dir: t.TempDir()}
	etcdURL := startEtcd(t, filepath.Join(e.Dir, "etcd"))
	etcdReady := time.Now()

	token := randomHex(t, 32)
	writeFile(t, filepath.Join(e.Dir, "tokens.csv"), token+",admin,admin,system:masters\n")
	writeServiceAccountKeys(t, e.Dir)
	port := startAPIServer(t, apiserverBin, e.Dir, etcdURL, token)
	apiserverReady := time.Now()

	e.Kubeconfig = filepath.Join(e.Dir, "kubeconfig")
	writeKubeconfig(t, e.Kubeconfig, fmt.Sprintf("https://127.0.0.1:%d", port), token)
	cfg, err := clientcmd.BuildConfigFromFlags("", e.Kubeconfig)
	if err != nil {
		t.Fatalf("kubetest: load %s: %v", e.Kubeconfig, err)
	}
	cfg.QPS, cfg.Burst = 200, 400
	e.Config = cfg
	if e.Client, err = kubernetes.NewForConfig(cfg); err != nil {
		t.Fatalf("kubetest: %v", err)
	}
	if e.Dynamic, err = dynamic.NewForConfig(cfg); err != nil {
		t.Fatalf("kubetest: %v", err)
	}
	disco, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		t.Fatalf("kubetest: %v", err)
	}
	e.mapper = restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(disco))

	e.installCRDs(t, root)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: VeleroNamespace}}
	if _, err := e.Client.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		t.Fatalf("kubetest: create namespace %s: %v", VeleroNamespace, err)
	}
	t.Logf("kubetest: kube-apiserver https://127.0.0.1:%d ready in %s (binary+etcd %s, kube-apiserver %s, CRDs+namespace %s); kubeconfig %s",
		port, fmtDuration(time.Since(begin)), fmtDuration(etcdReady.Sub(begin)), fmtDuration(apiserverReady.Sub(etcdReady)),
		fmtDuration(time.Since(apiserverReady)), e.Kubeconfig)
	return e
}

// startEtcd starts an embedded etcd on loopback ports and returns its client
// URL. It is closed at cleanup, after the kube-apiserver (cleanups run last
// registered first).
func startEtcd(t testing.TB, dir string) string {
	t.Helper()
	var lastErr error
	for attempt := 0; attempt < portAttempts; attempt++ {
		ports := freePorts(t, 2)
		clientURL := url.URL{Scheme: "http", Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0]))}
		peerURL := url.URL{Scheme: "http", Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[1]))}

		cfg := embed.NewConfig()
		cfg.Name = "kubetest"
		cfg.Dir = dir
		cfg.ListenClientUrls = []url.URL{clientURL}
		cfg.AdvertiseClientUrls = []url.URL{clientURL}
		cfg.ListenPeerUrls = []url.URL{peerURL}
		cfg.AdvertisePeerUrls = []url.URL{peerURL}
		cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
		cfg.InitialClusterToken = "kubetest-" + randomHex(t, 4)
		cfg.LogOutputs = []string{dir + ".log"}
		cfg.LogLevel = "info"
		// Durability is pointless for a throw-away test cluster, and fsync
		// dominates the apiserver's write latency on slow disks.
		cfg.UnsafeNoFsync = true

		etcd, err := embed.StartEtcd(cfg)
		if err != nil {
			lastErr = err
			_ = os.RemoveAll(dir)
			if isAddrInUse(err) {
				continue
			}
			break
		}
		select {
		case <-etcd.Server.ReadyNotify():
		case err := <-etcd.Err():
			etcd.Close()
			t.Fatalf("kubetest: embedded etcd failed: %v (log %s.log)", err, dir)
		case <-time.After(readyTimeout):
			etcd.Close()
			t.Fatalf("kubetest: embedded etcd not ready within %s (log %s.log)", readyTimeout, dir)
		}
		t.Cleanup(etcd.Close)
		return clientURL.String()
	}
	t.Fatalf("kubetest: start embedded etcd: %v", lastErr)
	return ""
}

// startAPIServer runs the kube-apiserver with the flags of the e2e recipe and
// waits for /readyz. It returns the secure port.
func startAPIServer(t testing.TB, bin, dir, etcdURL, token string) int {
	t.Helper()
	logPath := filepath.Join(dir, "kube-apiserver.log")
	for attempt := 1; ; attempt++ {
		port := freePorts(t, 1)[0]
		args := []string{
			"--etcd-servers=" + etcdURL,
			"--cert-dir=" + filepath.Join(dir, "certs"),
			"--secure-port=" + strconv.Itoa(port),
			"--bind-address=127.0.0.1",
			"--advertise-address=127.0.0.1",
			"--service-cluster-ip-range=10.0.0.0/24",
			"--service-account-issuer=https://kubernetes.default.svc",
			"--service-account-key-file=" + filepath.Join(dir, "sa.pub"),
			"--service-account-signing-key-file=" + filepath.Join(dir, "sa.key"),
			"--authorization-mode=RBAC",
			"--token-auth-file=" + filepath.Join(dir, "tokens.csv"),
			"--disable-admission-plugins=ServiceAccount",
		}
		logFile, err := os.Create(logPath)
		if err != nil {
			t.Fatalf("kubetest: %v", err)
		}
		p := startProcess(t, bin, args, dir, logFile)
		_ = logFile.Close() // the child holds its own descriptor

		err = waitReady(port, token, p.exited)
		if err == nil {
			t.Cleanup(p.stop)
			return port
		}
		p.stop()
		log := tailFile(logPath, 40)
		if attempt < portAttempts && strings.Contains(log, "address already in use") {
			t.Logf("kubetest: port %d taken before kube-apiserver bound it; retrying", port)
			continue
		}
		t.Fatalf("kubetest: kube-apiserver on 127.0.0.1:%d: %v\n--- tail of %s ---\n%s", port, err, logPath, log)
	}
}

// process is a child process in its own process group.
type process struct {
	t      testing.TB
	cmd    *exec.Cmd
	exited chan struct{} // closed when the process has exited
	err    error         // Wait's result, valid once exited is closed
}

func startProcess(t testing.TB, bin string, args []string, dir string, out *os.File) *process {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = out, out
	// Own process group, so that stop reaches any children too; and die with
	// the test process if it is killed (e.g. by the test timeout).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("kubetest: start %s: %v", bin, err)
	}
	p := &process{t: t, cmd: cmd, exited: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()
	return p
}

// stop sends SIGTERM to the process group and SIGKILL after stopGrace.
func (p *process) stop() {
	pid := p.cmd.Process.Pid
	select {
	case <-p.exited:
		return
	default:
	}
	_ = syscall.Kill(-pid, syscall.SIGTERM)
	select {
	case <-p.exited:
		return
	case <-time.After(stopGrace):
	}
	p.t.Logf("kubetest: %s (pid %d) still running %s after SIGTERM; killing", filepath.Base(p.cmd.Path), pid, stopGrace)
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	<-p.exited
}

// waitReady polls /readyz until it answers 200, the process exits, or
// readyTimeout passes.
func waitReady(port int, token string, exited <-chan struct{}) error {
	client := &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{
			TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, // self-signed cert of --cert-dir
		},
	}
	defer client.CloseIdleConnections()
	url := fmt.Sprintf("https://127.0.0.1:%d/readyz", port)
	deadline := time.Now().Add(readyTimeout)
	var last string
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return errors.New("process exited before it became ready")
		case <-time.After(200 * time.Millisecond):
		}
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := client.Do(req)
		if err != nil {
			last = err.Error()
			continue
		}
		var body bytes.Buffer
		_, _ = body.ReadFrom(resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			return nil
		}
		last = fmt.Sprintf("HTTP %d: %s", resp.StatusCode, lastLines(body.String(), 10))
	}
	return fmt.Errorf("not ready within %s; last /readyz answer: %s", readyTimeout, last)
}

// installCRDs creates Velero's CRDs from the velero module (the set `velero
// install --crds-only` installs) and every CRD in examples/crds, then waits
// until all are Established.
func (e *Env) installCRDs(t testing.TB, root string) {
	t.Helper()
	crds := append([]*apiextv1.CustomResourceDefinition{}, velerov1crds.CRDs...)
	crds = append(crds, velerov2alpha1crds.CRDs...)
	files, err := filepath.Glob(filepath.Join(root, "examples", "crds", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("kubetest: no CRDs in %s (%v)", filepath.Join(root, "examples", "crds"), err)
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatalf("kubetest: %v", err)
		}
		crd := &apiextv1.CustomResourceDefinition{}
		if err := yaml.UnmarshalStrict(data, crd); err != nil {
			t.Fatalf("kubetest: decode CRD %s: %v", f, err)
		}
		crds = append(crds, crd)
	}

	client, err := apiextclient.NewForConfig(e.Config)
	if err != nil {
		t.Fatalf("kubetest: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for _, crd := range crds {
		crd = crd.DeepCopy()
		crd.ResourceVersion = ""
		if _, err := client.ApiextensionsV1().CustomResourceDefinitions().Create(ctx, crd, metav1.CreateOptions{}); err != nil {
			t.Fatalf("kubetest: create CRD %s: %v", crd.Name, err)
		}
	}
	for _, crd := range crds {
		err := wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, func(ctx context.Context) (bool, error) {
			got, err := client.ApiextensionsV1().CustomResourceDefinitions().Get(ctx, crd.Name, metav1.GetOptions{})
			if err != nil {
				return false, nil
			}
			for _, c := range got.Status.Conditions {
				if c.Type == apiextv1.NamesAccepted && c.Status == apiextv1.ConditionFalse {
					return false, fmt.Errorf("names not accepted: %s", c.Message)
				}
				if c.Type == apiextv1.Established && c.Status == apiextv1.ConditionTrue {
					return true, nil
				}
			}
			return false, nil
		})
		if err != nil {
			t.Fatalf("kubetest: CRD %s not established: %v", crd.Name, err)
		}
	}
	// Established does not mean discoverable yet: wait until discovery lists
	// every CRD, so that the first Apply need not wait for it.
	disco, err := discovery.NewDiscoveryClientForConfig(e.Config)
	if err != nil {
		t.Fatalf("kubetest: %v", err)
	}
	for _, crd := range crds {
		for _, v := range crd.Spec.Versions {
			if !v.Served {
				continue
			}
			gv := crd.Spec.Group + "/" + v.Name
			err := wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, func(context.Context) (bool, error) {
				list, err := disco.ServerResourcesForGroupVersion(gv)
				if err != nil {
					return false, nil
				}
				for _, r := range list.APIResources {
					if r.Name == crd.Spec.Names.Plural {
						return true, nil
					}
				}
				return false, nil
			})
			if err != nil {
				t.Fatalf("kubetest: %s of CRD %s not discoverable: %v", gv, crd.Name, err)
			}
		}
	}
	e.mapper.Reset()
}

func writeServiceAccountKeys(t testing.TB, dir string) {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatalf("kubetest: service-account key: %v", err)
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatalf("kubetest: service-account key: %v", err)
	}
	writeFile(t, filepath.Join(dir, "sa.key"), string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})))
	writeFile(t, filepath.Join(dir, "sa.pub"), string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub})))
}

func writeKubeconfig(t testing.TB, path, server, token string) {
	t.Helper()
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["kubetest"] = &clientcmdapi.Cluster{Server: server, InsecureSkipTLSVerify: true}
	cfg.AuthInfos["admin"] = &clientcmdapi.AuthInfo{Token: token}
	cfg.Contexts["kubetest"] = &clientcmdapi.Context{Cluster: "kubetest", AuthInfo: "admin", Namespace: "default"}
	cfg.CurrentContext = "kubetest"
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatalf("kubetest: write kubeconfig: %v", err)
	}
}

// freePorts returns n distinct loopback ports that were free a moment ago.
// All are held open together so that they differ; callers retry on a bind race.
func freePorts(t testing.TB, n int) []int {
	t.Helper()
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("kubetest: pick a free port: %v", err)
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports
}

func isAddrInUse(err error) bool {
	return errors.Is(err, syscall.EADDRINUSE) || strings.Contains(err.Error(), "address already in use")
}

func randomHex(t testing.TB, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatalf("kubetest: %v", err)
	}
	return hex.EncodeToString(b)
}

func writeFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatalf("kubetest: %v", err)
	}
}

func tailFile(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", path, err)
	}
	return lastLines(string(data), n)
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
