package etcdtest

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

func TestStartPlainFillDump(t *testing.T) {
	c := Start(t, Options{})
	if len(c.Endpoints) != 3 || len(c.Members) != 3 {
		t.Fatalf("want 3 members, got %d endpoints, %d members", len(c.Endpoints), len(c.Members))
	}
	start := time.Now()
	c.Fill(t, 10000, 100)
	t.Logf("filled 10000 keys in %s", time.Since(start))
	got := c.Dump(t)
	if len(got) != 10000 {
		t.Fatalf("dump: %d keys, want 10000", len(got))
	}
	if v := got[fmt.Sprintf(fillKeyFormat, 1234)]; string(v) != string(fillValue(1234, 100)) {
		t.Fatalf("fill/1234: unexpected value")
	}

	// Every member answers on its own endpoint, and a stopped member does not.
	c.Stop(2)
	cli := c.Client(t)
	for i, ep := range c.Endpoints {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := cli.Status(ctx, ep)
		cancel()
		if (err == nil) != (i != 2) {
			t.Fatalf("status of member %d (%s): %v", i, ep, err)
		}
	}
	if len(c.Dump(t)) != 10000 {
		t.Fatal("dump with 2 of 3 members lost keys")
	}
}

func TestStartTLS(t *testing.T) {
	c := Start(t, Options{TLS: true})
	for _, ep := range c.Endpoints {
		if !strings.HasPrefix(ep, "https://127.0.0.1:") {
			t.Fatalf("endpoint %s is not https on loopback", ep)
		}
	}
	cli := c.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := cli.Put(ctx, "k", "v"); err != nil {
		t.Fatal(err)
	}

	// Without a client certificate the server refuses the connection.
	tlsNoCert := c.TLSConfig()
	tlsNoCert.Certificates = nil
	bare, err := clientv3.New(clientv3.Config{Endpoints: c.Endpoints[:1], DialTimeout: 2 * time.Second, TLS: tlsNoCert, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer bare.Close()
	ctx2, cancel2 := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel2()
	if _, err := bare.Get(ctx2, "k"); err == nil {
		t.Fatal("get without client certificate succeeded")
	}
}

func TestStartAuth(t *testing.T) {
	c := Start(t, Options{Auth: true, TLS: true})
	if c.RootUser != "root" || c.RootPassword == "" {
		t.Fatalf("root credentials not set")
	}
	cli := c.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := cli.Put(ctx, "k", "v"); err != nil {
		t.Fatal(err)
	}
	_, err := clientv3.New(clientv3.Config{Endpoints: c.Endpoints, DialTimeout: 2 * time.Second, TLS: c.TLSConfig(),
		Username: "root", Password: "wrong", Logger: zap.NewNop()})
	if err == nil || !strings.Contains(err.Error(), "authentication failed") {
		t.Fatalf("wrong password: got %v", err)
	}
}

func TestStartAtSameEndpoints(t *testing.T) {
	c := Start(t, Options{Members: 1})
	c.Fill(t, 10, 10)
	c.StopAll()
	c2 := StartAt(t, Options{}, c.Endpoints)
	if c2.Endpoints[0] != c.Endpoints[0] {
		t.Fatalf("endpoint %s, want %s", c2.Endpoints[0], c.Endpoints[0])
	}
	if n := len(c2.Dump(t)); n != 0 {
		t.Fatalf("fresh cluster has %d keys", n)
	}
}
