#!/bin/bash
# Run Kubernetes' node conformance tests (v1.37.2, upstream's e2e specs,
# unmodified) against Kanga's virtual node, and write the table of results
# to docs/conformance.md. Needs root (it runs `kanga up`), like `make test`.
#
# 1. Builds, from the Go module proxy through the synthetic module
#    hack/k8s/e2e, into $KANGA_CONFORMANCE_CACHE/<version>/ (each skipped
#    when already there): e2e.test (`go test -c` of the node's suites), the
#    ginkgo runner, agnhost and nnp (the programs of the suite's images),
#    and copies the files those images carry. The control plane comes from
#    scripts/build-k8s.sh.
# 2. Runs TestConformance (test/integration/conformance_test.go): a real
#    kube-apiserver, controller-manager and scheduler, `kanga up`, the
#    virtual node as the only node, the images in a local registry; the
#    suite runs with ginkgo's focus, reports in $KANGA_CONFORMANCE_REPORT.
# 3. Renders the report as docs/conformance.md (hack/conformance-report).
#
# Environment: KANGA_CONFORMANCE_FOCUS, _SKIP, _PROCS, _TIMEOUT (see the
# test), KANGA_CONFORMANCE_REPORT (default
# /var/cache/kanga/conformance/reports/<UTC time>), KANGA_CONFORMANCE_DOC
# (default docs/conformance.md; "-" to skip rendering).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

K8S_VERSION=v1.37.2
CACHE=${KANGA_CONFORMANCE_CACHE:-/var/cache/kanga/conformance}
OUT="$CACHE/$K8S_VERSION"
mkdir -p "$OUT"

./scripts/build-k8s.sh >/dev/null

minor=$(echo "$K8S_VERSION" | cut -d. -f2)
ldflags="-s -w"
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
	ldflags+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor"
done
build() { # name, command...
	local name=$1
	shift
	[ -x "$OUT/$name" ] && return 0
	echo "conformance: building $name" >&2
	local start=$SECONDS
	(cd hack/k8s/e2e && "$@" -o "$OUT/$name.tmp")
	mv "$OUT/$name.tmp" "$OUT/$name"
	echo "conformance: $name built in $((SECONDS - start)) s" >&2
}
build e2e.test env CGO_ENABLED=0 go test -c -trimpath -ldflags "$ldflags" .
build ginkgo env CGO_ENABLED=0 go build -trimpath github.com/onsi/ginkgo/v2/ginkgo
build agnhost env CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" k8s.io/kubernetes/test/images/agnhost
build nnp env CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" k8s.io/kubernetes/test/images/nonewprivs

src=$(cd hack/k8s/e2e && go list -m -f '{{.Dir}}' k8s.io/kubernetes)/test/images
cp "$src/agnhost/porter/localhost.crt" "$src/agnhost/porter/localhost.key" "$OUT/"
for img in kitten nautilus; do
	cp "$src/$img/html/$img.jpg" "$OUT/$img.jpg"
	cp "$src/$img/html/data.json" "$OUT/$img-data.json"
done

REPORT=${KANGA_CONFORMANCE_REPORT:-$CACHE/reports/$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$REPORT"
echo "conformance: running; reports in $REPORT" >&2
start=$SECONDS
status=0
KANGA_CONFORMANCE_DIR=$OUT KANGA_CONFORMANCE_REPORT=$REPORT \
	go test -count=1 -timeout 5h -v -run '^TestConformance$' ./test/integration 2>&1 | tee "$REPORT/go-test.log" || status=$?
echo "conformance: run took $((SECONDS - start)) s" >&2

DOC=${KANGA_CONFORMANCE_DOC:-docs/conformance.md}
if [ "$DOC" != - ] && [ -s "$REPORT/report.json" ]; then
	go run ./hack/conformance-report -report "$REPORT" \
		-command "make conformance" -focus "${KANGA_CONFORMANCE_FOCUS:-\\[NodeConformance\\]}" \
		-skip "${KANGA_CONFORMANCE_SKIP:-\\[Flaky\\]|\\[Disruptive\\]|\\[Slow\\]}" >"$DOC"
	echo "conformance: wrote $DOC" >&2
fi
exit $status
