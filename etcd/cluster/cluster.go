// Package cluster resolves where an etcd cluster described by an EtcdCluster
// resource lives and how to connect to it. It only reads the item and the
// Secrets it names; it never talks to etcd.
package cluster

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// Annotations on an EtcdCluster item that drive the snapshot.
const (
	// AnnotationSnapshot opts a cluster in to snapshots.
	AnnotationSnapshot = "velero-etcd.io/snapshot"
	// AnnotationEndpoints is a comma-separated list of client URLs; it overrides
	// whatever the operator's resource says.
	AnnotationEndpoints = "velero-etcd.io/endpoints"
	// AnnotationTLSSecret names a Secret (ca.crt, tls.crt, tls.key) in the cluster's namespace.
	AnnotationTLSSecret = "velero-etcd.io/tls-secret"
	// AnnotationAuthSecret names a Secret (username, password) in the cluster's namespace.
	AnnotationAuthSecret = "velero-etcd.io/auth-secret"
	// AnnotationCompression is "none" (default) or "zstd".
	AnnotationCompression = "velero-etcd.io/compression"
	// AnnotationConnectTimeout bounds dialing and the first byte of each member (Go duration).
	AnnotationConnectTimeout = "velero-etcd.io/connect-timeout"
	// AnnotationStreamTimeout bounds one whole snapshot stream (Go duration).
	AnnotationStreamTimeout = "velero-etcd.io/stream-timeout"
)

// API groups of the two EtcdCluster kinds understood here. Other projects ship an
// EtcdCluster kind too, so the group, not the kind, decides.
var (
	// GroupV1beta2 is the archived coreos etcd-operator.
	GroupV1beta2 = "etcd.database.coreos.com"
	// GroupV1alpha1 is etcd-io/etcd-operator.
	GroupV1alpha1 = "operator.etcd.io"
)

// Compression values.
const (
	CompressionNone = "none"
	CompressionZstd = "zstd"
)

// Defaults for the timeout annotations.
const (
	DefaultConnectTimeout = 10 * time.Second
	DefaultStreamTimeout  = 30 * time.Minute
)

// Keys read from Secrets.
const (
	operatorSecretCert = "etcd-client.crt"
	operatorSecretKey  = "etcd-client.key"
	operatorSecretCA   = "etcd-client-ca.crt"

	tlsSecretCA   = "ca.crt"
	tlsSecretCert = "tls.crt"
	tlsSecretKey  = "tls.key"

	authSecretUsername = "username"
	authSecretPassword = "password"
)

const defaultClientPort = 2379

// SecretGetter reads a Secret's data. It is an interface so that the plugin can
// back it with a Kubernetes client and tests with a map.
type SecretGetter interface {
	GetSecret(ctx context.Context, namespace, name string) (map[string][]byte, error)
}

// Target is everything needed to connect to one etcd cluster.
type Target struct {
	Namespace, Name, APIGroup string
	Endpoints                 []string
	// TLS is nil for plaintext.
	TLS                *tls.Config
	Username, Password string
	ConnectTimeout     time.Duration
	StreamTimeout      time.Duration
	// Compression is CompressionNone or CompressionZstd.
	Compression string
}

// String describes the target for logs and errors; it never includes the
// password or key material.
func (t Target) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "etcd cluster %s/%s", t.Namespace, t.Name)
	if t.APIGroup != "" {
		fmt.Fprintf(&b, " (%s)", t.APIGroup)
	}
	fmt.Fprintf(&b, " endpoints=[%s]", strings.Join(t.Endpoints, ","))
	switch {
	case t.TLS == nil:
		b.WriteString(" tls=off")
	case len(t.TLS.Certificates) > 0:
		b.WriteString(" tls=on(client cert)")
	default:
		b.WriteString(" tls=on")
	}
	if t.Username != "" {
		fmt.Fprintf(&b, " user=%s", t.Username)
	}
	return b.String()
}

// ClientConfig returns a clientv3 configuration for the given endpoints (a
// snapshot must be taken through a single-endpoint client, so the caller picks).
func (t Target) ClientConfig(endpoints ...string) clientv3.Config {
	cfg := clientv3.Config{
		Endpoints:   endpoints,
		DialTimeout: t.ConnectTimeout,
		// Detects a member that vanished without closing the connection; etcd
		// refuses pings more often than every 5 s.
		DialKeepAliveTime:    10 * time.Second,
		DialKeepAliveTimeout: t.ConnectTimeout,
		Username:             t.Username,
		Password:             t.Password,
		Logger:               zap.NewNop(),
	}
	if t.TLS != nil {
		cfg.TLS = t.TLS.Clone()
	}
	return cfg
}

// Resolve reads the item's annotations, spec and status (and the Secrets they
// name) and returns how to reach the cluster.
func Resolve(ctx context.Context, item *unstructured.Unstructured, secrets SecretGetter) (*Target, error) {
	if item == nil {
		return nil, errors.New("resolve etcd cluster: nil item")
	}
	group := item.GroupVersionKind().Group
	t := &Target{
		Namespace:      item.GetNamespace(),
		Name:           item.GetName(),
		APIGroup:       group,
		ConnectTimeout: DefaultConnectTimeout,
		StreamTimeout:  DefaultStreamTimeout,
		Compression:    CompressionNone,
	}
	where := fmt.Sprintf("EtcdCluster %s/%s", t.Namespace, t.Name)
	if group != GroupV1beta2 && group != GroupV1alpha1 {
		return nil, fmt.Errorf("%s: unsupported API group %q (want %s or %s)", where, group, GroupV1beta2, GroupV1alpha1)
	}
	ann := item.GetAnnotations()

	var err error
	if t.ConnectTimeout, err = durationAnnotation(ann, AnnotationConnectTimeout, DefaultConnectTimeout); err != nil {
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	if t.StreamTimeout, err = durationAnnotation(ann, AnnotationStreamTimeout, DefaultStreamTimeout); err != nil {
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	if c, ok := ann[AnnotationCompression]; ok {
		switch c = strings.ToLower(strings.TrimSpace(c)); c {
		case CompressionNone, CompressionZstd:
			t.Compression = c
		default:
			return nil, fmt.Errorf("%s: annotation %s=%q: want %q or %q", where, AnnotationCompression, c, CompressionNone, CompressionZstd)
		}
	}

	// TLS: the annotation wins over what the operator's resource says.
	tlsSecret := strings.TrimSpace(ann[AnnotationTLSSecret])
	if tlsSecret != "" {
		if t.TLS, err = tlsFromSecret(ctx, secrets, t.Namespace, tlsSecret, tlsSecretCA, tlsSecretCert, tlsSecretKey, false); err != nil {
			return nil, fmt.Errorf("%s: annotation %s: %w", where, AnnotationTLSSecret, err)
		}
	}

	if raw, ok := ann[AnnotationEndpoints]; ok {
		if t.Endpoints, err = parseEndpoints(raw); err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		for _, ep := range t.Endpoints {
			if strings.HasPrefix(ep, "http://") && t.TLS != nil {
				return nil, fmt.Errorf("%s: annotation %s: endpoint %q is http but %s is set; use https", where, AnnotationEndpoints, ep, AnnotationTLSSecret)
			}
		}
		if t.TLS == nil && strings.HasPrefix(t.Endpoints[0], "https://") {
			// https without a Secret: verify against the system roots.
			t.TLS = &tls.Config{MinVersion: tls.VersionTLS12}
		}
	} else {
		switch group {
		case GroupV1beta2:
			err = resolveV1beta2(ctx, item, secrets, t)
		case GroupV1alpha1:
			err = resolveV1alpha1(item, t)
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
	}

	if authSecret := strings.TrimSpace(ann[AnnotationAuthSecret]); authSecret != "" {
		data, err := getSecret(ctx, secrets, t.Namespace, authSecret)
		if err != nil {
			return nil, fmt.Errorf("%s: annotation %s: %w", where, AnnotationAuthSecret, err)
		}
		user, err := secretKey(data, t.Namespace, authSecret, authSecretUsername)
		if err != nil {
			return nil, fmt.Errorf("%s: annotation %s: %w", where, AnnotationAuthSecret, err)
		}
		pass, err := secretKey(data, t.Namespace, authSecret, authSecretPassword)
		if err != nil {
			return nil, fmt.Errorf("%s: annotation %s: %w", where, AnnotationAuthSecret, err)
		}
		t.Username = strings.TrimSpace(string(user))
		t.Password = string(pass)
		if t.Username == "" || t.Password == "" {
			return nil, fmt.Errorf("%s: annotation %s: secret %s/%s has an empty %s or %s", where, AnnotationAuthSecret, t.Namespace, authSecret, authSecretUsername, authSecretPassword)
		}
	}
	return t, nil
}

// resolveV1beta2 follows the coreos etcd-operator: a client Service and,
// optionally, an operator Secret with a client certificate.
func resolveV1beta2(ctx context.Context, item *unstructured.Unstructured, secrets SecretGetter, t *Target) error {
	svc, _, _ := unstructured.NestedString(item.Object, "status", "serviceName")
	if svc == "" {
		svc = t.Name + "-client"
	}
	port, err := intField(item.Object, "status", "clientPort")
	if err != nil {
		return err
	}
	if port == 0 {
		port = defaultClientPort
	}
	scheme := "http"
	if t.TLS == nil {
		opSecret, _, _ := unstructured.NestedString(item.Object, "spec", "TLS", "static", "operatorSecret")
		if opSecret != "" {
			if t.TLS, err = tlsFromSecret(ctx, secrets, t.Namespace, opSecret, operatorSecretCA, operatorSecretCert, operatorSecretKey, true); err != nil {
				return fmt.Errorf("spec.TLS.static.operatorSecret: %w", err)
			}
		}
	}
	if t.TLS != nil {
		scheme = "https"
	}
	t.Endpoints = []string{fmt.Sprintf("%s://%s.%s.svc:%d", scheme, svc, t.Namespace, port)}
	return nil
}

// resolveV1alpha1 follows etcd-io/etcd-operator, which has only a headless
// Service: one endpoint per member of the StatefulSet.
func resolveV1alpha1(item *unstructured.Unstructured, t *Target) error {
	size, err := intField(item.Object, "spec", "size")
	if err != nil {
		return err
	}
	if size <= 0 {
		return fmt.Errorf("spec.size is missing or zero; set annotation %s", AnnotationEndpoints)
	}
	scheme := "http"
	if t.TLS != nil {
		scheme = "https"
	} else if tlsSpec, found, _ := unstructured.NestedMap(item.Object, "spec", "tls"); found && len(tlsSpec) > 0 {
		return fmt.Errorf("spec.tls is set but the client certificate is not known; set annotation %s", AnnotationTLSSecret)
	}
	for i := int64(0); i < size; i++ {
		t.Endpoints = append(t.Endpoints, fmt.Sprintf("%s://%s-%d.%s.%s.svc.cluster.local:%d", scheme, t.Name, i, t.Name, t.Namespace, defaultClientPort))
	}
	return nil
}

// intField reads an integer that may have been decoded from JSON as int64 or float64.
func intField(obj map[string]any, fields ...string) (int64, error) {
	v, found, err := unstructured.NestedFieldNoCopy(obj, fields...)
	if err != nil || !found || v == nil {
		return 0, nil
	}
	switch n := v.(type) {
	case int64:
		return n, nil
	case int32:
		return int64(n), nil
	case int:
		return int64(n), nil
	case float64:
		if n != float64(int64(n)) {
			return 0, fmt.Errorf("%s: %v is not an integer", strings.Join(fields, "."), n)
		}
		return int64(n), nil
	default:
		return 0, fmt.Errorf("%s: %v (%T) is not an integer", strings.Join(fields, "."), v, v)
	}
}

func durationAnnotation(ann map[string]string, key string, def time.Duration) (time.Duration, error) {
	raw, ok := ann[key]
	if !ok || strings.TrimSpace(raw) == "" {
		return def, nil
	}
	d, err := time.ParseDuration(strings.TrimSpace(raw))
	if err != nil {
		return 0, fmt.Errorf("annotation %s=%q: %w", key, raw, err)
	}
	if d <= 0 {
		return 0, fmt.Errorf("annotation %s=%q: must be positive", key, raw)
	}
	return d, nil
}

func parseEndpoints(raw string) ([]string, error) {
	var eps []string
	for _, e := range strings.Split(raw, ",") {
		e = strings.TrimSpace(e)
		if e == "" {
			continue
		}
		u, err := url.Parse(e)
		if err != nil {
			return nil, fmt.Errorf("annotation %s: bad endpoint %q: %v", AnnotationEndpoints, e, err)
		}
		if u.Scheme != "http" && u.Scheme != "https" {
			return nil, fmt.Errorf("annotation %s: bad endpoint %q: scheme must be http or https", AnnotationEndpoints, e)
		}
		host, port, err := net.SplitHostPort(u.Host)
		if err != nil || host == "" {
			return nil, fmt.Errorf("annotation %s: bad endpoint %q: want scheme://host:port", AnnotationEndpoints, e)
		}
		if p, err := strconv.Atoi(port); err != nil || p <= 0 || p > 65535 {
			return nil, fmt.Errorf("annotation %s: bad endpoint %q: bad port %q", AnnotationEndpoints, e, port)
		}
		if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.User != nil {
			return nil, fmt.Errorf("annotation %s: bad endpoint %q: want scheme://host:port without path, query or user", AnnotationEndpoints, e)
		}
		eps = append(eps, u.Scheme+"://"+u.Host)
	}
	if len(eps) == 0 {
		return nil, fmt.Errorf("annotation %s is empty", AnnotationEndpoints)
	}
	for _, e := range eps[1:] {
		if strings.SplitN(e, ":", 2)[0] != strings.SplitN(eps[0], ":", 2)[0] {
			return nil, fmt.Errorf("annotation %s: endpoints mix http and https", AnnotationEndpoints)
		}
	}
	return eps, nil
}

func getSecret(ctx context.Context, secrets SecretGetter, namespace, name string) (map[string][]byte, error) {
	if secrets == nil {
		return nil, fmt.Errorf("secret %s/%s: no secret reader configured", namespace, name)
	}
	data, err := secrets.GetSecret(ctx, namespace, name)
	if err != nil {
		return nil, fmt.Errorf("secret %s/%s: %w", namespace, name, err)
	}
	return data, nil
}

func secretKey(data map[string][]byte, namespace, name, key string) ([]byte, error) {
	v, ok := data[key]
	if !ok || len(v) == 0 {
		return nil, fmt.Errorf("secret %s/%s has no key %q", namespace, name, key)
	}
	return v, nil
}

// tlsFromSecret builds a client TLS config. caKey is required; the certificate
// pair is required only when requirePair is set (server-only TLS needs just a CA).
func tlsFromSecret(ctx context.Context, secrets SecretGetter, namespace, name, caKey, certKey, keyKey string, requirePair bool) (*tls.Config, error) {
	data, err := getSecret(ctx, secrets, namespace, name)
	if err != nil {
		return nil, err
	}
	ca, err := secretKey(data, namespace, name, caKey)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		return nil, fmt.Errorf("secret %s/%s: key %q holds no PEM certificate", namespace, name, caKey)
	}
	cfg := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}

	_, hasCert := data[certKey]
	_, hasKey := data[keyKey]
	if !requirePair && !hasCert && !hasKey {
		return cfg, nil
	}
	certPEM, err := secretKey(data, namespace, name, certKey)
	if err != nil {
		return nil, err
	}
	keyPEM, err := secretKey(data, namespace, name, keyKey)
	if err != nil {
		return nil, err
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		// The parse error of a key can quote bytes of it: do not pass it on.
		return nil, fmt.Errorf("secret %s/%s: keys %q and %q are not a valid certificate and key pair", namespace, name, certKey, keyKey)
	}
	cfg.Certificates = []tls.Certificate{pair}
	return cfg, nil
}

// ReferencedSecrets names the Secrets in the item's namespace that a restore
// of the item needs: the ones the plugin reads (velero-etcd.io/tls-secret
// and auth-secret, an etcd-operator cluster's operatorSecret) and, for an
// etcd-operator cluster, the member certificates its operator needs to bring
// the cluster up again. A backup selected by label would otherwise leave them
// out, and the restored cluster could never be reached.
func ReferencedSecrets(item *unstructured.Unstructured) []string {
	var names []string
	add := func(name string) {
		if name = strings.TrimSpace(name); name != "" && !slices.Contains(names, name) {
			names = append(names, name)
		}
	}
	ann := item.GetAnnotations()
	add(ann[AnnotationTLSSecret])
	add(ann[AnnotationAuthSecret])
	if item.GroupVersionKind().Group == GroupV1beta2 {
		for _, path := range [][]string{
			{"spec", "TLS", "static", "operatorSecret"},
			{"spec", "TLS", "static", "member", "peerSecret"},
			{"spec", "TLS", "static", "member", "serverSecret"},
		} {
			name, _, _ := unstructured.NestedString(item.Object, path...)
			add(name)
		}
	}
	slices.Sort(names)
	return names
}
