#!/bin/sh
# Reproduces the "Fast start" section of bench/start-latency.md: for each
# session (warm pool on, warm pool off) it starts a throwaway `kanga up`,
# runs `kanga bench start` for crun (and runc) sequentially and with 2, 4
# and 8 in flight, and for the pool session once more after
# `kanga image prewarm` (which fills the pool to its maximum), then checks
# that nothing was left behind. Every result file gets the load average
# before and after; the agent's per-start profile lines ("instance
# started") are in each session's kanga-up.log.
# Needs root. Output goes to $OUT (default /tmp/kanga-fast-start).
# NOBUILD=1 uses the bin/kanga that is there instead of running make;
# SESSIONS=pool (or nopool) runs one session only.
set -eu

cd "$(dirname "$0")/.."
DATA=${DATA:-/tmp/kfast}
OUT=${OUT:-/tmp/kanga-fast-start}
LISTEN=${LISTEN:-127.0.0.1:7451}
BRIDGE=${BRIDGE:-kangafast0}
SUBNET=${SUBNET:-10.219.0.0/24}
export KANGA_CONFIG=${KANGA_CONFIG:-/tmp/kfast.json}
# BIN=path runs another build (e.g. main's, for an A/B in one sitting).
K=${BIN:-bin/kanga}

[ -n "${NOBUILD:-}" ] || make build images >/dev/null
mkdir -p "$OUT"
SOCK="$DATA/containerd/containerd.sock"
IMG=kanga.test/busybox:latest

. bench/lib.sh
trap platform_down EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# bench NAME ARGS...: one `kanga bench start`, with the load average and a
# leak check.
bench() {
	f="$OUT/$1"
	shift
	{ date -u +%FT%TZ; cat /proc/loadavg; } >"$f.meta"
	rc=0
	$K bench start "$@" --containerd "$SOCK" >"$f.txt" || rc=$?
	{ echo "exit $rc"; date -u +%FT%TZ; cat /proc/loadavg; } >>"$f.meta"
	left=$(ctr -a "$SOCK" -n kanga containers ls -q | wc -l)
	echo "left behind: $left containers" >>"$f.meta"
	echo "== $f (load $(sed -n 2p "$f.meta" | cut -d' ' -f1-3))"
	sed -n '3,6p' "$f.txt"
	[ "$left" -eq 0 ] || echo "LEAK after $f" | tee -a "$OUT/leaks.txt" >&2
}

# session NAME UPFLAGS...
session() {
	name=$1
	shift
	platform_up "$name" "$@"
	sleep 3 # the pool fills to --pool-min
	bench "$name-crun-c1" --runtime crun --n 20
	bench "$name-runc-c1" --runtime runc --n 20
	bench "$name-crun-c2" --runtime crun --n 20 --concurrency 2 --baseline=false
	bench "$name-crun-c4" --runtime crun --n 40 --concurrency 4
	bench "$name-crun-c8" --runtime crun --n 80 --concurrency 8 --baseline=false
	if [ "$name" = pool ] && $K image --help | grep -q prewarm; then
		for c in 4 8; do
			$K image prewarm "$IMG" >/dev/null
			sleep 5 # the pool fills to --pool-max
			bench "$name-prewarmed-crun-c$c" --runtime crun --n $((c * 10)) --concurrency $c --baseline=false
		done
		cp "$DATA/agent/pool.json" "$OUT/pool.json"
	fi
	platform_down
}

for s in ${SESSIONS:-pool nopool}; do
	case $s in
	pool) session pool ;;
	nopool) session nopool --pool-max 0 ;;
	esac
done
# The agent keeps its namespaces under /run/kanga/netns/<hash of its network dir>.
ns="/run/kanga/netns/$(printf %s "$DATA/network" | sha256sum | cut -c1-12)"
echo "namespaces left in $ns: $(find "$ns" -mindepth 1 2>/dev/null | wc -l)"
echo "NAT rules left for $SUBNET: $(iptables-save -t nat | grep -c -- "-s ${SUBNET%.0/*}\." || true)"
