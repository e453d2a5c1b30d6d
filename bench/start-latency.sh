#!/bin/sh
# Reproduces bench/start-latency.md: starts a throwaway `kanga up`, runs
# `kanga bench start` for each runtime class that has a host (n=20
# sequential, n=40 with 4 in flight), checks after each run that nothing was
# left in containerd or in the NAT table, and stops the platform again.
# Needs root. Output goes to $OUT (default /tmp/kanga-bench-results).
# NOBUILD=1 uses the bin/kanga that is there instead of running make.
set -eu

cd "$(dirname "$0")/.."
DATA=${DATA:-/tmp/kbench}
OUT=${OUT:-/tmp/kanga-bench-results}
LISTEN=${LISTEN:-127.0.0.1:7450}
BRIDGE=${BRIDGE:-kangabench0}
SUBNET=${SUBNET:-10.216.0.0/24}
RUNTIMES=${RUNTIMES:-runc crun gvisor}
export KANGA_CONFIG=${KANGA_CONFIG:-/tmp/kbench.json}

[ -n "${NOBUILD:-}" ] || make build images >/dev/null
rm -rf "$DATA"
mkdir -p "$DATA" "$OUT"

bin/kanga up --data-dir "$DATA" --listen "$LISTEN" --write-config "$KANGA_CONFIG" \
	--bridge "$BRIDGE" --subnet "$SUBNET" >"$OUT/kanga-up.log" 2>&1 &
cleanup() {
	bin/kanga down --data-dir "$DATA" --purge || true
	# The gvisor class leaves runsc's empty network namespace bind-mounted
	# under the data dir (see internal/agent/runtime/class.go); rm -rf
	# fails on it while it is mounted.
	grep " $DATA/" /proc/mounts | awk '{ print $2 }' | sort -r | while read -r m; do
		umount "$m" || true
	done
	ip link del "$BRIDGE" 2>/dev/null || true
	rm -rf "$DATA" "$KANGA_CONFIG"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
i=0
until bin/kanga version >/dev/null 2>&1; do
	i=$((i + 1))
	[ $i -lt 100 ] || { echo "kanga up did not start; see $OUT/kanga-up.log" >&2; exit 1; }
	sleep 0.2
done
bin/kanga image import testdata/images/busybox.tar >/dev/null
bin/kanga runtimes | tee "$OUT/runtimes.txt"

SOCK="$DATA/containerd/containerd.sock"
# Masquerade rules the bridge plugin made for instances in $SUBNET (a /24).
nat_rules() {
	iptables-save -t nat | grep -c -- "-A POSTROUTING -s ${SUBNET%.0/*}\." || true
}
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
		f="$OUT/$rt-n$1-c$2"
		echo "== kanga bench start --runtime $rt --n $1 --concurrency $2 --containerd $SOCK"
		{ date -u +%FT%TZ; cat /proc/loadavg; } >"$f.meta"
		before=$(nat_rules)
		rc=0
		bin/kanga bench start --runtime "$rt" --n "$1" --concurrency "$2" --containerd "$SOCK" \
			>"$f.txt" || rc=$?
		cat "$f.txt"
		{ echo "exit $rc"; date -u +%FT%TZ; cat /proc/loadavg; } >>"$f.meta"
		left=$(ctr -a "$SOCK" -n kanga containers ls -q | wc -l)
		nat=$(($(nat_rules) - before))
		echo "left behind: $left containers, $nat NAT masquerade rules" | tee -a "$f.meta"
		[ "$left" -eq 0 ] && [ "$nat" -le 0 ] || echo "LEAK after $rt n=$1 c=$2" | tee -a "$OUT/leaks.txt" >&2
	done
done
