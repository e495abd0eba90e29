package cluster

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/velero-etcd/velero-plugin-for-etcd/internal/etcdtest"
)

type fakeSecrets map[string]map[string][]byte // "ns/name" -> data

func (f fakeSecrets) GetSecret(_ context.Context, ns, name string) (map[string][]byte, error) {
	d, ok := f[ns+"/"+name]
	if !ok {
		return nil, errors.New("not found")
	}
	return d, nil
}

func item(apiVersion string, ann map[string]string, spec, status map[string]any) *unstructured.Unstructured {
	obj := map[string]any{
		"apiVersion": apiVersion,
		"kind":       "EtcdCluster",
		"metadata":   map[string]any{"name": "main", "namespace": "db"},
	}
	if spec != nil {
		obj["spec"] = spec
	}
	if status != nil {
		obj["status"] = status
	}
	u := &unstructured.Unstructured{Object: obj}
	if ann != nil {
		u.SetAnnotations(ann)
	}
	return u
}

// pki returns real PEM material (the generator of the test clusters).
func pki(t *testing.T) (ca, cert, key []byte) { return etcdtest.Certs(t) }

func TestResolveV1beta2(t *testing.T) {
	tgt, err := Resolve(context.Background(), item("etcd.database.coreos.com/v1beta2", nil, map[string]any{"size": int64(3)},
		map[string]any{"serviceName": "main-svc", "clientPort": int64(2380)}), fakeSecrets{})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(tgt.Endpoints, ",") != "http://main-svc.db.svc:2380" || tgt.TLS != nil || tgt.Compression != "none" ||
		tgt.ConnectTimeout != 10*time.Second || tgt.StreamTimeout != 30*time.Minute || tgt.APIGroup != GroupV1beta2 {
		t.Fatalf("%+v", tgt)
	}
	// Fallbacks when status is empty; JSON numbers decode as float64.
	tgt, err = Resolve(context.Background(), item("etcd.database.coreos.com/v1beta2", nil, nil, map[string]any{"clientPort": float64(0)}), nil)
	if err != nil || tgt.Endpoints[0] != "http://main-client.db.svc:2379" {
		t.Fatalf("%v %+v", err, tgt)
	}
}

func TestResolveV1beta2OperatorSecret(t *testing.T) {
	ca, cert, key := pki(t)
	spec := map[string]any{"TLS": map[string]any{"static": map[string]any{"operatorSecret": "op-tls"}}}
	secrets := fakeSecrets{"db/op-tls": {"etcd-client.crt": cert, "etcd-client.key": key, "etcd-client-ca.crt": ca}}
	tgt, err := Resolve(context.Background(), item("etcd.database.coreos.com/v1beta2", nil, spec, nil), secrets)
	if err != nil {
		t.Fatal(err)
	}
	if tgt.Endpoints[0] != "https://main-client.db.svc:2379" || tgt.TLS == nil || len(tgt.TLS.Certificates) != 1 || tgt.TLS.RootCAs == nil {
		t.Fatalf("%+v", tgt)
	}
	s := tgt.String()
	if strings.Contains(s, "PRIVATE") || !strings.Contains(s, "tls=on(client cert)") {
		t.Fatalf("String: %s", s)
	}

	delete(secrets["db/op-tls"], "etcd-client.key")
	_, err = Resolve(context.Background(), item("etcd.database.coreos.com/v1beta2", nil, spec, nil), secrets)
	if err == nil || !strings.Contains(err.Error(), "db/op-tls") || !strings.Contains(err.Error(), "etcd-client.key") {
		t.Fatalf("missing key: %v", err)
	}
	_, err = Resolve(context.Background(), item("etcd.database.coreos.com/v1beta2", nil, spec, nil), fakeSecrets{})
	if err == nil || !strings.Contains(err.Error(), "db/op-tls") {
		t.Fatalf("missing secret: %v", err)
	}
}

func TestResolveV1alpha1(t *testing.T) {
	tgt, err := Resolve(context.Background(), item("operator.etcd.io/v1alpha1", nil, map[string]any{"size": int64(3)}, nil), nil)
	if err != nil {
		t.Fatal(err)
	}
	want := "http://main-0.main.db.svc.cluster.local:2379,http://main-1.main.db.svc.cluster.local:2379,http://main-2.main.db.svc.cluster.local:2379"
	if strings.Join(tgt.Endpoints, ",") != want {
		t.Fatalf("endpoints %v", tgt.Endpoints)
	}
	for _, spec := range []map[string]any{nil, {"size": int64(0)}} {
		if _, err := Resolve(context.Background(), item("operator.etcd.io/v1alpha1", nil, spec, nil), nil); err == nil || !strings.Contains(err.Error(), "spec.size") {
			t.Fatalf("size %v: %v", spec, err)
		}
	}
	// spec.tls without a secret to connect with: say which annotation to set.
	_, err = Resolve(context.Background(), item("operator.etcd.io/v1alpha1", nil, map[string]any{"size": int64(1), "tls": map[string]any{"provider": "cert-manager"}}, nil), nil)
	if err == nil || !strings.Contains(err.Error(), AnnotationTLSSecret) {
		t.Fatalf("tls without secret: %v", err)
	}
}

func TestResolveAnnotations(t *testing.T) {
	ca, cert, key := pki(t)
	secrets := fakeSecrets{
		"db/tls":     {"ca.crt": ca, "tls.crt": cert, "tls.key": key},
		"db/ca-only": {"ca.crt": ca},
		"db/auth":    {"username": []byte("backup"), "password": []byte("s3cret-pw")},
		"db/no-pw":   {"username": []byte("backup")},
	}
	ann := map[string]string{
		AnnotationEndpoints:      " https://10.0.0.1:2379 , https://etcd-1.example:2379 ",
		AnnotationTLSSecret:      "tls",
		AnnotationAuthSecret:     "auth",
		AnnotationCompression:    "zstd",
		AnnotationConnectTimeout: "3s",
		AnnotationStreamTimeout:  "1h",
	}
	tgt, err := Resolve(context.Background(), item("operator.etcd.io/v1alpha1", ann, nil, nil), secrets)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(tgt.Endpoints, ",") != "https://10.0.0.1:2379,https://etcd-1.example:2379" || len(tgt.TLS.Certificates) != 1 ||
		tgt.Username != "backup" || tgt.Password != "s3cret-pw" || tgt.Compression != "zstd" || tgt.ConnectTimeout != 3*time.Second || tgt.StreamTimeout != time.Hour {
		t.Fatalf("%+v", tgt)
	}
	if s := tgt.String(); strings.Contains(s, "s3cret") || !strings.Contains(s, "user=backup") {
		t.Fatalf("String: %s", s)
	}
	cfg := tgt.ClientConfig(tgt.Endpoints[0])
	if cfg.Username != "backup" || cfg.TLS == nil || cfg.DialTimeout != 3*time.Second || len(cfg.Endpoints) != 1 {
		t.Fatalf("client config %+v", cfg)
	}

	// The annotation overrides v1beta2 TLS too; a CA alone is server-only TLS.
	ann2 := map[string]string{AnnotationTLSSecret: "ca-only"}
	tgt, err = Resolve(context.Background(), item("etcd.database.coreos.com/v1beta2", ann2, nil, nil), secrets)
	if err != nil || tgt.Endpoints[0] != "https://main-client.db.svc:2379" || len(tgt.TLS.Certificates) != 0 {
		t.Fatalf("%v %+v", err, tgt)
	}

	bad := []struct {
		ann  map[string]string
		want []string
	}{
		{map[string]string{AnnotationEndpoints: "http://ok:2379,ftp://x:1"}, []string{AnnotationEndpoints, "ftp://x:1"}},
		{map[string]string{AnnotationEndpoints: "http://nohost"}, []string{AnnotationEndpoints, "http://nohost"}},
		{map[string]string{AnnotationEndpoints: "garbage"}, []string{AnnotationEndpoints, "garbage"}},
		{map[string]string{AnnotationEndpoints: "http://h:99999"}, []string{AnnotationEndpoints, "99999"}},
		{map[string]string{AnnotationEndpoints: " , "}, []string{AnnotationEndpoints}},
		{map[string]string{AnnotationEndpoints: "http://h:2379", AnnotationTLSSecret: "tls"}, []string{"http://h:2379", "https"}},
		{map[string]string{AnnotationCompression: "gzip"}, []string{AnnotationCompression, "gzip"}},
		{map[string]string{AnnotationConnectTimeout: "soon"}, []string{AnnotationConnectTimeout, "soon"}},
		{map[string]string{AnnotationStreamTimeout: "-1s"}, []string{AnnotationStreamTimeout}},
		{map[string]string{AnnotationAuthSecret: "missing"}, []string{AnnotationAuthSecret, "db/missing"}},
		{map[string]string{AnnotationAuthSecret: "no-pw"}, []string{"db/no-pw", `"password"`}},
		{map[string]string{AnnotationTLSSecret: "auth"}, []string{"db/auth", `"ca.crt"`}},
	}
	for _, b := range bad {
		_, err := Resolve(context.Background(), item("operator.etcd.io/v1alpha1", b.ann, map[string]any{"size": int64(1)}, nil), secrets)
		if err == nil {
			t.Fatalf("%v: no error", b.ann)
		}
		for _, w := range b.want {
			if !strings.Contains(err.Error(), w) {
				t.Fatalf("%v: error %q does not mention %q", b.ann, err, w)
			}
		}
		if strings.Contains(err.Error(), "s3cret") {
			t.Fatalf("error leaks the password: %v", err)
		}
	}
}

func TestResolveOtherGroup(t *testing.T) {
	_, err := Resolve(context.Background(), item("etcd.aenix.io/v1alpha1", nil, map[string]any{"replicas": int64(3)}, nil), nil)
	if err == nil || !strings.Contains(err.Error(), "etcd.aenix.io") {
		t.Fatalf("other group: %v", err)
	}
}

func TestReferencedSecrets(t *testing.T) {
	tlsSpec := map[string]any{"TLS": map[string]any{"static": map[string]any{
		"operatorSecret": "op",
		"member":         map[string]any{"peerSecret": "peer", "serverSecret": "server"},
	}}}
	cases := []struct {
		name string
		item *unstructured.Unstructured
		want []string
	}{
		{"nothing named", item("operator.etcd.io/v1alpha1", map[string]string{AnnotationSnapshot: "true"}, nil, nil), nil},
		{"annotations", item("operator.etcd.io/v1alpha1", map[string]string{AnnotationTLSSecret: " tls ", AnnotationAuthSecret: "auth"}, nil, nil), []string{"auth", "tls"}},
		{"etcd-operator spec", item("etcd.database.coreos.com/v1beta2", nil, tlsSpec, nil), []string{"op", "peer", "server"}},
		{"named twice", item("etcd.database.coreos.com/v1beta2", map[string]string{AnnotationTLSSecret: "op"}, tlsSpec, nil), []string{"op", "peer", "server"}},
		// The etcd-io operator's spec has no such fields: nothing is guessed.
		{"other group's spec ignored", item("operator.etcd.io/v1alpha1", nil, tlsSpec, nil), nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := ReferencedSecrets(c.item)
			if strings.Join(got, ",") != strings.Join(c.want, ",") {
				t.Fatalf("got %q, want %q", got, c.want)
			}
		})
	}
}
