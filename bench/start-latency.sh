#!/bin/sh
# Reproduces bench/start-latency.md: starts a throwaway `kanga up`, runs
# `kanga bench start` for each runtime class that has a host (n=20
# sequential, n=40 with 4 in flight) and stops the platform again.
# Needs root. Output goes to $OUT (default /tmp/kanga-bench-results).
set -eu

cd "$(dirname "$0")/.."
DATA=${DATA:-/tmp/kb}
OUT=${OUT:-/tmp/kanga-bench-results}
LISTEN=${LISTEN:-127.0.0.1:7491}
BRIDGE=${BRIDGE:-kangabench0}
SUBNET=${SUBNET:-10.216.0.0/24}
RUNTIMES=${RUNTIMES:-runc crun gvisor}

make build images >/dev/null
rm -rf "$DATA"
mkdir -p "$DATA" "$OUT"
export KANGA_CONFIG="$DATA/client.json"

bin/kanga up --data-dir "$DATA" --listen "$LISTEN" --write-config "$KANGA_CONFIG" \
	--bridge "$BRIDGE" --subnet "$SUBNET" --host-name bench-host >"$OUT/kanga-up.log" 2>&1 &
cleanup() {
	bin/kanga down --data-dir "$DATA" --purge || true
	ip link del "$BRIDGE" 2>/dev/null || true
	rm -rf "$DATA"
}
trap cleanup EXIT INT TERM
i=0
until bin/kanga version >/dev/null 2>&1; do
	i=$((i + 1))
	[ $i -lt 100 ] || { echo "kanga up did not start; see $OUT/kanga-up.log" >&2; exit 1; }
	sleep 0.2
done
bin/kanga image import testdata/images/busybox.tar >/dev/null
bin/kanga runtimes | tee "$OUT/runtimes.txt"

SOCK="$DATA/containerd/containerd.sock"
for rt in $RUNTIMES; do
	# A class without a host cannot run through the platform: skip it.
	if ! bin/kanga runtimes | awk -v rt="$rt" '
		$1 == rt { hosts = ($2 == "(default)") ? $3 : $2; if (hosts + 0 > 0) ok = 1 }
		END { exit !ok }'; then
		echo "skipping $rt: no host offers it" | tee -a "$OUT/skipped.txt"
		continue
	fi
	for run in "20 1" "40 4"; do
		set -- $run
		echo "== kanga bench start --runtime $rt --n $1 --concurrency $2 --containerd $SOCK"
		bin/kanga bench start --runtime "$rt" --n "$1" --concurrency "$2" --containerd "$SOCK" \
			| tee "$OUT/$rt-n$1-c$2.txt" || true
	done
done
