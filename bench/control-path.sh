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

stop() {
	[ -z "$K" ] || $K down --data-dir "$DATA" --purge >/dev/null 2>&1 || true
	grep " $DATA/" /proc/mounts | awk '{ print $2 }' | sort -r | while read -r m; do
		umount "$m" || true
	done
	ip link del "$BRIDGE" 2>/dev/null || true
	rmdir "/run/kanga/netns/$(printf %s "$DATA/network" | sha256sum | cut -c1-12)" 2>/dev/null || true
	rm -rf "$DATA" "$KANGA_CONFIG"
}
trap stop EXIT INT TERM

s=0
for dir in "$@"; do
	s=$((s + 1))
	K=$dir/kanga
	name="s$s-$(basename "$(cd "$dir" && pwd)")"
	rm -rf "$DATA"
	$K up --data-dir "$DATA" --listen "$LISTEN" --write-config "$KANGA_CONFIG" \
		--bridge "$BRIDGE" --subnet "$SUBNET" --warm-max 10 --warm-total 12 >"$OUT/$name-kanga-up.log" 2>&1 &
	i=0
	until $K version >/dev/null 2>&1; do
		i=$((i + 1))
		[ $i -lt 100 ] || { echo "kanga up did not start; see $OUT/$name-kanga-up.log" >&2; exit 1; }
		sleep 0.2
	done
	$K image import testdata/images/busybox.tar >/dev/null
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
	stop
done
