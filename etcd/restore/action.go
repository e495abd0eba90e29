// Package restore is the RestoreItemAction velero-etcd.io/etcd-restore: when
// Velero restores an EtcdCluster whose backed-up copy carries a snapshot from
// the etcd-snapshot action, it loads that snapshot's keys, values and leases
// into the cluster the operator brings up again, through the etcd API, and
// verifies them.
//
// The item does not exist yet when Execute runs, so the load is a Velero
// asynchronous operation: Execute only marks the item, and Progress, which
// Velero calls in a new plugin process about every 10 s, does the work. All
// state lives in the annotation velero-etcd.io/restore-status on the
// restored object.
package restore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"math"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	velerov1 "github.com/vmware-tanzu/velero/pkg/apis/velero/v1"
	"github.com/vmware-tanzu/velero/pkg/plugin/velero"
	riav2 "github.com/vmware-tanzu/velero/pkg/plugin/velero/restoreitemaction/v2"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/velero-etcd/velero-plugin-for-etcd/etcd/backup"
	"github.com/velero-etcd/velero-plugin-for-etcd/internal/kube"
)

// PluginName is the name users and Velero know the action by.
const PluginName = "velero-etcd.io/etcd-restore"

// Annotations the action reads and writes on the restored EtcdCluster.
const (
	// AnnotationRestoreStatus holds the operation's State as JSON.
	AnnotationRestoreStatus = "velero-etcd.io/restore-status"
	// AnnotationRestorePolicy is PolicyEmptyOnly (default), PolicyOverwrite or PolicyMerge.
	AnnotationRestorePolicy = "velero-etcd.io/restore-policy"
	// AnnotationMaxRequestBytes is the target's --max-request-bytes, when
	// it is not etcd's default of 1.5 MiB.
	AnnotationMaxRequestBytes = "velero-etcd.io/max-request-bytes"
)

// Target policies.
const (
	// PolicyEmptyOnly loads only into a cluster without keys.
	PolicyEmptyOnly = "empty-only"
	// PolicyOverwrite deletes every key of the cluster first.
	PolicyOverwrite = "overwrite"
	// PolicyMerge writes the snapshot's keys over what is there.
	PolicyMerge = "merge"
)

// Tuning of a Progress call.
const (
	// defaultCallBudget bounds the work of one Progress call: Velero's
	// operations controller waits for it. A longer load goes on in the
	// next call from its checkpoint.
	defaultCallBudget = 10 * time.Minute
	// stepAllowance bounds the steps of a call other than the load
	// (download, verification), which cannot stop part way.
	stepAllowance = 15 * time.Minute
	// EnvCallBudget overrides defaultCallBudget (a Go duration).
	EnvCallBudget = "VELERO_ETCD_RESTORE_CALL_BUDGET"
	// heartbeatEvery is how often a loading process records its checkpoint.
	heartbeatEvery = 2 * time.Second
	// staleAfter is when a silent owner is presumed dead.
	staleAfter = 20 * time.Second
	// maxRetries is how many Progress calls in a row may fail on a
	// transient error before the operation fails.
	maxRetries  = 3
	kubeTimeout = time.Minute
)

// Action implements riav2.RestoreItemAction.
type Action struct {
	log      logrus.FieldLogger
	settings *kube.Settings
}

var _ riav2.RestoreItemAction = (*Action)(nil)

// New returns the action; Kubernetes clients are made on first use.
func New(log logrus.FieldLogger, settings *kube.Settings) *Action {
	return &Action{log: log, settings: settings}
}

func (a *Action) Name() string { return PluginName }

func (a *Action) AppliesTo() (velero.ResourceSelector, error) {
	return velero.ResourceSelector{IncludedResources: backup.Resources}, nil
}

// operation is what an operation ID names.
type operation struct {
	restore, namespace, name, snapshotKey string
}

func (o operation) String() string {
	return o.restore + "/" + o.namespace + "/" + o.name + "/" + o.snapshotKey
}

func parseOperationID(id string) (operation, error) {
	p := strings.SplitN(id, "/", 4)
	if len(p) != 4 || p[0] == "" || p[1] == "" || p[2] == "" || p[3] == "" {
		return operation{}, riav2.InvalidOperationIDError(id)
	}
	return operation{restore: p[0], namespace: p[1], name: p[2], snapshotKey: p[3]}, nil
}

// Execute passes an item without a snapshot through untouched. Otherwise it
// marks the item Pending and starts an operation named after the restore,
// the target namespace and name and the snapshot object.
//
// The target namespace is the item's after the restore's namespace mapping.
// Velero moves the item into the mapped namespace only after the restore
// actions have run, so Execute still sees the backed-up namespace and applies
// the mapping itself, as Velero's own CSI PVC action does. Taking the item's
// namespace as it comes would point the operation at the original cluster.
func (a *Action) Execute(in *velero.RestoreItemActionExecuteInput) (*velero.RestoreItemActionExecuteOutput, error) {
	var backedUp map[string]string
	if in.ItemFromBackup != nil {
		backedUp = (&unstructured.Unstructured{Object: in.ItemFromBackup.UnstructuredContent()}).GetAnnotations()
	}
	key := backedUp[backup.AnnotationSnapshotKey]
	if key == "" {
		return velero.NewRestoreItemActionExecuteOutput(in.Item), nil
	}
	item := &unstructured.Unstructured{Object: in.Item.UnstructuredContent()}
	namespace := item.GetNamespace()
	if mapped, ok := in.Restore.Spec.NamespaceMapping[namespace]; ok && mapped != "" {
		namespace = mapped
	}
	op := operation{restore: in.Restore.Name, namespace: namespace, name: item.GetName(), snapshotKey: key}
	if op.namespace == "" || op.name == "" {
		return nil, fmt.Errorf("etcd restore: item %s/%s has no namespace or name", op.namespace, op.name)
	}
	st := newState(op)
	st.SnapshotSHA256 = backedUp[backup.AnnotationSnapshotSHA256]
	st.Revision, _ = strconv.ParseInt(backedUp[backup.AnnotationSnapshotRevision], 10, 64)
	st.Message = "waiting for the restored cluster"
	if err := writeState(item, st); err != nil {
		return nil, err
	}
	a.log.WithFields(logrus.Fields{"etcdcluster": op.namespace + "/" + op.name, "restore": op.restore}).
		Infof("etcd restore: will load snapshot %s once the cluster is up (operation %s)", key, op)
	out := velero.NewRestoreItemActionExecuteOutput(item)
	out.OperationID = op.String()
	return out, nil
}

// Progress does the work: wait for the cluster, load, verify. See run.
func (a *Action) Progress(operationID string, restore *velerov1.Restore) (velero.OperationProgress, error) {
	op, err := parseOperationID(operationID)
	if err != nil {
		return velero.OperationProgress{}, err
	}
	if restore != nil && restore.Name != op.restore {
		return velero.OperationProgress{}, riav2.InvalidOperationIDError(operationID)
	}
	clients, err := a.settings.Clients()
	if err != nil {
		return velero.OperationProgress{}, fmt.Errorf("etcd restore %s: connecting to the Kubernetes API: %w", op, err)
	}
	r := &run{
		log:      a.log.WithFields(logrus.Fields{"etcdcluster": op.namespace + "/" + op.name, "restore": op.restore, "snapshot": op.snapshotKey}),
		op:       op,
		restore:  restore,
		clients:  clients,
		settings: a.settings,
		owner:    fmt.Sprintf("%s/%d/%s", hostname(), os.Getpid(), nonce()),
		budget:   callBudget(),
	}
	defer liftMemoryLimit()()
	return r.progress(), nil
}

// memoryLimit counts the Progress calls running in this process, so that
// the limit comes back only when the last one ends.
var memoryLimit struct {
	sync.Mutex
	calls int
	prev  int64
}

// liftMemoryLimit lifts the process's soft memory limit until the returned
// function is called. The plugin's default limit (main.go) is sized for
// streaming; a restore holds an index of every key for the whole call (about
// 50 bytes a key, plus the key-by-key map while it is built), and under that
// limit a large keyspace would keep the collector running back to back. A
// limit the user chose with GOMEMLIMIT stays.
func liftMemoryLimit() (restore func()) {
	if os.Getenv("GOMEMLIMIT") != "" {
		return func() {}
	}
	memoryLimit.Lock()
	defer memoryLimit.Unlock()
	if memoryLimit.calls == 0 {
		memoryLimit.prev = debug.SetMemoryLimit(math.MaxInt64)
	}
	memoryLimit.calls++
	return func() {
		memoryLimit.Lock()
		defer memoryLimit.Unlock()
		if memoryLimit.calls--; memoryLimit.calls == 0 {
			debug.SetMemoryLimit(memoryLimit.prev)
		}
	}
}

// Cancel records Canceled; a process loading now sees it at its next
// heartbeat and stops. Progress afterwards reports the operation failed.
func (a *Action) Cancel(operationID string, restore *velerov1.Restore) error {
	op, err := parseOperationID(operationID)
	if err != nil {
		return err
	}
	clients, err := a.settings.Clients()
	if err != nil {
		return fmt.Errorf("etcd restore %s: connecting to the Kubernetes API: %w", op, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), kubeTimeout)
	defer cancel()
	store, _, err := findObject(ctx, clients.Dynamic, op)
	if err != nil {
		if err == errNotFound {
			return nil
		}
		return err
	}
	_, _, err = store.update(ctx, op, func(st *State) error {
		if st.Terminal() {
			return errStop
		}
		st.Message = fmt.Sprintf("canceled in phase %s after %d of %d keys", st.Phase, st.Keys, st.TotalKeys)
		st.Phase = PhaseCanceled
		st.Owner, st.Heartbeat = "", nil
		return nil
	})
	if err == errStop {
		err = nil
	}
	if err == nil {
		a.log.WithField("operation", op.String()).Warn("etcd restore canceled")
	}
	return err
}

func (a *Action) AreAdditionalItemsReady([]velero.ResourceIdentifier, *velerov1.Restore) (bool, error) {
	return true, nil
}

func callBudget() time.Duration {
	if d, err := time.ParseDuration(os.Getenv(EnvCallBudget)); err == nil && d > 0 {
		return d
	}
	return defaultCallBudget
}

func nonce() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// report turns a state into what Velero shows.
func report(st *State) velero.OperationProgress {
	p := velero.OperationProgress{
		NCompleted:     st.Bytes,
		NTotal:         st.TotalBytes,
		OperationUnits: "bytes",
		Description:    describe(st),
	}
	if st.Started != nil {
		p.Started = *st.Started
	}
	if st.Updated != nil {
		p.Updated = *st.Updated
	}
	switch st.Phase {
	case PhaseCompleted:
		p.Completed = true
	case PhaseFailed:
		p.Completed, p.Err = true, "etcd restore failed: "+st.Message
	case PhaseCanceled:
		p.Completed, p.Err = true, "etcd restore canceled: "+st.Message
	}
	return p
}

func describe(st *State) string {
	s := st.Phase
	if st.TotalKeys > 0 {
		s += fmt.Sprintf(" (%d/%d keys)", st.Keys, st.TotalKeys)
	}
	if st.Message != "" {
		s += ": " + st.Message
	}
	return s
}
