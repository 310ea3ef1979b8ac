#!/usr/bin/env bash
# Builds the Kubernetes control plane trustpool's tests run against —
# kube-apiserver, kube-scheduler, kube-controller-manager (this module, from
# k8s.io/kubernetes' module sources) and etcd (./etcd, its own module) — into
# $TRUSTPOOL_KUBE_BIN, by default <repo>/bin/kube, where kubetest finds them.
#
# The build takes minutes, so it is skipped when the binaries there were built
# from the same inputs: the stamp hashes both modules' go.mod/go.sum and mains,
# this script and the Go toolchain.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="${TRUSTPOOL_KUBE_BIN:-$root/bin/kube}"
go="${GO:-go}"
bins=(kube-apiserver kube-scheduler kube-controller-manager etcd)

mkdir -p "$out"
# One build at a time: two `make kube` at once would both spend the minutes.
exec 9>"$out/.lock"
flock 9

stamp="$(
	cd "$here"
	{
		"$go" env GOVERSION GOOS GOARCH
		cat build.sh go.mod go.sum etcd/go.mod etcd/go.sum etcd/main.go cmd/*/main.go
	} | sha256sum | cut -d' ' -f1
)"
fresh=1
for b in "${bins[@]}"; do [ -x "$out/$b" ] || fresh=0; done
if [ "$fresh" = 1 ] && [ "$(cat "$out/.stamp" 2>/dev/null)" = "$stamp" ]; then
	echo "kube: binaries in $out are up to date"
	exit 0
fi
rm -f "$out/.stamp"

# Static binaries as upstream releases them (CGO_ENABLED=0); -s -w drops the
# symbol tables, which shortens the links of ~150 MB binaries. The version is
# the one upstream's build stamps, so /version and the components' version
# skew checks see a release rather than v0.0.0-master.
kver="$(cd "$here" && "$go" list -m -f '{{.Version}}' k8s.io/kubernetes)"
export CGO_ENABLED=0 GOFLAGS=-buildvcs=false
start=$SECONDS
(
	cd "$here"
	"$go" build -trimpath -o "$out/" \
		-ldflags "-s -w -X k8s.io/component-base/version.gitVersion=$kver -X k8s.io/component-base/version.gitTreeState=clean" \
		./cmd/kube-apiserver ./cmd/kube-scheduler ./cmd/kube-controller-manager
)
(cd "$here/etcd" && "$go" build -trimpath -ldflags "-s -w" -o "$out/etcd" .)
echo "$stamp" >"$out/.stamp"
echo "kube: built ${bins[*]} ($kver) into $out in $((SECONDS - start)) s"
