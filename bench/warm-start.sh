#!/bin/sh
# Reproduces the "Warm containers" section of bench/start-latency.md: in
# one sitting, a throwaway `kanga up` with warm containers on (--warm-max
# $WARM) and one with them off, each running `kanga bench start` for crun
# sequentially (the warm pool learns the key from the first start, then
# refills one at a time), then, with warm containers on, c=8 after
# `kanga image prewarm` (which fills the key to --warm-max). Each result
# file gets the load average before and after and the warm pool's
# hits/misses. Needs root; output goes to $OUT (default /tmp/kanga-warm).
set -eu

cd "$(dirname "$0")/.."
DATA=${DATA:-/tmp/kwmb}
OUT=${OUT:-/tmp/kanga-warm}
LISTEN=${LISTEN:-127.0.0.1:7491}
BRIDGE=${BRIDGE:-kangawmb}
SUBNET=${SUBNET:-10.241.200.0/24}
WARM=${WARM:-10}
N=${N:-30}
export KANGA_CONFIG=${KANGA_CONFIG:-/tmp/kwmb.json}
K=${K:-bin/kanga}

[ -n "${NOBUILD:-}" ] || make build images >/dev/null
mkdir -p "$OUT"
SOCK="$DATA/containerd/containerd.sock"
IMG=kanga.test/busybox:latest

. bench/lib.sh
trap platform_down EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

bench() {
	f="$OUT/$1"
	shift
	{ date -u +%FT%TZ; cat /proc/loadavg; } >"$f.meta"
	rc=0
	$K bench start "$@" --containerd "$SOCK" >"$f.txt" || rc=$?
	{ echo "exit $rc"; date -u +%FT%TZ; cat /proc/loadavg; cat "$DATA/agent/warm.json" 2>/dev/null || true; } >>"$f.meta"
	echo "== $f (load $(sed -n 2p "$f.meta" | cut -d' ' -f1-3))"
	sed -n '3,6p' "$f.txt"
	tail -1 "$f.meta"
}

session() {
	name=$1
	shift
	platform_up "$name" "$@"
	sleep 3
	bench "$name-crun-c1" --runtime crun --n "$N"
	if [ "$name" = warm ]; then
		$K image prewarm "$IMG" >/dev/null
		sleep 5
		bench "$name-prewarmed-crun-c1" --runtime crun --n "$WARM"
		$K image prewarm "$IMG" >/dev/null
		sleep 5
		bench "$name-prewarmed-crun-c8" --runtime crun --n 80 --concurrency 8 --baseline=false
	else
		bench "$name-crun-c8" --runtime crun --n 80 --concurrency 8 --baseline=false
	fi
	platform_down
}

for s in ${SESSIONS:-warm nowarm}; do
	case $s in
	warm) session warm --warm-max "$WARM" --warm-total "$WARM" ;;
	nowarm) session nowarm --warm-max 0 ;;
	esac
done
