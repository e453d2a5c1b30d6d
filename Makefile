# Kanga build, test and demo entry points. `make test` and `make demo` need
# root on a Debian 12 host (see scripts/install-deps.sh).

GO        ?= go
BIN       := bin/kanga
IMAGES    := testdata/images
# -p 1: root tests share host-wide state (iptables nat chains, ip_forward,
# /run/containerd), so packages run one at a time.
GOFLAGS_TEST ?= -count=1 -p 1 -timeout 60m

.PHONY: all build deps images k8s vet test conformance demo clean

all: build

build:
	$(GO) build -o $(BIN) ./cmd/kanga
	CGO_ENABLED=0 $(GO) build -ldflags "-s -w" -o bin/kanga-init ./cmd/kanga-init

deps:
	./scripts/install-deps.sh

# Deterministic: rerunning rewrites byte-identical files.
images:
	$(GO) run ./hack/mkimage -o $(IMAGES)

# kube-apiserver, kube-controller-manager, kube-scheduler and etcd for the
# virtual-node tests, from the Go module
# proxy; cached, so only the first run on a machine pays the ~15 minutes.
k8s:
	./scripts/build-k8s.sh

vet:
	$(GO) vet ./...

# Integration tests start containerd, runtimes, CNI and a registry, so they
# need root; they skip (and the run proves little) otherwise.
test: deps images k8s vet
	@if [ "$$(id -u)" -ne 0 ]; then echo "make test: run as root for the integration tests" >&2; exit 1; fi
	$(GO) test $(GOFLAGS_TEST) ./...

# Kubernetes' node conformance tests against the virtual node: builds the
# e2e binary and the suite's images (cached under /var/cache/kanga/conformance),
# runs them (an hour or more on two cores) and rewrites docs/conformance.md.
# Not part of `make test`: too long.
conformance: deps images k8s
	@if [ "$$(id -u)" -ne 0 ]; then echo "make conformance: run as root" >&2; exit 1; fi
	./scripts/conformance.sh

demo: deps build images
	./scripts/demo.sh

clean:
	rm -rf bin $(IMAGES)
