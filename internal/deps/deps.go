//go:build tools

// Package deps pins dependencies while the code that uses them is written.
package deps

import (
	_ "github.com/aliyun/alibabacloud-oss-go-sdk-v2/oss"
	_ "github.com/aliyun/aliyun-oss-go-sdk/oss"
	_ "github.com/aliyun/credentials-go/credentials"
	_ "github.com/klauspost/compress/zstd"
	_ "github.com/sirupsen/logrus"
	_ "github.com/spf13/pflag"
	_ "github.com/stretchr/testify/require"
	_ "github.com/vmware-tanzu/velero/pkg/persistence"
	_ "github.com/vmware-tanzu/velero/pkg/plugin/clientmgmt"
	_ "github.com/vmware-tanzu/velero/pkg/plugin/framework"
	_ "go.etcd.io/etcd/client/v3"
	_ "go.etcd.io/etcd/etcdutl/v3/snapshot"
	_ "go.etcd.io/etcd/server/v3/embed"
	_ "k8s.io/client-go/kubernetes"
)
