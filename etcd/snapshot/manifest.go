package snapshot

import (
	"fmt"
	"time"
)

// ManifestFormatVersion is bumped on incompatible changes to Manifest.
const ManifestFormatVersion = 1

// Manifest is stored next to a snapshot: what it is, where it came from, and
// how to check it.
type Manifest struct {
	FormatVersion  int            `json:"formatVersion"`
	EtcdVersion    string         `json:"etcdVersion"`
	StorageVersion string         `json:"storageVersion"`
	ClusterID      string         `json:"clusterID"`
	Member         ManifestMember `json:"member"`
	Endpoint       string         `json:"endpoint"`
	Revision       int64          `json:"revision"`
	RaftIndex      uint64         `json:"raftIndex"`
	RawSize        int64          `json:"rawSize"`
	StoredSize     int64          `json:"storedSize"`
	RawSHA256      string         `json:"rawSHA256"`
	StoredSHA256   string         `json:"storedSHA256"`
	Compression    string         `json:"compression"`
	StartTime      time.Time      `json:"startTime"`
	EndTime        time.Time      `json:"endTime"`
	BackupName     string         `json:"backupName"`
	BackupUID      string         `json:"backupUID"`
	SnapshotKey    string         `json:"snapshotKey"`
}

// ManifestMember identifies the member the snapshot was taken from.
type ManifestMember struct {
	Name string `json:"name"`
	ID   string `json:"id"`
}

// NewManifest describes res, stored under key for the given backup.
func NewManifest(res *Result, backupName, backupUID, key string) Manifest {
	return Manifest{
		FormatVersion:  ManifestFormatVersion,
		EtcdVersion:    res.Info.EtcdVersion,
		StorageVersion: res.Info.StorageVersion,
		ClusterID:      fmt.Sprintf("%x", res.Info.ClusterID),
		Member:         ManifestMember{Name: res.Info.MemberName, ID: fmt.Sprintf("%x", res.Info.MemberID)},
		Endpoint:       res.Info.Endpoint,
		Revision:       res.Info.Revision,
		RaftIndex:      res.Info.RaftIndex,
		RawSize:        res.RawSize,
		StoredSize:     res.StoredSize,
		RawSHA256:      res.RawSHA256,
		StoredSHA256:   res.StoredSHA256,
		Compression:    res.Compression,
		StartTime:      res.Started.UTC(),
		EndTime:        res.Finished.UTC(),
		BackupName:     backupName,
		BackupUID:      backupUID,
		SnapshotKey:    key,
	}
}
