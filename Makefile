# Everything a fresh machine needs is installed by these targets themselves.
SHELL := /bin/bash
GO ?= go
BIN := bin/velero-plugin-for-etcd
NODE_DIR := internal/osslocal/conformance/node
# The first test run on a fresh machine builds kube-apiserver and velero from
# the module proxy (cached outside the repo afterwards): allow for it.
TEST_TIMEOUT ?= 80m

.PHONY: all build test bench demo deps tools lint e2e container clean

all: build

build:
	CGO_ENABLED=0 $(GO) build -o $(BIN) .

# deps installs the tools the tests drive: the Node.js OSS client used by the
# conformance suite (from the committed lockfile).
deps:
	@command -v node >/dev/null && command -v npm >/dev/null || { apt-get update && apt-get install -y nodejs npm; }
	cd $(NODE_DIR) && npm ci --no-audit --no-fund --loglevel=error

# tools builds kube-apiserver, velero and an etcd server from the module proxy
# into ~/.cache/velero-plugin-for-etcd (only when their pinned versions change).
tools:
	hack/build-tools.sh all >/dev/null

# Every test: the main module (unit, OSS conformance with three clients, the
# plugin under Velero's host code), then the real end-to-end scenario.
test: deps tools
	$(GO) test -count=1 -timeout $(TEST_TIMEOUT) ./...
	cd test/e2e && $(GO) test -tags e2e -count=1 -timeout $(TEST_TIMEOUT) ./...

bench: deps tools
	$(GO) test -count=1 -run '^$$' -bench . -benchtime 1x -timeout 60m ./test/bench/

# The end-to-end scenario (test/e2e, its own Go module) with readable output:
# a real kube-apiserver and velero server, the plugin, oss-local and etcd.
demo: tools
	cd test/e2e && $(GO) run ./cmd/demo

# The same scenario as a Go test. A first run builds kube-apiserver and velero
# (hack/build-tools.sh, cached outside the repo).
e2e: tools
	cd test/e2e && $(GO) test -tags e2e -count=1 -timeout 60m ./...

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed: $$out"; exit 1; fi
	$(GO) vet ./...
	cd test/e2e && $(GO) vet -tags e2e ./...

clean:
	rm -rf bin

# The plugin image. Needs a Docker engine with buildx, which the development
# machines of this project do not have: this target is untested here.
IMAGE ?= velero-plugin-for-etcd:dev
PLATFORMS ?= linux/amd64,linux/arm64
container:
	docker buildx build --platform $(PLATFORMS) -t $(IMAGE) .
