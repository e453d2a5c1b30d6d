#!/bin/sh
# Reproduces bench/network-isolation.md: start latency and starts per minute
# through the API with tenant network isolation on and off, in one run.
# Sessions alternate (on, off, then off, on, ...) so that drift in the
# machine's load hits both sides alike; each session is a throwaway
# `kanga up` (with the warm pool of network sandboxes, and again without
# it) running `kanga bench start --baseline=false` for crun sequentially
# (n=20) and with 4 in flight (n=40). Every result file gets the load
# average before and after; summary.txt has the medians and the on/off
# ratios.
# Needs root. Output goes to $OUT (default /tmp/kanga-netiso-bench).
# NOBUILD=1 uses the bin/kanga that is there; ROUNDS=N (default 4) sets the
# sessions per side; POOLS="pool nopool" picks the pool settings.
set -eu

cd "$(dirname "$0")/.."
DATA=${DATA:-/tmp/knetiso}
OUT=${OUT:-/tmp/kanga-netiso-bench}
LISTEN=${LISTEN:-127.0.0.1:7453}
BRIDGE=${BRIDGE:-kangaiso0}
SUBNET=${SUBNET:-10.238.0.0/24}
export KANGA_CONFIG=${KANGA_CONFIG:-/tmp/knetiso.json}
K=${BIN:-bin/kanga}
ROUNDS=${ROUNDS:-4}

[ -n "${NOBUILD:-}" ] || make build images >/dev/null
rm -rf "$OUT"
mkdir -p "$OUT"

. bench/lib.sh
trap platform_down EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# bench NAME ARGS...: one `kanga bench start`, with the load average.
bench() {
	name=$1
	f="$OUT/$name"
	shift
	{ date -u +%FT%TZ; cat /proc/loadavg; } >"$f.meta"
	$K bench start --runtime crun --baseline=false "$@" >"$f.txt"
	{ date -u +%FT%TZ; cat /proc/loadavg; } >>"$f.meta"
	# The kanga API row: P50 is field 5 (with "ms"), PER MIN field 9.
	awk -v n="$name" '/^kanga API +[0-9]/ { sub(/ms$/, "", $5); print n, $5, $9 }' "$f.txt" >>"$OUT/results.txt"
	echo "== $name: $(tail -n 1 "$OUT/results.txt" | cut -d' ' -f2-) (load $(sed -n 2p "$f.meta" | cut -d' ' -f1-3))"
}

# session POOL ISO ROUND
session() {
	pool=$1 iso=$2 round=$3
	flags="--network-isolation=$iso"
	[ "$pool" = pool ] || flags="$flags --pool-max 0"
	name="$pool-iso$iso-r$round"
	# shellcheck disable=SC2086
	platform_up "$name" $flags
	sleep 3 # the pool fills to --pool-min
	bench "$pool-iso$iso-seq-r$round" --n 20
	bench "$pool-iso$iso-c4-r$round" --n 40 --concurrency 4
	platform_down
}

for pool in ${POOLS:-pool nopool}; do
	r=1
	while [ "$r" -le "$ROUNDS" ]; do
		if [ $((r % 2)) -eq 1 ]; then order="true false"; else order="false true"; fi
		for iso in $order; do
			session "$pool" "$iso" "$r"
		done
		r=$((r + 1))
	done
done

# Medians per pool setting, isolation and kind, and the on/off ratio.
median() { sort -n | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
{
	echo "medians over $ROUNDS sessions per side (crun, kanga API path)"
	for pool in ${POOLS:-pool nopool}; do
		for kind in seq c4; do
			on50=$(grep "^$pool-isotrue-$kind-" "$OUT/results.txt" | awk '{ print $2 }' | median)
			off50=$(grep "^$pool-isofalse-$kind-" "$OUT/results.txt" | awk '{ print $2 }' | median)
			onpm=$(grep "^$pool-isotrue-$kind-" "$OUT/results.txt" | awk '{ print $3 }' | median)
			offpm=$(grep "^$pool-isofalse-$kind-" "$OUT/results.txt" | awk '{ print $3 }' | median)
			echo "$pool $kind: p50 on ${on50} ms, off ${off50} ms, on/off $(echo "$on50 $off50" | awk '{ printf "%.2f", $1 / $2 }');" \
				"starts/min on ${onpm}, off ${offpm}, on/off $(echo "$onpm $offpm" | awk '{ printf "%.2f", $1 / $2 }')"
		done
	done
} | tee "$OUT/summary.txt"
