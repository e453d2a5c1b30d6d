#!/bin/sh
# Start burst under CPU pressure, admission off against on (issue 22): a
# throwaway `kanga up` with --max-inflight-creates 0 and --start-slots
# 1000 (no backpressure: every create starts at once, as before), then one
# with the defaults (the API admits creates up to the host's start slots,
# 2 x cores, and answers 429 with Retry-After past them, which the client
# retries; the agent runs at most that many starts at once). Each gets
# `kanga bench start --n $N --concurrency $C --runtime crun` while $HOGS
# busy loops (default: one per core) compete for the CPU beside it.
# Needs root; output goes to $OUT (default /tmp/kanga-overload). Used for
# bench/overload.md.
set -eu

cd "$(dirname "$0")/.."
DATA=${DATA:-/tmp/kovl}
OUT=${OUT:-/tmp/kanga-overload}
LISTEN=${LISTEN:-127.0.0.1:7494}
BRIDGE=${BRIDGE:-kangaovl}
SUBNET=${SUBNET:-10.241.212.0/22}
N=${N:-100}
C=${C:-8}
HOGS=${HOGS:-$(nproc)}
# A cgroup root of its own: an agent removes the empty cgroups it does not
# know under its root, and other platforms on the machine share /kanga.
CGROOT=${CGROOT:-/kanga-overload}
export KANGA_CONFIG=${KANGA_CONFIG:-/tmp/kovl.json}
K=${K:-bin/kanga}

[ -n "${NOBUILD:-}" ] || make build images >/dev/null
mkdir -p "$OUT"

. bench/lib.sh
HOGPIDS=""
stop_hogs() {
	for p in $HOGPIDS; do kill "$p" 2>/dev/null || true; done
	HOGPIDS=""
}
cgroups_down() {
	for h in /sys/fs/cgroup/*/"$CGROOT"; do
		[ -d "$h" ] && find "$h" -depth -type d -exec rmdir {} + 2>/dev/null || true
	done
}
cleanup() {
	stop_hogs
	platform_down
	cgroups_down
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

run() {
	name=$1
	shift
	# No default type: 100 instances of 256 MiB each would not fit the
	# host's memory, and the burst is about starts, not reservations.
	platform_up "$name" --default-type none --cgroup-root "$CGROOT" "$@"
	for _ in $(seq 1 "$HOGS"); do
		sh -c 'while :; do :; done' &
		HOGPIDS="$HOGPIDS $!"
	done
	{ date -u +%FT%TZ; cat /proc/loadavg; } >"$OUT/$name.meta"
	$K bench start --runtime crun --baseline=false --n "$N" --concurrency "$C" >"$OUT/$name.txt" 2>&1 || true
	{ date -u +%FT%TZ; cat /proc/loadavg; } >>"$OUT/$name.meta"
	stop_hogs
	echo "== $name"
	sed -n '3,5p' "$OUT/$name.txt"
	grep -E 'busy|failed' "$OUT/$name.txt" || true
	echo "lost-host re-creations: $(grep -c 'instances of lost hosts' "$OUT/$name-kanga-up.log" || true)," \
		"lease losses: $(grep -c 'lease lost\|lease of host\|host lease ended' "$OUT/$name-kanga-up.log" || true)," \
		"leadership ends: $(grep -c 'leadership ended' "$OUT/$name-kanga-up.log" || true)"
	platform_down
	cgroups_down
}

run admission-off --max-inflight-creates 0 --start-slots 1000
run admission-on
