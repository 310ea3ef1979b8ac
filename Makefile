# `make check` is what CI runs (.ci/run installs the system packages first).
GO ?= go

.PHONY: deps check fmt vet test demo-smoke fuzz build bench deb kube

# System packages the tests use: cgo for the TPM simulator, swtpm (a real
# software TPM) and tpm2-tools, PostgreSQL, OpenStack Placement, and Chromium
# (the dashboard's browser tests), and systemd (systemd-analyze verify of the
# package's units).
DEBS = gcc make libssl-dev swtpm swtpm-tools tpm2-tools postgresql placement-api python3-placement chromium systemd

deps:
	@if [ "$$(id -u)" != 0 ]; then echo "make deps installs Debian packages: run it as root"; exit 1; fi
	DEBIAN_FRONTEND=noninteractive apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(DEBS) >/dev/null

check: fmt vet test demo-smoke fuzz

build:
	$(GO) build -o bin/trustpool ./cmd/trustpool

fmt:
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...
	$(GO) tool staticcheck ./...
	@$(GO) mod tidy -diff >/dev/null || { echo "go.mod/go.sum are not tidy: run go mod tidy"; exit 1; }

# The Kubernetes control plane the kube tests run against (kube-apiserver,
# kube-scheduler, kube-controller-manager, etcd), built from module sources
# into bin/kube by test/kube/build.sh; a no-op when already built from the
# same sources.
kube:
	GO=$(GO) test/kube/build.sh

# Test artefacts (the dashboard's screenshots) land in bin/test-artifacts.
test: kube
	mkdir -p bin/test-artifacts
	$(GO) test -race -count=1 -timeout 20m -artifacts -outputdir $(CURDIR)/bin/test-artifacts ./...

# The demo's contract, checked: 5 nodes, 1 tampered, 1 without a measured launch.
# The demo's contracts, checked on real runs (swtpm: TXT launch emulated).
demo-smoke: build
	./bin/trustpool demo --nodes 3 --tampered 1 --once --json > bin/demo3.json
	$(GO) run ./scripts/checkdemo -trusted 2 -untrusted 1 -reason node3=18:vmm < bin/demo3.json
	./bin/trustpool demo --nodes 5 --tampered 1 --no-launch 1 --once --json > bin/demo5.json
	$(GO) run ./scripts/checkdemo -trusted 3 -untrusted 2 -reason node5=18:vmm -reason node4=17 < bin/demo5.json
	./bin/trustpool demo --tpm simulator --nodes 3 --tampered 1 --once --json > bin/demo-sim.json
	$(GO) run ./scripts/checkdemo -trusted 2 -untrusted 1 -reason node3=4:vmm < bin/demo-sim.json
	./bin/trustpool demo --mode push --nodes 3 --tampered 1 --once --json > bin/demo-push.json
	$(GO) run ./scripts/checkdemo -trusted 2 -untrusted 1 -reason node3=18:vmm < bin/demo-push.json

# Every native fuzz target, FUZZTIME each; a crasher lands in testdata/fuzz.
fuzz:
	FUZZTIME=$${FUZZTIME:-10s} scripts/fuzz.sh

# The Debian package (packaging/nfpm.yaml): a static binary (no cgo, so no
# in-process TPM simulator), the systemd units and the example configs.
# packaging's Go test builds it, installs it and starts the server as its
# unit would.
VERSION ?= 0.0~git$(shell git log -1 --format=%cd.%h --date=format:%Y%m%d%H%M%S 2>/dev/null || echo 0)
ARCH ?= $(shell $(GO) env GOARCH)
deb:
	CGO_ENABLED=0 $(GO) build -trimpath -o bin/deb/trustpool ./cmd/trustpool
	VERSION='$(VERSION)' ARCH='$(ARCH)' $(GO) tool nfpm package --config packaging/nfpm.yaml --packager deb --target bin/trustpool.deb

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./internal/...
