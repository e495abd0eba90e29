// Package etcdtest starts real multi-member etcd clusters (go.etcd.io/etcd/server/v3/embed)
// inside the test process, bound to 127.0.0.1 only.
//
// Every member's client URL is a small TCP proxy in front of the real listener,
// so that Stop can cut live connections the way a killed process does (embed's
// own Close drains in-flight streams gracefully for seconds, which is not what a
// crash looks like to a client).
package etcdtest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	snapshotutl "go.etcd.io/etcd/etcdutl/v3/snapshot"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// Options shape a test cluster.
type Options struct {
	// Members defaults to 3.
	Members int
	// TLS generates a CA, server and client certificates and requires client
	// certificates on client and peer connections.
	TLS bool
	// Auth enables etcd authentication with the root user and RootPassword.
	Auth bool
	// MaxRequestBytes is etcd's --max-request-bytes; 0 keeps etcd's default (1.5 MiB).
	MaxRequestBytes uint
	// RootPassword, with Auth, is the root password to use instead of a random
	// one. StartFromSnapshot of an auth-enabled cluster needs the original one.
	RootPassword string
}

// Member is one etcd server of a Cluster.
type Member struct {
	Name string
	// ClientURL is the URL clients use (the proxy).
	ClientURL string
	PeerURL   string
	Dir       string
	// Etcd is the running server; nil once the member is stopped, so that a
	// stopped server's memory (its key index and raft log) can be collected
	// and does not slow the rest of the test process down.
	Etcd *embed.Etcd

	id      uint64
	proxy   *proxy
	stopped bool
}

// ID is the member's raft ID (kept after the member stops).
func (m *Member) ID() uint64 { return m.id }

// Cluster is a running test cluster.
type Cluster struct {
	// Endpoints are the client URLs, one per member.
	Endpoints []string
	Members   []*Member
	// CAPEM, ClientCertPEM and ClientKeyPEM are set with Options.TLS.
	CAPEM, ClientCertPEM, ClientKeyPEM []byte
	// RootUser and RootPassword are set with Options.Auth.
	RootUser, RootPassword string
	// Dir holds the members' data and certificates.
	Dir string

	opts        Options
	authEnabled bool
	certs       *certFiles
	mu          sync.Mutex
	fillSeq     int
}

const (
	startTimeout = 30 * time.Second
	clusterToken = "etcdtest"
)

// Start starts a fresh cluster on loopback ports, waits until it serves requests,
// and registers cleanup that stops every member.
func Start(t testing.TB, o Options) *Cluster {
	t.Helper()
	return start(t, o, nil, "")
}

// StartAt starts a fresh, empty cluster whose client URLs are clientURLs (one
// member each), e.g. to bring a cluster back at the same endpoints after a restore.
func StartAt(t testing.TB, o Options, clientURLs []string) *Cluster {
	t.Helper()
	if len(clientURLs) == 0 {
		t.Fatal("etcdtest.StartAt: no client URLs")
	}
	o.Members = len(clientURLs)
	return start(t, o, clientURLs, "")
}

// StartFromSnapshot restores snapshotPath (a raw etcd snapshot with its sha256
// trailer) into every member with etcdutl, as an operator would, and starts the
// cluster on it. If the snapshot has auth enabled, set Options.Auth and the
// original Options.RootPassword.
func StartFromSnapshot(t testing.TB, o Options, snapshotPath string) *Cluster {
	t.Helper()
	return start(t, o, nil, snapshotPath)
}

func start(t testing.TB, o Options, clientURLs []string, snapshotPath string) *Cluster {
	t.Helper()
	if o.Members <= 0 {
		o.Members = 3
	}
	c := &Cluster{Dir: t.TempDir(), opts: o}
	if o.Auth {
		c.RootUser, c.RootPassword = "root", o.RootPassword
		if c.RootPassword == "" {
			c.RootPassword = randomHex(12)
		}
	}
	if o.TLS {
		certs, err := writeCerts(filepath.Join(c.Dir, "certs"))
		if err != nil {
			t.Fatalf("etcdtest: generate certificates: %v", err)
		}
		c.certs = certs
		c.CAPEM, c.ClientCertPEM, c.ClientKeyPEM = certs.caPEM, certs.clientCertPEM, certs.clientKeyPEM
	}
	// Free ports are found by binding and releasing them, which can race with
	// other processes: retry the whole start a few times.
	c.authEnabled = o.Auth && snapshotPath != ""
	var err error
	for attempt := 1; attempt <= 3; attempt++ {
		if err = c.launch(attempt, clientURLs, snapshotPath); err == nil {
			break
		}
		c.StopAll()
		c.Members, c.Endpoints = nil, nil
	}
	if err != nil {
		t.Fatalf("etcdtest: start cluster: %v", err)
	}
	t.Cleanup(c.StopAll)
	if o.Auth && snapshotPath == "" { // a restored cluster keeps its auth settings
		if err := c.enableAuth(); err != nil {
			t.Fatalf("etcdtest: enable auth: %v", err)
		}
	}
	return c
}

func (c *Cluster) scheme() string {
	if c.opts.TLS {
		return "https"
	}
	return "http"
}

func (c *Cluster) launch(attempt int, clientURLs []string, snapshotPath string) error {
	n := c.opts.Members
	var initial []string
	for i := 0; i < n; i++ {
		m := &Member{Name: fmt.Sprintf("m%d", i)}
		addr := "127.0.0.1:0"
		if clientURLs != nil {
			u, err := url.Parse(clientURLs[i])
			if err != nil {
				return fmt.Errorf("client URL %q: %w", clientURLs[i], err)
			}
			addr = u.Host
		}
		p, err := listenProxy(addr)
		if err != nil {
			return err
		}
		m.proxy = p
		m.ClientURL = c.scheme() + "://" + p.ln.Addr().String()
		peerPort, err := freePort()
		if err != nil {
			return err
		}
		m.PeerURL = fmt.Sprintf("%s://127.0.0.1:%d", c.scheme(), peerPort)
		m.Dir = filepath.Join(c.Dir, fmt.Sprintf("a%d-%s", attempt, m.Name))
		initial = append(initial, m.Name+"="+m.PeerURL)
		c.Members = append(c.Members, m)
		c.Endpoints = append(c.Endpoints, m.ClientURL)
	}
	initialCluster := strings.Join(initial, ",")

	if snapshotPath != "" {
		for _, m := range c.Members {
			err := snapshotutl.NewV3(zap.NewNop()).Restore(snapshotutl.RestoreConfig{
				SnapshotPath:        snapshotPath,
				Name:                m.Name,
				OutputDataDir:       m.Dir,
				PeerURLs:            []string{m.PeerURL},
				InitialCluster:      initialCluster,
				InitialClusterToken: clusterToken,
			})
			if err != nil {
				return fmt.Errorf("restore %s into %s: %w", snapshotPath, m.Name, err)
			}
		}
	}

	for _, m := range c.Members {
		cfg, err := c.memberConfig(m, initialCluster)
		if err != nil {
			return err
		}
		e, err := embed.StartEtcd(cfg)
		if err != nil {
			return fmt.Errorf("start member %s: %w", m.Name, err)
		}
		m.Etcd, m.id = e, uint64(e.Server.MemberID())
		m.proxy.target = e.Clients[0].Addr().String()
		go m.proxy.serve()
	}
	timeout := time.After(startTimeout)
	for _, m := range c.Members {
		select {
		case <-m.Etcd.Server.ReadyNotify():
		case err := <-m.Etcd.Err():
			return fmt.Errorf("member %s: %w", m.Name, err)
		case <-timeout:
			return fmt.Errorf("member %s not ready after %s", m.Name, startTimeout)
		}
	}
	return c.waitHealthy()
}

func (c *Cluster) memberConfig(m *Member, initialCluster string) (*embed.Config, error) {
	cfg := embed.NewConfig()
	cfg.Name = m.Name
	cfg.Dir = m.Dir
	peer, _ := url.Parse(m.PeerURL)
	adv, _ := url.Parse(m.ClientURL)
	listen, _ := url.Parse(c.scheme() + "://127.0.0.1:0")
	cfg.ListenPeerUrls = []url.URL{*peer}
	cfg.AdvertisePeerUrls = []url.URL{*peer}
	cfg.ListenClientUrls = []url.URL{*listen}
	cfg.AdvertiseClientUrls = []url.URL{*adv}
	cfg.InitialCluster = initialCluster
	cfg.InitialClusterToken = clusterToken
	cfg.ClusterState = embed.ClusterStateFlagNew
	cfg.EnableGRPCGateway = false // its loopback connection would hold up a graceful Close for seconds
	cfg.UnsafeNoFsync = true      // tests only: fsync dominates on shared CI disks
	cfg.BcryptCost = 4            // bcrypt.MinCost: authentication is on every client start
	if c.opts.MaxRequestBytes > 0 {
		cfg.MaxRequestBytes = c.opts.MaxRequestBytes
	}
	if os.Getenv("ETCDTEST_VERBOSE") != "" {
		cfg.LogLevel = "info"
		cfg.LogOutputs = []string{"stderr"}
	} else {
		cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	}
	if c.certs != nil {
		info := transport.TLSInfo{
			CertFile:       c.certs.serverCert,
			KeyFile:        c.certs.serverKey,
			TrustedCAFile:  c.certs.ca,
			ClientCertAuth: true,
		}
		cfg.ClientTLSInfo = info
		cfg.PeerTLSInfo = info
	}
	return cfg, nil
}

func (c *Cluster) waitHealthy() error {
	cli, err := c.newClient(c.authEnabled)
	if err != nil {
		return err
	}
	defer cli.Close()
	deadline := time.Now().Add(startTimeout)
	for {
		ok := true
		for _, ep := range c.Endpoints {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_, err = cli.Status(ctx, ep)
			cancel()
			if err != nil {
				ok = false
				break
			}
		}
		if ok {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_, err = cli.Get(ctx, "etcdtest-health")
			cancel()
			if err == nil {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cluster not healthy after %s: %w", startTimeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (c *Cluster) enableAuth() error {
	cli, err := c.newClient(false)
	if err != nil {
		return err
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := cli.UserAdd(ctx, c.RootUser, c.RootPassword); err != nil {
		return err
	}
	if _, err := cli.UserGrantRole(ctx, c.RootUser, "root"); err != nil {
		return err
	}
	if _, err = cli.AuthEnable(ctx); err != nil {
		return err
	}
	c.authEnabled = true
	return nil
}

// TLSConfig is the client TLS configuration (CA and client certificate), or nil without TLS.
func (c *Cluster) TLSConfig() *tls.Config {
	if c.certs == nil {
		return nil
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(c.CAPEM)
	pair, err := tls.X509KeyPair(c.ClientCertPEM, c.ClientKeyPEM)
	if err != nil {
		panic(err) // generated by this package
	}
	return &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}
}

func (c *Cluster) newClient(withAuth bool) (*clientv3.Client, error) {
	cfg := clientv3.Config{
		Endpoints:   c.Endpoints,
		DialTimeout: 5 * time.Second,
		TLS:         c.TLSConfig(),
		Logger:      zap.NewNop(),
	}
	if c.opts.MaxRequestBytes > 0 {
		cfg.MaxCallSendMsgSize = int(c.opts.MaxRequestBytes) + 1<<20
	}
	if withAuth && c.authEnabled {
		cfg.Username, cfg.Password = c.RootUser, c.RootPassword
	}
	return clientv3.New(cfg)
}

// Client returns a client for all members, with TLS and auth as configured.
// It is closed when the test ends.
func (c *Cluster) Client(t testing.TB) *clientv3.Client {
	t.Helper()
	cli, err := c.newClient(true)
	if err != nil {
		t.Fatalf("etcdtest: client for %v: %v", c.Endpoints, err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// Stop kills member i: its client connections are cut at once, raft stops
// without handing over leadership, then the server is closed. Stopping a stopped member does nothing.
func (c *Cluster) Stop(i int) {
	c.mu.Lock()
	m := c.Members[i]
	if m.stopped {
		c.mu.Unlock()
		return
	}
	m.stopped = true
	e := m.Etcd
	m.Etcd = nil
	c.mu.Unlock()
	if m.proxy != nil {
		m.proxy.close()
	}
	if e != nil {
		// A killed member does not hand over leadership: stop raft first so that
		// Close skips the transfer (which waits seconds for stopping peers).
		e.Server.HardStop()
		e.Close()
	}
}

// StopAll stops every member, in parallel.
func (c *Cluster) StopAll() {
	var wg sync.WaitGroup
	for i := range c.Members {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.Stop(i)
		}()
	}
	wg.Wait()
}

// MemberByID returns the member with the given raft ID, or -1.
func (c *Cluster) MemberByID(id uint64) int {
	for i, m := range c.Members {
		if id != 0 && m.ID() == id {
			return i
		}
	}
	return -1
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// proxy forwards TCP connections to one member's real client listener.
type proxy struct {
	ln     net.Listener
	target string

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
}

func listenProxy(addr string) (*proxy, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", addr, err)
	}
	return &proxy{ln: ln, conns: map[net.Conn]struct{}{}}, nil
}

func (p *proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		c.Close()
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *proxy) serve() {
	for {
		in, err := p.ln.Accept()
		if err != nil {
			return
		}
		if !p.track(in) {
			return
		}
		go func() {
			out, err := net.Dial("tcp", p.target)
			if err != nil {
				in.Close()
				return
			}
			if !p.track(out) {
				in.Close()
				return
			}
			done := make(chan struct{}, 2)
			cp := func(dst, src net.Conn) {
				_, _ = copyConn(dst, src)
				dst.Close()
				src.Close()
				done <- struct{}{}
			}
			go cp(out, in)
			go cp(in, out)
			<-done
			<-done
			p.mu.Lock()
			delete(p.conns, in)
			delete(p.conns, out)
			p.mu.Unlock()
		}()
	}
}

func copyConn(dst, src net.Conn) (int64, error) {
	n, err := dst.(*net.TCPConn).ReadFrom(src)
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return n, err
}

// close stops accepting and resets every open connection, as a crash would.
func (p *proxy) close() {
	p.mu.Lock()
	p.closed = true
	conns := p.conns
	p.conns = map[net.Conn]struct{}{}
	p.mu.Unlock()
	p.ln.Close()
	for c := range conns {
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetLinger(0) // RST, like a killed process with unread data
		}
		c.Close()
	}
}
