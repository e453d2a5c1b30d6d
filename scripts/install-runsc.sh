#!/bin/bash
# install-runsc.sh builds gVisor's runsc from the Go module proxy and installs
# it as /usr/local/bin/runsc, for Kanga's "gvisor" runtime class. It is
# idempotent: when the installed runsc already reports the pinned version it
# does nothing (and prints nothing unless asked with -v).
#
# Why build instead of apt or a release tarball: Debian 12 has no runsc
# package and only the Go module proxy is reachable from Kanga hosts. gVisor
# publishes no semver tags on its Go branch, only pseudo-versions, so the pin
# below is one (`go list -m gvisor.dev/gvisor@latest` prints the newest).
#
# Why CGO_ENABLED=0: a cgo build links, but the sandbox fails at run time.
#
# The version is stamped into the binary with -ldflags -X, because a plain
# `go install` leaves it as VERSION_MISSING and `runsc --version` is how this
# script (and an operator) recognises an up-to-date install.
#
# A `go install` build carries no sidecar binaries (gvisor-bin/gvisor_sentry,
# gvisor-sentry-prewarmer, ...): runsc falls back to the copies embedded in
# itself and logs a deprecation warning on every sandbox start. This pin does
# that by default; newer gVisor versions may require the sidecars
# (--sidecar-usage-policy=STRICT by default), so re-check before moving it.
#
# Environment:
#   RUNSC_VERSION  module version to build (default: the pin below)
#   RUNSC_PREFIX   install directory (default: /usr/local/bin)
#   GO             go command (default: go)
#
# Must run as root unless RUNSC_PREFIX is writable.
set -euo pipefail

pinned="v0.0.0-20260905035102-160fafc42237"
version="${RUNSC_VERSION:-$pinned}"
prefix="${RUNSC_PREFIX:-/usr/local/bin}"
gocmd="${GO:-go}"
target="$prefix/runsc"

verbose=0
if [[ "${1:-}" == "-v" ]]; then
	verbose=1
fi

log() { echo "install-runsc: $*"; }
info() { if ((verbose)); then log "$@"; fi; }
die() {
	echo "install-runsc: error: $*" >&2
	exit 1
}

# installed_version prints the version the runsc at $target reports, or
# nothing. `runsc --version` prints "runsc version <v>" then "spec: <v>".
installed_version() {
	[[ -x "$target" ]] || return 0
	"$target" --version 2>/dev/null | awk '$1 == "runsc" && $2 == "version" { print $3; exit }'
}

if [[ "$(installed_version)" == "$version" ]]; then
	info "runsc $version already installed at $target"
	exit 0
fi

command -v "$gocmd" >/dev/null 2>&1 || die "go not found (set GO=/path/to/go)"
[[ -d "$prefix" && -w "$prefix" ]] || die "$prefix is not a writable directory (run as root?)"

# Build in a scratch directory: `go install pkg@version` ignores any enclosing
# module, but running it elsewhere guarantees no go.mod or go.work of the
# caller's (Kanga's own, say) is read or touched.
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

log "building runsc $version (takes about 2 minutes on 2 cores)"
start=$SECONDS
(
	cd "$tmp"
	# GOFLAGS=-mod=mod and GOWORK=off keep a caller's -mod=vendor or workspace
	# from applying to a module that has neither.
	env GOBIN="$tmp/bin" CGO_ENABLED=0 GOWORK=off GOFLAGS="-mod=mod" \
		"$gocmd" install \
		-ldflags="-X gvisor.dev/gvisor/runsc/version.version=$version" \
		"gvisor.dev/gvisor/runsc@$version"
) || die "go install gvisor.dev/gvisor/runsc@$version failed"

built="$tmp/bin/runsc"
got="$("$built" --version | awk '$1 == "runsc" && $2 == "version" { print $3; exit }')"
[[ "$got" == "$version" ]] || die "built runsc reports version ${got:-none}, want $version"

# Copy next to the target and rename over it, so a concurrent sandbox start
# never runs a half-written binary.
install -m 0755 "$built" "$target.new"
mv -f "$target.new" "$target"
log "installed runsc $version at $target in $((SECONDS - start))s"
