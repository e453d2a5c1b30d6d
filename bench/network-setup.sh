#!/bin/sh
# Starts per minute through `kanga bench start`, two builds alternately in
# one sitting (see bench/network-setup.md): for each round and each build a
# throwaway `kanga up` (default warm pool) starts N crun instances with C in
# flight, then `kanga down --purge`, then a leak check (namespaces, NAT
# rules of the subnet, the masquerade chain).
# Needs root. BASE and NEW are the two kanga binaries (default: NEW is
# bin/kanga, BASE must be given). Output goes to $OUT.
set -eu

cd "$(dirname "$0")/.."
BASE=${BASE:?BASE=path to the baseline kanga binary}
NEW=${NEW:-bin/kanga}
ROUNDS=${ROUNDS:-2}
N=${N:-100}
C=${C:-8}
DATA=${DATA:-/tmp/knetsetup}
OUT=${OUT:-/tmp/kanga-network-setup}
LISTEN=${LISTEN:-127.0.0.1:7461}
BRIDGE=${BRIDGE:-kangans1}
SUBNET=${SUBNET:-10.244.1.0/24}
export KANGA_CONFIG=${KANGA_CONFIG:-/tmp/knetsetup.json}
mkdir -p "$OUT"
SOCK="$DATA/containerd/containerd.sock"

. bench/lib.sh

# stop: platform_down, after counting what the stop left behind (the
# leak check this benchmark reports).
stop() {
	$K down --data-dir "$DATA" --purge >/dev/null 2>&1 || true
	grep " $DATA/" /proc/mounts | awk '{ print $2 }' | sort -r | while read -r m; do
		umount "$m" || true
	done
	echo "left: $(find "$(platform_netns_dir)" -mindepth 1 2>/dev/null | wc -l) namespaces," \
		"$(iptables-save -t nat | grep -c -- "${SUBNET%.0/*}\." || true) NAT rules of $SUBNET," \
		"$(iptables-save -t nat | grep -c -- "KANGA-MASQ-$BRIDGE" || true) masquerade lines"
	platform_down
}

# session NAME: one kanga up of binary $K, one bench start.
session() {
	name=$1
	platform_up "$name"
	sleep 3 # the pool fills to --pool-min
	f="$OUT/$name"
	{ date -u +%FT%TZ; cat /proc/loadavg; } >"$f.meta"
	$K bench start --runtime crun --n "$N" --concurrency "$C" --baseline=false >"$f.txt" 2>&1 || echo "exit $?" >>"$f.meta"
	{ date -u +%FT%TZ; cat /proc/loadavg; } >>"$f.meta"
	stop >>"$f.meta"
	echo "== $name (load $(sed -n 2p "$f.meta" | cut -d' ' -f1-3) -> $(sed -n 4p "$f.meta" | cut -d' ' -f1-3))"
	cat "$f.txt"
	tail -1 "$f.meta"
}

K=$NEW
trap stop EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
r=1
while [ $r -le "$ROUNDS" ]; do
	K=$BASE
	session "r$r-base"
	K=$NEW
	session "r$r-new"
	r=$((r + 1))
done
