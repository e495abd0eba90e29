package snapshot

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"

	"github.com/sirupsen/logrus"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/velero-etcd/velero-plugin-for-etcd/etcd/cluster"
)

// Info describes the member a snapshot is (or was) taken from. Revision and
// RaftIndex are read just before the snapshot starts: the snapshot holds at
// least that revision.
type Info struct {
	Endpoint       string
	MemberID       uint64
	MemberName     string
	ClusterID      uint64
	Revision       int64
	RaftIndex      uint64
	EtcdVersion    string
	StorageVersion string
	IsLeader       bool
}

// Candidate is one endpoint as seen by Pick. Err is set when the member could
// not be asked; such candidates come last and Take skips them.
type Candidate struct {
	Info Info
	// DBSize is the database size reported by Status (used for progress).
	DBSize int64
	// Reason is a human explanation of the rank, for the log.
	Reason string
	Err    error
}

// Healthy reports whether the member answered.
func (c Candidate) Healthy() bool { return c.Err == nil }

// Pick asks every endpoint for its status, in parallel and each bounded by the
// connect timeout, and returns the members best first: highest revision, then
// highest raft index, then followers before the leader (leave the leader
// alone). Members that did not answer are listed last with their error. It
// fails when no member answered, or when the endpoints are not one cluster.
func Pick(ctx context.Context, t *cluster.Target, log logrus.FieldLogger) ([]Candidate, error) {
	if len(t.Endpoints) == 0 {
		return nil, fmt.Errorf("pick member of %s: no endpoints", t)
	}
	cands := make([]Candidate, len(t.Endpoints))
	var wg sync.WaitGroup
	for i, ep := range t.Endpoints {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cands[i] = status(ctx, t, ep)
		}()
	}
	wg.Wait()

	var healthy, broken []Candidate
	for _, c := range cands {
		if c.Healthy() {
			healthy = append(healthy, c)
		} else {
			broken = append(broken, c)
		}
	}
	if len(healthy) == 0 {
		var msgs []string
		for _, c := range broken {
			msgs = append(msgs, fmt.Sprintf("%s: %v", c.Info.Endpoint, c.Err))
		}
		return nil, fmt.Errorf("pick member of %s: no endpoint answered within %s: %s", t, t.ConnectTimeout, strings.Join(msgs, "; "))
	}
	for _, c := range healthy[1:] {
		if c.Info.ClusterID != healthy[0].Info.ClusterID {
			return nil, fmt.Errorf("pick member of %s: endpoints belong to different etcd clusters (%s is %x, %s is %x)",
				t, healthy[0].Info.Endpoint, healthy[0].Info.ClusterID, c.Info.Endpoint, c.Info.ClusterID)
		}
	}
	sort.SliceStable(healthy, func(i, j int) bool { return better(healthy[i], healthy[j]) })
	best := healthy[0].Info
	for i := range healthy {
		healthy[i].Reason = reason(healthy[i], best, i == 0)
	}
	for i := range broken {
		broken[i].Reason = fmt.Sprintf("endpoint %s unreachable: %v", broken[i].Info.Endpoint, broken[i].Err)
	}
	out := append(healthy, broken...)
	for i, c := range out {
		log.WithField("rank", i+1).Info("etcd snapshot candidate: " + c.Reason)
	}
	return out, nil
}

func better(a, b Candidate) bool {
	if a.Info.Revision != b.Info.Revision {
		return a.Info.Revision > b.Info.Revision
	}
	if a.Info.RaftIndex != b.Info.RaftIndex {
		return a.Info.RaftIndex > b.Info.RaftIndex
	}
	return !a.Info.IsLeader && b.Info.IsLeader
}

func reason(c Candidate, best Info, first bool) string {
	var b strings.Builder
	fmt.Fprintf(&b, "member %s at rev %d", c.Info.MemberName, c.Info.Revision)
	switch {
	case c.Info.Revision == best.Revision && first:
		b.WriteString(" (highest)")
	case c.Info.Revision < best.Revision:
		fmt.Fprintf(&b, " (%d behind)", best.Revision-c.Info.Revision)
	}
	fmt.Fprintf(&b, ", raft index %d", c.Info.RaftIndex)
	if c.Info.IsLeader {
		b.WriteString(", leader")
	} else {
		b.WriteString(", follower")
	}
	fmt.Fprintf(&b, ", %s", c.Info.Endpoint)
	return b.String()
}

// status asks one endpoint, through a client bound to that endpoint only.
func status(ctx context.Context, t *cluster.Target, ep string) Candidate {
	c := Candidate{Info: Info{Endpoint: ep}}
	ctx, cancel := context.WithTimeout(ctx, t.ConnectTimeout)
	defer cancel()
	cli, err := clientv3.New(t.ClientConfig(ep))
	if err != nil {
		c.Err = describeErr(err)
		return c
	}
	defer cli.Close()
	if err := fillInfo(ctx, cli, &c); err != nil {
		c.Err = describeErr(err)
	}
	return c
}

// fillInfo reads Status (and the member's name) into c.
func fillInfo(ctx context.Context, cli *clientv3.Client, c *Candidate) error {
	ep := c.Info.Endpoint
	st, err := cli.Status(ctx, ep)
	if err != nil {
		return err
	}
	if st.Header == nil {
		return errors.New("status without header")
	}
	c.Info.MemberID = st.Header.MemberId
	c.Info.ClusterID = st.Header.ClusterId
	c.Info.Revision = st.Header.Revision
	c.Info.RaftIndex = st.RaftIndex
	c.Info.EtcdVersion = st.Version
	c.Info.StorageVersion = st.StorageVersion
	c.Info.IsLeader = st.Leader == st.Header.MemberId
	c.DBSize = st.DbSize
	c.Info.MemberName = fmt.Sprintf("%x", c.Info.MemberID)
	if ml, err := cli.MemberList(ctx, clientv3.WithSerializable()); err == nil {
		for _, m := range ml.Members {
			if m.ID == c.Info.MemberID && m.Name != "" {
				c.Info.MemberName = m.Name
			}
		}
	}
	return nil
}
