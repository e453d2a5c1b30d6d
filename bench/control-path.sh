#!/bin/sh
# Reproduces the warm-container before/after of bench/control-path.md: for
# each build directory given (each holding kanga and kanga-init), a
# throwaway `kanga up --warm-max 10`, then three times: prewarm the image,
# wait, `kanga bench start --runtime crun --n 10` (with the containerd and
# raw crun baselines). Pass the directories in the order to alternate,
# e.g. /tmp/main-bin ./bin /tmp/main-bin ./bin ./bin /tmp/main-bin.
# Each result file starts with the time and load average and ends with
# the agent's warm.json (hits and misses). Needs root.
# Output goes to $OUT (default /tmp/kanga-control-path).
set -eu

cd "$(dirname "$0")/.."
DATA=${DATA:-/tmp/kcpath}
OUT=${OUT:-/tmp/kanga-control-path}
LISTEN=${LISTEN:-127.0.0.1:7493}
BRIDGE=${BRIDGE:-kangacp0}
SUBNET=${SUBNET:-10.242.2.0/24}
export KANGA_CONFIG=${KANGA_CONFIG:-/tmp/kcpath.json}
IMG=kanga.test/busybox:latest
SOCK="$DATA/containerd/containerd.sock"
mkdir -p "$OUT"
K=

. bench/lib.sh
trap platform_down EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

s=0
for dir in "$@"; do
	s=$((s + 1))
	K=$dir/kanga
	name="s$s-$(basename "$(cd "$dir" && pwd)")"
	platform_up "$name" --warm-max 10 --warm-total 12
	sleep 3
	for r in 1 2 3; do
		$K image prewarm "$IMG" >/dev/null
		sleep 6 # the warm pool fills
		f="$OUT/$name-w$r.txt"
		{ date -u +%T; cat /proc/loadavg; } >"$f"
		$K bench start --runtime crun --n 10 --containerd "$SOCK" >>"$f"
		cat "$DATA/agent/warm.json" >>"$f" 2>/dev/null || true
		echo "== $f: $(grep -m1 '^kanga API ' "$f")"
	done
	platform_down
done
