package restore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/util/retry"

	"github.com/velero-etcd/velero-plugin-for-etcd/etcd/cluster"
)

// Phases of a restore operation, in the order they happen.
const (
	PhasePending           = "Pending"
	PhaseWaitingForCluster = "WaitingForCluster"
	PhaseLoading           = "Loading"
	PhaseVerifying         = "Verifying"
	PhaseCompleted         = "Completed"
	PhaseFailed            = "Failed"
	PhaseCanceled          = "Canceled"
)

// State is the operation's state, kept as JSON in AnnotationRestoreStatus on
// the restored EtcdCluster: Velero runs every Progress call in a new plugin
// process, so nothing survives in memory from one call to the next.
type State struct {
	Phase          string `json:"phase"`
	Restore        string `json:"restore"`
	SnapshotKey    string `json:"snapshotKey"`
	SnapshotSHA256 string `json:"snapshotSHA256,omitempty"`
	// Policy is fixed when loading starts.
	Policy   string `json:"policy,omitempty"`
	Revision int64  `json:"revision,omitempty"`
	// Keys and Bytes are loaded: every key before ordinal Keys, in key
	// order, is in the target.
	Keys       int64  `json:"keys"`
	TotalKeys  int64  `json:"totalKeys,omitempty"`
	Bytes      int64  `json:"bytes"`
	TotalBytes int64  `json:"totalBytes,omitempty"`
	Leases     int    `json:"leases,omitempty"`
	Digest     string `json:"digest,omitempty"`
	// Cleared records that the overwrite policy deleted the target's keys.
	Cleared bool `json:"cleared,omitempty"`
	// Attempt counts the Progress calls that did work; Retries counts
	// consecutive calls that failed on a transient error.
	Attempt int    `json:"attempt"`
	Retries int    `json:"retries,omitempty"`
	Message string `json:"message,omitempty"`
	// Owner is the process loading now, "host/pid/nonce"; Heartbeat is its
	// last sign of life.
	Owner     string     `json:"owner,omitempty"`
	Heartbeat *time.Time `json:"heartbeat,omitempty"`
	Started   *time.Time `json:"started,omitempty"`
	Updated   *time.Time `json:"updated,omitempty"`
}

// Terminal reports whether the operation is over.
func (s *State) Terminal() bool {
	return s.Phase == PhaseCompleted || s.Phase == PhaseFailed || s.Phase == PhaseCanceled
}

// matches reports whether the state belongs to op (the object may carry a
// status from an older restore).
func (s *State) matches(op operation) bool {
	return s != nil && s.Restore == op.restore && s.SnapshotKey == op.snapshotKey
}

// liveOwner reports whether another process holds the operation.
func (s *State) liveOwner(me string, now time.Time) bool {
	if s.Owner == "" || s.Owner == me || s.Heartbeat == nil {
		return false
	}
	if now.Sub(*s.Heartbeat) > staleAfter {
		return false
	}
	// A process on this host that is gone holds nothing (Velero runs its
	// plugins in its own pod, so they share a PID namespace).
	parts := strings.SplitN(s.Owner, "/", 3)
	if len(parts) == 3 && parts[0] == hostname() {
		if pid, err := strconv.Atoi(parts[1]); err == nil && syscall.Kill(pid, 0) == syscall.ESRCH {
			return false
		}
	}
	return true
}

func hostname() string {
	h, _ := os.Hostname()
	return h
}

// readState decodes the status annotation; a missing or unreadable one is nil.
func readState(obj *unstructured.Unstructured) *State {
	raw, ok := obj.GetAnnotations()[AnnotationRestoreStatus]
	if !ok {
		return nil
	}
	st := &State{}
	if err := json.Unmarshal([]byte(raw), st); err != nil {
		return nil
	}
	return st
}

func writeState(obj *unstructured.Unstructured, st *State) error {
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	ann := obj.GetAnnotations()
	if ann == nil {
		ann = map[string]string{}
	}
	ann[AnnotationRestoreStatus] = string(b)
	obj.SetAnnotations(ann)
	return nil
}

// resources are the EtcdCluster kinds, by API group and served version.
var resources = []schema.GroupVersionResource{
	{Group: cluster.GroupV1alpha1, Version: "v1alpha1", Resource: "etcdclusters"},
	{Group: cluster.GroupV1beta2, Version: "v1beta2", Resource: "etcdclusters"},
}

// errStop ends an update without writing.
var errStop = errors.New("stop")

// objectStore reads and updates the restored EtcdCluster.
type objectStore struct {
	dyn       dynamic.Interface
	gvr       schema.GroupVersionResource
	namespace string
	name      string
}

// findObject looks the object up under each EtcdCluster API group and
// returns the one whose status names op, else the first found.
func findObject(ctx context.Context, dyn dynamic.Interface, op operation) (*objectStore, *unstructured.Unstructured, error) {
	var found *objectStore
	var foundObj *unstructured.Unstructured
	var lastErr error
	for _, gvr := range resources {
		obj, err := dyn.Resource(gvr).Namespace(op.namespace).Get(ctx, op.name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			continue
		}
		if err != nil {
			lastErr = fmt.Errorf("reading EtcdCluster %s/%s (%s): %w", op.namespace, op.name, gvr.Group, err)
			continue
		}
		s := &objectStore{dyn: dyn, gvr: gvr, namespace: op.namespace, name: op.name}
		if readState(obj).matches(op) {
			return s, obj, nil
		}
		if found == nil {
			found, foundObj = s, obj
		}
	}
	if found != nil {
		return found, foundObj, nil
	}
	if lastErr != nil {
		return nil, nil, lastErr
	}
	return nil, nil, errNotFound
}

var errNotFound = errors.New("not found")

// update applies fn to the current state and writes it, retrying on
// conflicts with other writers of the object (the operator updates it too).
// fn returning errStop leaves the object as it is.
func (o *objectStore) update(ctx context.Context, op operation, fn func(st *State) error) (*State, *unstructured.Unstructured, error) {
	var st *State
	var obj *unstructured.Unstructured
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		var err error
		obj, err = o.dyn.Resource(o.gvr).Namespace(o.namespace).Get(ctx, o.name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		st = readState(obj)
		if !st.matches(op) {
			st = newState(op)
		}
		if err := fn(st); err != nil {
			return err
		}
		now := time.Now().UTC().Truncate(time.Second)
		st.Updated = &now
		if err := writeState(obj, st); err != nil {
			return err
		}
		obj, err = o.dyn.Resource(o.gvr).Namespace(o.namespace).Update(ctx, obj, metav1.UpdateOptions{})
		return err
	})
	if errors.Is(err, errStop) {
		return st, obj, errStop
	}
	if err != nil {
		return nil, nil, fmt.Errorf("updating %s on EtcdCluster %s/%s: %w", AnnotationRestoreStatus, o.namespace, o.name, err)
	}
	return st, obj, nil
}

func newState(op operation) *State {
	return &State{Phase: PhasePending, Restore: op.restore, SnapshotKey: op.snapshotKey}
}
