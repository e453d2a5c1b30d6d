#!/bin/sh
# Burst throughput with warm containers: a throwaway `kanga up` with
# --warm-max $WARM, one crun start to teach the pool the key, then
# `kanga image prewarm` and a wait until $WARM warm containers are ready,
# then `kanga bench start --runtime crun --n $N --concurrency $C` (with the
# containerd-client and raw-crun baselines in the same invocation). With
# N <= WARM every start is a warm hit (a burst the pool absorbs); with
# N > WARM the rest pay the full path while the filler refills (closer to
# a sustained rate). Needs root; output goes to $OUT (default
# /tmp/kanga-burst). Used for the "Warm burst" section of
# bench/start-latency.md.
set -eu

cd "$(dirname "$0")/.."
DATA=${DATA:-/tmp/kwbu}
OUT=${OUT:-/tmp/kanga-burst}
LISTEN=${LISTEN:-127.0.0.1:7493}
BRIDGE=${BRIDGE:-kangawbu}
SUBNET=${SUBNET:-10.241.204.0/22}  # room for N=300 plus the pools
WARM=${WARM:-100}
N=${N:-100}
C=${C:-8}
RUNS=${RUNS:-3}
export KANGA_CONFIG=${KANGA_CONFIG:-/tmp/kwbu.json}
K=${K:-bin/kanga}

[ -n "${NOBUILD:-}" ] || make build images >/dev/null
mkdir -p "$OUT"
SOCK="$DATA/containerd/containerd.sock"
IMG=kanga.test/busybox:latest

. bench/lib.sh
trap platform_down EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

ready() {
	# Ready warm containers of the key, from the agent's status file.
	python3 -c 'import json,sys; print(sum(k["ready"] for k in json.load(open(sys.argv[1]))["keys"]))' \
		"$DATA/agent/warm.json" 2>/dev/null || echo 0
}

# UPFLAGS: extra flags of kanga up (e.g. --failure-safeguards=false).
# shellcheck disable=SC2086
platform_up burst --warm-max "$WARM" --warm-total "$WARM" ${UPFLAGS:-}
$K run -d --name teach --runtime crun "$IMG" sleep 1 >/dev/null
$K rm -f teach >/dev/null
for r in $(seq 1 "$RUNS"); do
	# A prewarm announces the burst to the warm pool, for one fill window;
	# on a slow or busy machine the pool may not have learnt the key from
	# `teach` yet, or the window may end before it is full: announce again
	# every 10 s until it is.
	start=$(date +%s)
	last=0
	until [ "$(ready)" -ge "$WARM" ]; do
		now=$(date +%s)
		[ $((now - start)) -lt 600 ] || { echo "only $(ready) of $WARM warm containers ready after 600 s" >&2; exit 1; }
		if [ $((now - last)) -ge 10 ]; then
			$K image prewarm "$IMG" >/dev/null
			last=$now
		fi
		sleep 1
	done
	f="$OUT/run$r"
	{ date -u +%FT%TZ; cat /proc/loadavg; } >"$f.meta"
	$K bench start --runtime crun --n "$N" --concurrency "$C" --containerd "$SOCK" >"$f.txt"
	{ date -u +%FT%TZ; cat /proc/loadavg; cat "$DATA/agent/warm.json"; } >>"$f.meta"
	echo "== run $r (load $(sed -n 2p "$f.meta" | cut -d' ' -f1-3))"
	sed -n '3,6p' "$f.txt"
	tail -1 "$f.meta"
done
