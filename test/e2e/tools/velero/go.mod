// Module velero builds the velero CLI and server (github.com/vmware-tanzu/velero/cmd/velero)
// for the e2e tests (hack/build-tools.sh velero).
module github.com/velero-etcd/velero-plugin-for-etcd/test/e2e/tools/velero

go 1.26.0

// Velero v1.18.3 builds against its fork of kopia.
replace github.com/kopia/kopia => github.com/project-velero/kopia v0.0.0-20251230033609-d946b1e75197

require github.com/vmware-tanzu/velero v1.18.3

// Pinned to the version the main module uses (several v0.33.12 modules are not served).
require (
	k8s.io/api v0.33.13
	k8s.io/apiextensions-apiserver v0.33.13
	k8s.io/apimachinery v0.33.13
	k8s.io/apiserver v0.33.13
	k8s.io/cli-runtime v0.33.13
	k8s.io/client-go v0.33.13
	k8s.io/component-base v0.33.13
	k8s.io/kube-aggregator v0.33.13
	k8s.io/metrics v0.33.13
)
