#!/bin/bash
# Build kube-apiserver and etcd from the Go module proxy for the virtual-node
# integration tests. The synthetic modules under hack/k8s pin the versions;
# the binaries land in $KANGA_K8S_CACHE/<kubernetes version>/ and the build is
# skipped when both are already there (a cold build takes ~10 minutes on two
# cores). Prints the directory holding the binaries.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

K8S_VERSION=v1.37.2
ETCD_VERSION=v3.6.16
CACHE=${KANGA_K8S_CACHE:-/var/cache/kanga/k8s}
OUT="$CACHE/$K8S_VERSION"

mkdir -p "$OUT"
if [ ! -x "$OUT/kube-apiserver" ]; then
	echo "build-k8s: building kube-apiserver $K8S_VERSION" >&2
	minor=$(echo "$K8S_VERSION" | cut -d. -f2)
	ldflags="-s -w"
	for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
		ldflags+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor"
	done
	(cd hack/k8s/apiserver && CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$OUT/kube-apiserver.tmp" .)
	mv "$OUT/kube-apiserver.tmp" "$OUT/kube-apiserver"
fi
if [ ! -x "$OUT/etcd" ]; then
	echo "build-k8s: building etcd $ETCD_VERSION" >&2
	(cd hack/k8s/etcd && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$OUT/etcd.tmp" .)
	mv "$OUT/etcd.tmp" "$OUT/etcd"
fi
echo "$OUT"
