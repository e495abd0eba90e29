// Command etcd runs one etcd member from go.etcd.io/etcd/server/v3/embed with
// the flags the e2e tests need. It logs to stderr and stops cleanly on SIGTERM
// or SIGINT.
package main

import (
	"flag"
	"fmt"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"go.etcd.io/etcd/server/v3/embed"
)

func main() {
	cfg := embed.NewConfig()
	cfg.LogOutputs = []string{"stderr"}
	var listenClient, advertiseClient, listenPeer, advertisePeer string
	flag.StringVar(&cfg.Name, "name", cfg.Name, "member name")
	flag.StringVar(&cfg.Dir, "data-dir", "", "data directory (default <name>.etcd)")
	flag.StringVar(&listenClient, "listen-client-urls", "http://127.0.0.1:2379", "comma-separated client URLs to listen on")
	flag.StringVar(&advertiseClient, "advertise-client-urls", "http://127.0.0.1:2379", "comma-separated client URLs to advertise")
	flag.StringVar(&listenPeer, "listen-peer-urls", "http://127.0.0.1:2380", "comma-separated peer URLs to listen on")
	flag.StringVar(&advertisePeer, "initial-advertise-peer-urls", "http://127.0.0.1:2380", "comma-separated peer URLs to advertise")
	flag.StringVar(&cfg.InitialCluster, "initial-cluster", "", "initial cluster, name=peerURL,... (default <name>=<initial-advertise-peer-urls>)")
	flag.StringVar(&cfg.ClusterState, "initial-cluster-state", embed.ClusterStateFlagNew, "new or existing")
	flag.StringVar(&cfg.InitialClusterToken, "initial-cluster-token", cfg.InitialClusterToken, "initial cluster token")
	flag.Parse()

	if cfg.Dir == "" {
		cfg.Dir = cfg.Name + ".etcd"
	}
	var err error
	for _, u := range []struct {
		dst  *[]url.URL
		flag string
		val  string
	}{
		{&cfg.ListenClientUrls, "listen-client-urls", listenClient},
		{&cfg.AdvertiseClientUrls, "advertise-client-urls", advertiseClient},
		{&cfg.ListenPeerUrls, "listen-peer-urls", listenPeer},
		{&cfg.AdvertisePeerUrls, "initial-advertise-peer-urls", advertisePeer},
	} {
		if *u.dst, err = parseURLs(u.val); err != nil {
			fatalf("--%s: %v", u.flag, err)
		}
	}
	if cfg.InitialCluster == "" {
		cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	}

	e, err := embed.StartEtcd(cfg)
	if err != nil {
		fatalf("start etcd: %v", err)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	select {
	case <-e.Server.ReadyNotify():
		e.GetLogger().Info("etcd is ready to serve client requests")
	case err := <-e.Err():
		fatalf("etcd: %v", err)
	case <-sig:
		e.Close()
		return
	}
	select {
	case err := <-e.Err():
		e.Close()
		fatalf("etcd: %v", err)
	case <-sig:
		e.Close()
	}
}

func parseURLs(s string) ([]url.URL, error) {
	var out []url.URL
	for _, raw := range strings.Split(s, ",") {
		u, err := url.Parse(strings.TrimSpace(raw))
		if err != nil {
			return nil, err
		}
		out = append(out, *u)
	}
	return out, nil
}

func fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "etcd: "+format+"\n", args...)
	os.Exit(1)
}
