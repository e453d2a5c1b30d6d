#!/bin/bash
# Build kube-apiserver, kube-controller-manager, kube-scheduler and etcd from
# the Go module proxy for the virtual-node integration tests. The synthetic
# modules under hack/k8s pin the versions; the binaries land in
# $KANGA_K8S_CACHE/<kubernetes version>/ and each build is skipped when its
# binary is already there. On two cores a cold build of apiserver and etcd
# takes ~10 minutes; controller-manager then adds ~5 and scheduler seconds.
# Prints the directory holding the binaries.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

K8S_VERSION=v1.37.2
ETCD_VERSION=v3.6.16
CACHE=${KANGA_K8S_CACHE:-/var/cache/kanga/k8s}
OUT="$CACHE/$K8S_VERSION"

mkdir -p "$OUT"
minor=$(echo "$K8S_VERSION" | cut -d. -f2)
ldflags="-s -w"
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
	ldflags+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor"
done
# The three control-plane binaries share one synthetic module (one pinned
# dependency set); each is built only when missing.
for bin in kube-apiserver kube-controller-manager kube-scheduler; do
	[ -x "$OUT/$bin" ] && continue
	pkg=./cmd/$bin
	[ "$bin" = kube-apiserver ] && pkg=.
	echo "build-k8s: building $bin $K8S_VERSION" >&2
	start=$SECONDS
	(cd hack/k8s/apiserver && CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$OUT/$bin.tmp" "$pkg")
	mv "$OUT/$bin.tmp" "$OUT/$bin"
	echo "build-k8s: $bin built in $((SECONDS - start)) s" >&2
done
if [ ! -x "$OUT/etcd" ]; then
	echo "build-k8s: building etcd $ETCD_VERSION" >&2
	(cd hack/k8s/etcd && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$OUT/etcd.tmp" .)
	mv "$OUT/etcd.tmp" "$OUT/etcd"
fi
echo "$OUT"
