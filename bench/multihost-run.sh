#!/bin/bash
# Start latency through `kanga server` + one `kanga agent` (API -> store ->
# scheduler -> agent link -> containerd -> status back over the link) against
# `kanga up` (the same path in one process, no link), on this machine in the
# same sitting, alternating runs. Usage: bench/multihost-run.sh [N] (as root,
# after make build images). Prints medians and the ratio.
set -euo pipefail
N=${1:-15}
cd "$(dirname "$0")/.."
K=$PWD/bin/kanga
T=$(mktemp -d /tmp/kanga-mhbench-XXXX)
cleanup() {
	kill "${AP:-}" "${SP:-}" "${UP:-}" 2>/dev/null || true
	wait 2>/dev/null || true
	for d in "$T/agent" "$T/up"; do
		[ -f "$d/containerd/containerd/containerd.pid" ] && kill "$(cat "$d/containerd/containerd/containerd.pid")" 2>/dev/null || true
		h=$(echo -n "$d/network" | sha256sum | cut -c1-12); rmdir "/run/kanga/netns/$h" 2>/dev/null || true
	done
	ip link del kangamh248 2>/dev/null || true
	ip link del kangamh249 2>/dev/null || true
	sleep 1
	rm -rf "$T"
}
trap cleanup EXIT
"$K" up --data-dir "$T/up" --listen 127.0.0.1:17490 --write-config "$T/up.json" --bridge kangamh248 --subnet 10.231.248.0/24 --pool-max 0 >"$T/up.log" 2>&1 &
UP=$!
"$K" server --data-dir "$T/srv" --listen 127.0.0.1:17491 --agent-listen 127.0.0.1:17492 --write-config "$T/srv.json" >"$T/srv.log" 2>&1 &
SP=$!
for _ in $(seq 50); do [ -f "$T/srv/join-token" ] && break; sleep 0.2; done
"$K" agent --join https://127.0.0.1:17492 --token "$(cat "$T/srv/join-token")" --data-dir "$T/agent" --host-name bench-agent \
	--listen 127.0.0.1:17493 --bridge kangamh249 --subnet 10.231.249.0/24 --pool-max 0 >"$T/agent.log" 2>&1 &
AP=$!
for c in up srv; do
	for _ in $(seq 100); do KANGA_CONFIG=$T/$c.json "$K" host ls 2>/dev/null | grep -q " Ready" && break; sleep 0.2; done
	KANGA_CONFIG=$T/$c.json "$K" image import testdata/images/busybox.tar >/dev/null
done
ms() { local s e; s=$(date +%s%N); KANGA_CONFIG=$1 "$K" run --rm kanga.test/busybox true >/dev/null; e=$(date +%s%N); echo $(( (e - s) / 1000000 )); }
for c in up srv; do ms "$T/$c.json" >/dev/null; done # warm up
: >"$T/up.ms"; : >"$T/srv.ms"
for _ in $(seq "$N"); do
	ms "$T/up.json" >>"$T/up.ms"
	ms "$T/srv.json" >>"$T/srv.ms"
done
med() { sort -n "$1" | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
U=$(med "$T/up.ms"); S=$(med "$T/srv.ms")
echo "kanga run --rm busybox true, median of $N (ms): kanga up $U, kanga server + agent $S, ratio $(awk "BEGIN {printf \"%.2f\", $S/$U}")"
echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"
