#!/bin/sh
# Reproduces bench/quota.md: what default limits, tenant cgroups and the
# agent's log copier (FIFOs into rotated files) cost, against a baseline
# binary ($BASE, e.g. built from the commit before them), in one sitting.
# Rounds alternate baseline and this build, each on a fresh `kanga up`:
#   - start path: `kanga bench start --runtime crun --n $N` (no baselines:
#     the ratio of interest is kanga-vs-kanga), and the same with warm
#     containers on (--warm-max 2);
#   - chatty instance: a container writes $MB MB to stdout as fast as it
#     can (yes | head -c); the figures are its run time (startedAt to
#     finishedAt), the CPU seconds of `kanga up` (its agent copies the
#     output now) and of the instance's shim over the run, and the log's
#     size on disk at the end.
# Needs root. Output goes to $OUT (default /tmp/kanga-quota-bench).
#
# The baseline is built from the baseline commit with its cgroup root moved
# from the constant /kanga (which it has no flag for) to its own: an agent
# starting removes the warm-* cgroups it finds under its root, retrying
# each that still holds tasks, and on a machine shared with other
# platforms (here, 100 of them) that kept the baseline's agent from
# starting instances for minutes. This build gets --cgroup-root instead.
#
#   mkdir /tmp/kq-base && git archive <baseline commit> | tar -x -C /tmp/kq-base && cd /tmp/kq-base &&
#   sed -i 's|const cgroupRoot = "/kanga"|const cgroupRoot = "/kanga-bench-base"|' internal/agent/sandbox.go &&
#   go build -o bin/kanga ./cmd/kanga && CGO_ENABLED=0 go build -o bin/kanga-init ./cmd/kanga-init
#   BASE=/tmp/kq-base/bin/kanga bench/quota.sh
set -eu

cd "$(dirname "$0")/.."
DATA=${DATA:-/tmp/kqbench}
OUT=${OUT:-/tmp/kanga-quota-bench}
LISTEN=${LISTEN:-127.0.0.1:7461}
BRIDGE=${BRIDGE:-kangaqb0}
SUBNET=${SUBNET:-10.248.0.0/24}
N=${N:-20}
MB=${MB:-200}
ROUNDS=${ROUNDS:-3}
BASE=${BASE:?set BASE to the baseline kanga binary}
export KANGA_CONFIG=${KANGA_CONFIG:-/tmp/kqbench.json}
NEW=bin/kanga

[ -n "${NOBUILD:-}" ] || make build images >/dev/null
mkdir -p "$OUT"
SOCK="$DATA/containerd/containerd.sock"
K=
. bench/lib.sh
trap platform_down EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ticks PID: user + system clock ticks of a process.
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0; }
HZ=$(getconf CLK_TCK)

# up NAME BINARY [FLAGS...]: a fresh platform on BINARY; this build gets
# its own cgroup root, which the baseline does not know.
up() {
	name=$1
	K=$2
	shift 2
	if $K up --help 2>&1 | grep -q -- --cgroup-root; then
		set -- "$@" --cgroup-root /kanga-bench-quota
	fi
	platform_up "$name" --pool-max 0 "$@"
	# Ready once an instance runs: the agent starts instances only after
	# its orphan cleanup.
	$K run --rm kanga.test/busybox true >/dev/null
	sleep 2
}

start_path() {
	f="$OUT/$1"
	{ date -u +%FT%TZ; cat /proc/loadavg; } >"$f.meta"
	$K bench start --runtime crun --n "$N" --baseline=false >"$f.txt" 2>&1 || echo "exit $?" >>"$f.meta"
	cat /proc/loadavg >>"$f.meta"
	echo "== $1: $(grep -m1 'kanga API' "$f.txt" || tail -3 "$f.txt")"
}

chatty() {
	f="$OUT/$1-chatty.txt"
	kpid=$(cat "$DATA/kanga.pid")
	k0=$(ticks "$kpid")
	$K run -d --name chatty kanga.test/busybox sh -c "yes 0123456789abcdef | head -c $((MB * 1000000))" >/dev/null
	i=0
	until $K ps -a | grep -q '^chatty .*Exited'; do
		i=$((i + 1))
		[ $i -lt 600 ] || { echo "chatty did not end" >&2; break; }
		sleep 0.5
	done
	k1=$(ticks "$kpid")
	uid=$($K inspect chatty | sed -n 's/.*"uid": "\(.*\)".*/\1/p' | head -1)
	spid=$(pgrep -f -- "-id $uid-" | head -1 || true)
	s=$(ticks "${spid:-0}")
	run=$($K inspect chatty | awk -F'"' '/"startedAt"/ && !a { a = $4 } /"finishedAt"/ { b = $4 } END { print a, b }')
	logs=$(du -sb "$DATA/agent/logs/$uid" 2>/dev/null | cut -f1)
	secs=$(echo "$run" | { read -r a b; echo $(($(date -d "$b" +%s%N) - $(date -d "$a" +%s%N))); })
	printf '%s: %d MB in %.2f s; kanga up %.2f CPU s, shim %.2f CPU s; log on disk %s bytes\n' "$1" "$MB" \
		"$(echo "$secs / 1000000000" | bc -l)" "$(echo "($k1 - $k0) / $HZ" | bc -l)" "$(echo "$s / $HZ" | bc -l)" "${logs:-0}" | tee "$f"
	$K rm -f chatty >/dev/null
}

r=1
while [ $r -le "$ROUNDS" ]; do
	for side in base new; do
		bin=$NEW
		[ $side = base ] && bin=$BASE
		up "$side" "$bin"
		start_path "r$r-$side-cold"
		chatty "r$r-$side"
		platform_down
		up "$side-warm" "$bin" --warm-max 2
		$K image prewarm kanga.test/busybox >/dev/null 2>&1 || true
		sleep 3
		start_path "r$r-$side-warm"
		platform_down
	done
	r=$((r + 1))
done
for h in /sys/fs/cgroup/*/kanga-bench-quota /sys/fs/cgroup/*/kanga-bench-base; do
	[ -d "$h" ] && find "$h" -depth -type d -exec rmdir {} \; 2>/dev/null || true
done
