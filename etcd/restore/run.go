package restore

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/sirupsen/logrus"
	velerov1 "github.com/vmware-tanzu/velero/pkg/apis/velero/v1"
	"github.com/vmware-tanzu/velero/pkg/plugin/velero"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/velero-etcd/velero-plugin-for-etcd/etcd/cluster"
	"github.com/velero-etcd/velero-plugin-for-etcd/etcd/keyspace"
	"github.com/velero-etcd/velero-plugin-for-etcd/etcd/location"
	"github.com/velero-etcd/velero-plugin-for-etcd/etcd/snapshot"
	"github.com/velero-etcd/velero-plugin-for-etcd/internal/kube"
	"github.com/velero-etcd/velero-plugin-for-etcd/objectstore"
)

// run is one Progress call, in a process of its own.
type run struct {
	log      logrus.FieldLogger
	op       operation
	restore  *velerov1.Restore
	clients  *kube.Clients
	settings *kube.Settings
	owner    string
	budget   time.Duration

	loadDeadline time.Time

	store *objectStore
	st    *State
}

// failure ends the operation as Failed with its message.
type failure struct{ err error }

func (f failure) Error() string { return f.err.Error() }
func (f failure) Unwrap() error { return f.err }

func fail(format string, args ...any) error { return failure{fmt.Errorf(format, args...)} }

// progress runs the state machine as far as it goes in this call. Every
// step records its outcome on the object before the next step starts, so a
// process killed anywhere leaves a state the next call continues from.
func (r *run) progress() velero.OperationProgress {
	// The budget bounds the load, which checkpoints; the other steps cannot
	// resume part way, so they get their own allowance on top.
	r.loadDeadline = time.Now().Add(r.budget)
	ctx, cancel := context.WithTimeout(context.Background(), r.budget+stepAllowance)
	defer cancel()

	store, obj, err := findObject(ctx, r.clients.Dynamic, r.op)
	if errors.Is(err, errNotFound) {
		return velero.OperationProgress{Completed: true, Err: fmt.Sprintf("etcd restore: EtcdCluster %s/%s not found: it was not restored or was deleted", r.op.namespace, r.op.name)}
	}
	if err != nil {
		return velero.OperationProgress{Description: "reading the EtcdCluster: " + err.Error()}
	}
	r.store = store
	if st := readState(obj); st.matches(r.op) && (st.Terminal() || st.liveOwner(r.owner, time.Now())) {
		return report(st)
	}

	// Claim the operation.
	st, obj, err := store.update(ctx, r.op, func(st *State) error {
		if st.Terminal() || st.liveOwner(r.owner, time.Now()) {
			return errStop
		}
		now := time.Now().UTC().Truncate(time.Second)
		st.Owner, st.Heartbeat = r.owner, &now
		st.Attempt++
		if st.Started == nil {
			st.Started = &now
		}
		return nil
	})
	if errors.Is(err, errStop) {
		return report(st)
	}
	if err != nil {
		return velero.OperationProgress{Description: err.Error()}
	}
	r.st = st

	err = r.work(ctx, obj)
	final, _, uerr := store.update(context.Background(), r.op, func(cur *State) error {
		if cur.Owner != r.owner || cur.Terminal() {
			return errStop // canceled, or taken over after we went silent
		}
		*cur = *r.st
		cur.Owner, cur.Heartbeat = "", nil
		var f failure
		switch {
		case err == nil:
		case errors.As(err, &f):
			cur.Phase, cur.Message = PhaseFailed, err.Error()
		case errors.Is(err, errBudget) || ctx.Err() != nil:
			// The call's budget is used up: not a failure, the next call goes on.
			cur.Message = fmt.Sprintf("loaded %d of %d keys; continuing in the next call", cur.Keys, cur.TotalKeys)
		default:
			cur.Retries++
			cur.Message = err.Error()
			if cur.Retries >= maxRetries {
				cur.Phase = PhaseFailed
				cur.Message = fmt.Sprintf("%s (failed %d calls in a row)", err, cur.Retries)
			}
		}
		return nil
	})
	if uerr != nil && !errors.Is(uerr, errStop) {
		r.log.WithError(uerr).Warn("etcd restore: recording the outcome")
		return velero.OperationProgress{Description: uerr.Error()}
	}
	switch final.Phase {
	case PhaseCompleted:
		r.log.Infof("etcd restore completed: %d keys, %d bytes, %d leases, digest %s", final.Keys, final.Bytes, final.Leases, final.Digest)
	case PhaseFailed:
		r.log.Errorf("etcd restore failed: %s", final.Message)
	default:
		if err != nil {
			r.log.WithError(err).Warnf("etcd restore: %s", describe(final))
		}
	}
	return report(final)
}

// errBudget ends a call whose load budget is used up.
var errBudget = errors.New("the call's load budget is used up")

// save records r.st (with a heartbeat) unless the operation was canceled or
// taken over, in which case ctx's work must stop.
var errLost = errors.New("the operation was canceled or taken over by another process")

func (r *run) save(ctx context.Context) error {
	var lost bool
	_, _, err := r.store.update(ctx, r.op, func(cur *State) error {
		if cur.Owner != r.owner || cur.Terminal() {
			lost = true
			return errStop
		}
		now := time.Now().UTC().Truncate(time.Second)
		keep := *r.st
		keep.Owner, keep.Heartbeat = r.owner, &now
		*cur = keep
		return nil
	})
	if lost {
		return errLost
	}
	return err
}

func (r *run) work(ctx context.Context, obj *unstructured.Unstructured) error {
	st := r.st
	target, err := cluster.Resolve(ctx, obj, r.clients)
	if err != nil {
		return failure{err}
	}
	maxRequest := DefaultMaxRequestBytes
	if v := obj.GetAnnotations()[AnnotationMaxRequestBytes]; v != "" {
		if maxRequest, err = strconv.Atoi(v); err != nil || maxRequest < 64<<10 {
			return fail("annotation %s=%q: want a number of bytes of at least 65536", AnnotationMaxRequestBytes, v)
		}
	}
	if st.Policy == "" {
		st.Policy = PolicyEmptyOnly
		if v := strings.TrimSpace(obj.GetAnnotations()[AnnotationRestorePolicy]); v != "" {
			st.Policy = v
		}
		switch st.Policy {
		case PolicyEmptyOnly, PolicyOverwrite, PolicyMerge:
		default:
			return fail("annotation %s=%q: want %s, %s or %s", AnnotationRestorePolicy, st.Policy, PolicyEmptyOnly, PolicyOverwrite, PolicyMerge)
		}
	}

	// Wait for the cluster.
	cfg := target.ClientConfig(target.Endpoints...)
	cfg.MaxCallSendMsgSize = maxRequest + 1<<20
	cli, err := healthy(ctx, target, cfg)
	if err != nil {
		if st.Phase == PhasePending || st.Phase == PhaseWaitingForCluster {
			st.Phase = PhaseWaitingForCluster
		}
		st.Message = fmt.Sprintf("waiting for cluster %s: %v", strings.Join(target.Endpoints, ","), err)
		r.log.Info(st.Message)
		return nil // not an error: Velero's operation timeout bounds the wait
	}
	defer cli.Close()
	st.Retries = 0

	// Download and verify the snapshot before any write.
	start := time.Now()
	snap, err := r.openSnapshot(ctx)
	if err != nil {
		return err
	}
	defer snap.Close()
	r.log.Infof("etcd restore: snapshot %s verified in %s: %d keys, %d bytes, %d leases, revision %d",
		r.op.snapshotKey, time.Since(start).Round(time.Millisecond), snap.Keys, snap.Bytes, len(snap.Leases), snap.Revision)
	if st.TotalKeys != 0 && (st.TotalKeys != snap.Keys || st.TotalBytes != snap.Bytes) {
		return fail("snapshot %s changed between calls: %d keys, %d bytes now, %d keys, %d bytes before", r.op.snapshotKey, snap.Keys, snap.Bytes, st.TotalKeys, st.TotalBytes)
	}
	st.TotalKeys, st.TotalBytes, st.Leases = snap.Keys, snap.Bytes, len(snap.Leases)
	if err := CheckSizes(snap, maxRequest); err != nil {
		return failure{err}
	}

	// The target policy, decided once: a later call sees phase Loading and
	// knows the keys there are its own.
	if st.Phase != PhaseLoading && st.Phase != PhaseVerifying {
		n, err := CountKeys(ctx, cli)
		if err != nil {
			return targetErr(err)
		}
		if n > 0 && st.Policy == PolicyEmptyOnly {
			return fail("target cluster already holds %d keys and %s is %s (the default): nothing was written; set it to %s to delete every key first, or %s to write over them",
				n, AnnotationRestorePolicy, PolicyEmptyOnly, PolicyOverwrite, PolicyMerge)
		}
		st.Phase, st.Keys, st.Bytes, st.Cleared = PhaseLoading, 0, 0, false
		st.Message = fmt.Sprintf("loading into a target with %d keys (policy %s)", n, st.Policy)
		if err := r.save(ctx); err != nil {
			return err
		}
	}
	if st.Policy == PolicyOverwrite && !st.Cleared {
		n, err := DeleteAll(ctx, cli)
		if err != nil {
			return targetErr(err)
		}
		// The target's leases go too: nothing of the old keyspace is left
		// to expire later. This operation's own leases are granted after
		// this step, but are kept in case an earlier call got that far.
		own := make(map[int64]bool, len(snap.Leases))
		for _, l := range snap.Leases {
			own[LeaseID(r.op.String(), l.ID)] = true
		}
		revoked, err := RevokeLeases(ctx, cli, own, defaultConcurrency)
		if err != nil {
			return targetErr(err)
		}
		r.log.Infof("etcd restore: policy %s deleted %d keys and revoked %d leases", PolicyOverwrite, n, revoked)
		st.Cleared, st.Keys, st.Bytes = true, 0, 0
		if err := r.save(ctx); err != nil {
			return err
		}
	}

	// The leases stay alive through the load and the verification: a key
	// whose lease ran out before it was read back would count as missing.
	leaseCtx, stopLeases := context.WithCancel(ctx)
	defer stopLeases()
	ids, err := r.leases(leaseCtx, cli, snap)
	if err != nil {
		return err
	}
	if st.Phase == PhaseLoading {
		if err := r.load(ctx, cli, snap, maxRequest, ids); err != nil {
			return err
		}
	}
	return r.verify(ctx, cli, snap)
}

// leases makes sure every snapshot lease exists in the target and keeps them
// alive until ctx ends. If one granted by an earlier call has expired, the
// keys attached to it went with it: the load starts again from the first key,
// whether the earlier call was loading or verifying.
func (r *run) leases(ctx context.Context, cli *clientv3.Client, snap *keyspace.Snapshot) (map[int64]int64, error) {
	st := r.st
	ids, created, err := GrantLeases(ctx, cli, r.op.String(), snap.Leases, defaultConcurrency)
	if err != nil {
		return nil, targetErr(err)
	}
	if created > 0 && snap.Keys > 0 && (st.Keys > 0 || st.Phase == PhaseVerifying) {
		r.log.Warnf("etcd restore: %d leases from an earlier call had expired, and the keys attached to them with them; loading again from the first key", created)
		st.Phase, st.Keys, st.Bytes = PhaseLoading, 0, 0
	}
	if err := KeepAlive(ctx, cli, ids); err != nil {
		return nil, targetErr(err)
	}
	return ids, nil
}

func (r *run) load(ctx context.Context, cli *clientv3.Client, snap *keyspace.Snapshot, maxRequest int, ids map[int64]int64) error {
	st := r.st
	loadCtx, stop := context.WithDeadline(ctx, r.loadDeadline)
	defer stop()

	var mu sync.Mutex
	keys, bytes := st.Keys, st.Bytes
	beat := make(chan error, 1)
	go func() {
		t := time.NewTicker(heartbeatEvery)
		defer t.Stop()
		for {
			select {
			case <-loadCtx.Done():
				beat <- nil
				return
			case <-t.C:
			}
			mu.Lock()
			st.Keys, st.Bytes = keys, bytes
			st.Message = fmt.Sprintf("loading (policy %s)", st.Policy)
			mu.Unlock()
			if err := r.save(loadCtx); err != nil && loadCtx.Err() == nil {
				stop()
				beat <- err
				return
			}
		}
	}()

	start, from := time.Now(), st.Keys
	n, b, err := Load(loadCtx, cli, snap, st.Keys, st.Bytes, LoadOptions{
		MaxRequestBytes: maxRequest,
		LeaseIDs:        ids,
		Checkpoint: func(k, b int64) {
			mu.Lock()
			keys, bytes = k, b
			mu.Unlock()
		},
	})
	stop()
	berr := <-beat
	mu.Lock()
	st.Keys, st.Bytes = n, b
	mu.Unlock()
	if berr != nil {
		return berr
	}
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if loadCtx.Err() != nil {
			return errBudget
		}
		return targetErr(err)
	}
	d := time.Since(start)
	r.log.Infof("etcd restore: loaded %d keys (%.1f MB) in %s: %.0f keys/s, %.1f MB/s",
		n-from, float64(b)/1e6, d.Round(time.Millisecond), float64(n-from)/d.Seconds(), float64(b)/1e6/d.Seconds())
	st.Phase, st.Message = PhaseVerifying, "verifying"
	return r.save(ctx)
}

func (r *run) verify(ctx context.Context, cli *clientv3.Client, snap *keyspace.Snapshot) error {
	st := r.st
	start := time.Now()
	got, err := Verify(ctx, cli, snap)
	if err != nil {
		return targetErr(err)
	}
	r.log.Infof("etcd restore: read %d keys back from the target in %s", got.Keys+got.Extra, time.Since(start).Round(time.Millisecond))
	want := got.Want
	switch {
	case got.FirstMissing != "":
		return fail("verification: key %q of the snapshot is missing from the target (%d of %d keys found)", truncate(got.FirstMissing, 200), got.Keys, want.Keys)
	case got.FirstDifferent != "":
		return fail("verification: key %q has a different value in the target", truncate(got.FirstDifferent, 200))
	case got.Keys != want.Keys || got.Digest != want.Digest:
		return fail("verification: target has %d keys with digest %s, snapshot %d keys with digest %s", got.Keys, got.Digest, want.Keys, want.Digest)
	case got.LeasedKeys != want.LeasedKeys:
		return fail("verification: %d keys have a lease in the target, %d in the snapshot", got.LeasedKeys, want.LeasedKeys)
	}
	st.Phase, st.Digest, st.Keys, st.Bytes = PhaseCompleted, got.Digest, got.Keys, snap.Bytes
	st.Message = fmt.Sprintf("verified %d keys (%d with leases, %d leases), digest %s", got.Keys, got.LeasedKeys, len(snap.Leases), got.Digest)
	if got.Extra > 0 {
		st.Message += fmt.Sprintf("; the target also holds %d keys not in the snapshot", got.Extra)
	}
	return nil
}

// healthy connects and checks that every endpoint answers and the cluster
// serves a linearizable read.
func healthy(ctx context.Context, t *cluster.Target, cfg clientv3.Config) (*clientv3.Client, error) {
	cli, err := clientv3.New(cfg)
	if err != nil {
		return nil, err
	}
	check := func() error {
		for _, ep := range t.Endpoints {
			sctx, cancel := context.WithTimeout(ctx, t.ConnectTimeout)
			_, err := cli.Status(sctx, ep)
			cancel()
			if err != nil {
				return fmt.Errorf("%s: %w", ep, err)
			}
		}
		gctx, cancel := context.WithTimeout(ctx, t.ConnectTimeout)
		defer cancel()
		_, err := cli.Get(gctx, "health", clientv3.WithCountOnly())
		return err
	}
	if err := check(); err != nil {
		cli.Close()
		return nil, err
	}
	return cli, nil
}

// openSnapshot reads the manifest, streams the snapshot and verifies it.
func (r *run) openSnapshot(ctx context.Context) (*keyspace.Snapshot, error) {
	loc, err := r.openLocation(ctx)
	if err != nil {
		return nil, err
	}
	key := r.op.snapshotKey
	manifestKey := strings.TrimSuffix(strings.TrimSuffix(key, ".zst"), ".db") + ".json"
	var m snapshot.Manifest
	if err := getJSON(loc, manifestKey, &m); err != nil {
		return nil, err
	}
	if m.SnapshotKey != "" && m.SnapshotKey != key {
		return nil, fail("manifest %s describes %s, not %s", manifestKey, m.SnapshotKey, key)
	}
	if r.st.SnapshotSHA256 != "" && m.StoredSHA256 != "" && !strings.EqualFold(r.st.SnapshotSHA256, m.StoredSHA256) {
		return nil, fail("manifest %s says sha256 %s, the backed-up item %s", manifestKey, m.StoredSHA256, r.st.SnapshotSHA256)
	}
	// The object is checked against the manifest, or against the backed-up
	// item when a manifest carries no digest.
	wantStored := m.StoredSHA256
	if wantStored == "" {
		wantStored = r.st.SnapshotSHA256
	}
	rc, err := loc.Store.GetObject(loc.Bucket, key)
	if err != nil {
		return nil, objectErr(key, err)
	}
	defer rc.Close()
	compressed := m.Compression == cluster.CompressionZstd || (m.Compression == "" && strings.HasSuffix(key, ".zst"))
	// Uncompressed, the stored bytes are the raw stream, which keyspace.Open
	// hashes to its end: stored stays nil and one SHA-256 pass checks both of
	// the manifest's digests.
	var (
		body   io.Reader = rc
		stored hash.Hash
	)
	if compressed {
		stored = sha256.New()
		dec, err := zstd.NewReader(io.TeeReader(rc, stored), zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, err
		}
		defer dec.Close()
		body = dec
	}
	snap, err := keyspace.Open(body, keyspace.Expect{SHA256: m.RawSHA256})
	if err != nil {
		return nil, objectErr(key, err)
	}
	got := snap.StreamSHA256
	if stored != nil {
		// Drain what the decompressor left, so the digest covers the whole object.
		if _, err := io.Copy(stored, rc); err != nil {
			snap.Close()
			return nil, objectErr(key, fmt.Errorf("reading the snapshot: %w", err))
		}
		got = hex.EncodeToString(stored.Sum(nil))
	}
	if wantStored != "" && !strings.EqualFold(got, wantStored) {
		snap.Close()
		return nil, objectErr(key, fmt.Errorf("snapshot is corrupt: stored object sha256 %s, the backup recorded %s", got, wantStored))
	}
	return snap, nil
}

// objectErr makes a missing or corrupt snapshot end the operation; other
// errors (the network) are retried in the next call.
func objectErr(key string, err error) error {
	if objectstore.IsNotFound(err) || strings.Contains(err.Error(), "NoSuchKey") {
		return fail("snapshot object %s not found in the backup storage location: %w", key, err)
	}
	if strings.Contains(err.Error(), "corrupt") || errors.Is(err, zstd.ErrMagicMismatch) || strings.Contains(err.Error(), "zstd") {
		return fail("snapshot %s: %w", key, err)
	}
	return fmt.Errorf("snapshot %s: %w", key, err)
}

func getJSON(loc *location.Location, key string, v any) error {
	rc, err := loc.Store.GetObject(loc.Bucket, key)
	if err != nil {
		return objectErr(key, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, 1<<20))
	if err != nil {
		return objectErr(key, err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fail("manifest %s: %w", key, err)
	}
	return nil
}

// openLocation opens the storage location of the backup being restored.
func (r *run) openLocation(ctx context.Context) (*location.Location, error) {
	if r.restore == nil || r.restore.Spec.BackupName == "" {
		return nil, fail("restore %s names no backup", r.op.restore)
	}
	ns := r.restore.Namespace
	if ns == "" {
		ns = r.settings.VeleroNamespace()
	}
	gvr := velerov1.SchemeGroupVersion.WithResource("backups")
	u, err := r.clients.Dynamic.Resource(gvr).Namespace(ns).Get(ctx, r.restore.Spec.BackupName, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("reading backup %s/%s: %w", ns, r.restore.Spec.BackupName, err)
	}
	bslName, _, _ := unstructured.NestedString(u.Object, "spec", "storageLocation")
	if bslName == "" {
		return nil, fail("backup %s/%s names no storage location", ns, r.restore.Spec.BackupName)
	}
	bsl, err := r.clients.GetBackupStorageLocation(ctx, ns, bslName)
	if err != nil {
		return nil, err
	}
	loc, err := location.Open(ctx, bsl, r.clients, r.log)
	if err != nil {
		return nil, failure{err}
	}
	return loc, nil
}

// targetErr makes the target's refusals end the operation: they will not
// change by themselves. Anything else is retried in the next call.
func targetErr(err error) error {
	is := func(targets ...error) bool {
		for _, t := range targets {
			if errors.Is(err, t) || errors.Is(rpctypes.Error(errors.Unwrap(err)), t) {
				return true
			}
		}
		return false
	}
	var why string
	switch {
	case is(rpctypes.ErrNoSpace, rpctypes.ErrGRPCNoSpace):
		why = "the target's database is full (etcd --quota-backend-bytes); raise the quota, then restore again"
	case is(rpctypes.ErrPermissionDenied, rpctypes.ErrGRPCPermissionDenied, rpctypes.ErrUserEmpty, rpctypes.ErrGRPCUserEmpty):
		why = "the target refused the writes (etcd permission denied): the auth secret's user needs write access to every key and to leases"
	case is(rpctypes.ErrAuthFailed, rpctypes.ErrGRPCAuthFailed, rpctypes.ErrInvalidAuthToken, rpctypes.ErrGRPCInvalidAuthToken):
		why = "etcd authentication failed: check the username and password of the auth secret"
	case is(rpctypes.ErrRequestTooLarge, rpctypes.ErrGRPCRequestTooLarge):
		why = "a request was larger than the target's --max-request-bytes: set annotation " + AnnotationMaxRequestBytes + " to the target's value"
	case is(rpctypes.ErrTooManyOps, rpctypes.ErrGRPCTooManyOps):
		why = "a transaction had more operations than the target's --max-txn-ops"
	case is(rpctypes.ErrLeaseNotFound, rpctypes.ErrGRPCLeaseNotFound):
		why = "a lease vanished during the load"
	default:
		if strings.Contains(err.Error(), "more than fits in one etcd request") || strings.Contains(err.Error(), "lease table") {
			return failure{err}
		}
		return err
	}
	return fail("%s: %w", why, err)
}
