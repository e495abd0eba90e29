#!/usr/bin/env bash
# Builds the binaries the e2e tests run (kube-apiserver, velero, etcd) from
# their own Go modules under test/e2e/tools/, and caches them outside the repo
# so that test runs and CI runs on the same machine build each one only once.
#
#   hack/build-tools.sh kube-apiserver|velero|etcd|all
#
# Each binary is cached as $VELERO_ETCD_CACHE/bin/<tool>-<hash12>, where the
# hash covers the tool module's go.mod, go.sum and Go sources plus the Go
# version and target: changing any of them builds a new binary. The path of
# each binary is printed on stdout; progress goes to stderr.
#
# Safe to run concurrently: builds of one tool are serialised with flock, and
# a binary appears in the cache only once complete (temp file + rename).
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools_dir="${repo_root}/test/e2e/tools"
cache_dir="${VELERO_ETCD_CACHE:-${HOME}/.cache/velero-plugin-for-etcd}"
bin_dir="${cache_dir}/bin"

# A partial binary never lands in the cache; remove it if interrupted.
tmp=""
cleanup() { [[ -z "${tmp}" ]] || rm -f "${tmp}"; }
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP

usage() {
	echo "usage: $0 kube-apiserver|velero|etcd|all" >&2
	exit 2
}

# package and ldflags of each tool's main, relative to its module.
tool_pkg() {
	case "$1" in
	kube-apiserver) echo "k8s.io/kubernetes/cmd/kube-apiserver" ;;
	velero) echo "github.com/vmware-tanzu/velero/cmd/velero" ;;
	etcd) echo "." ;;
	*) usage ;;
	esac
}

tool_ldflags() {
	case "$1" in
	# Without these, `--version` reports v0.0.0-master / "main".
	kube-apiserver) echo "-s -w -X k8s.io/component-base/version.gitVersion=v1.33.13 -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=33 -X k8s.io/component-base/version.gitTreeState=clean" ;;
	velero) echo "-s -w -X github.com/vmware-tanzu/velero/pkg/buildinfo.Version=v1.18.3" ;;
	*) echo "-s -w" ;;
	esac
}

tool_hash() {
	local dir="$1"
	{
		go env GOVERSION GOOS GOARCH
		echo "ldflags: $(tool_ldflags "$2")"
		# Every file that decides what gets built: go.mod, go.sum, the Go
		# sources and the local modules the replaces point to.
		(cd "${dir}" && find . -type f \( -name '*.go' -o -name 'go.mod' -o -name 'go.sum' \) | LC_ALL=C sort | xargs sha256sum)
	} | sha256sum | cut -c1-12
}

build_one() {
	local tool="$1"
	local dir="${tools_dir}/${tool}"
	[[ -f "${dir}/go.mod" ]] || { echo "no module at ${dir}" >&2; exit 1; }
	local hash out
	hash="$(tool_hash "${dir}" "${tool}")"
	out="${bin_dir}/${tool}-${hash}"
	mkdir -p "${bin_dir}"

	if [[ ! -x "${out}" ]]; then
		# One build per tool at a time; whoever waited finds the binary ready.
		exec {lock}>"${bin_dir}/.${tool}.lock"
		flock "${lock}"
		if [[ ! -x "${out}" ]]; then
			local start
			tmp="$(mktemp "${bin_dir}/.${tool}-${hash}.XXXXXX")"
			start=${SECONDS}
			echo "build-tools: building ${tool} (first build takes several minutes) -> ${out}" >&2
			(
				cd "${dir}"
				GOWORK=off CGO_ENABLED=0 go build -mod=readonly -trimpath \
					-ldflags "$(tool_ldflags "${tool}")" -o "${tmp}" "$(tool_pkg "${tool}")"
			)
			chmod 0755 "${tmp}"
			mv -f "${tmp}" "${out}"
			tmp=""
			echo "build-tools: built ${tool} in $((SECONDS - start))s" >&2
		fi
		exec {lock}>&-
	fi
	echo "${out}"
}

[[ $# -eq 1 ]] || usage
case "$1" in
all) for t in kube-apiserver velero etcd; do build_one "${t}"; done ;;
kube-apiserver | velero | etcd) build_one "$1" ;;
*) usage ;;
esac
