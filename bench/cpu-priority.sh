#!/bin/sh
# What the weight of the instances' cgroup root (kanga up / kanga agent
# --instances-cpu-shares) does for a thread of Kanga's beside busy
# instances (issue 22). Two sibling cgroups of the script's own stand for
# the kanga process (nice 0, weight 1024) and for the instances' root:
# $HOGS busy loops (default: one per core) run in "instances", and a fixed
# piece of single-threaded CPU work ($WORK shell loop iterations) runs in
# "kanga". The work runs $RUNS times alternately with "instances" at
# cpu.shares 1024 (the kernel's default, what Kanga had before) and 128
# (Kanga's default now). Each run reports its wall time and the share of
# the CPU the work got against the hogs while it ran (cpuacct), which
# other load on the machine does not change. Medians. Needs root and the
# cgroup v1 cpu and cpuacct controllers. Used for bench/overload-liveness.md.
set -eu

HOGS=${HOGS:-$(nproc)}
RUNS=${RUNS:-7}
WORK=${WORK:-300000}
CG=${CG:-/kanga-prio-bench-$$}
CPU=/sys/fs/cgroup/cpu$CG
ACCT=/sys/fs/cgroup/cpuacct$CG

HOGPIDS=""
cleanup() {
	for p in $HOGPIDS; do kill "$p" 2>/dev/null || true; done
	for p in $HOGPIDS; do wait "$p" 2>/dev/null || true; done
	for d in "$CPU" "$ACCT"; do rmdir "$d/kanga" "$d/instances" "$d" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
mkdir -p "$CPU/kanga" "$CPU/instances" "$ACCT/kanga" "$ACCT/instances"

# join G: the shell command that moves the calling shell into group G.
join() { echo "echo \$\$ > $CPU/$1/cgroup.procs; echo \$\$ > $ACCT/$1/cgroup.procs"; }

# work: "<wall ms> <share of the work in %>" of one run of the fixed work.
work() {
	k0=$(cat "$ACCT/kanga/cpuacct.usage")
	i0=$(cat "$ACCT/instances/cpuacct.usage")
	t0=$(date +%s%N)
	sh -c "$(join kanga); i=0; while [ \$i -lt $WORK ]; do i=\$((i+1)); done"
	t1=$(date +%s%N)
	k1=$(cat "$ACCT/kanga/cpuacct.usage")
	i1=$(cat "$ACCT/instances/cpuacct.usage")
	# The hogs use every core; the work can use one: its share is of
	# one core's worth of the hogs.
	awk -v w=$(((t1 - t0) / 1000000)) -v k=$((k1 - k0)) -v i=$((i1 - i0)) -v n="$HOGS" \
		'BEGIN { printf "%d %.0f\n", w, 100 * k / (k + i / n) }'
}

median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

for _ in $(seq "$HOGS"); do
	sh -c "$(join instances); while :; do :; done" &
	HOGPIDS="$HOGPIDS $!"
done
sleep 1

: >"/tmp/kanga-prio-$$.1024"
: >"/tmp/kanga-prio-$$.128"
for _ in $(seq "$RUNS"); do
	for s in 1024 128; do
		echo "$s" >"$CPU/instances/cpu.shares"
		work >>"/tmp/kanga-prio-$$.$s"
	done
done

echo "date: $(date -u '+%Y-%m-%d %H:%M UTC'); load average: $(cut -d' ' -f1-3 /proc/loadavg); cores: $(nproc); hogs: $HOGS; runs: $RUNS; work: $WORK iterations"
for s in 1024 128; do
	f=/tmp/kanga-prio-$$.$s
	echo "instances at cpu.shares $s: work median $(cut -d' ' -f1 "$f" | median) ms, its CPU share against one core of hogs median $(cut -d' ' -f2 "$f" | median)% (runs, ms/%: $(awk '{ printf "%s%s/%s", (NR > 1 ? " " : ""), $1, $2 }' "$f"))"
done
w1=$(cut -d' ' -f1 /tmp/kanga-prio-$$.1024 | median)
w2=$(cut -d' ' -f1 /tmp/kanga-prio-$$.128 | median)
awk -v a="$w1" -v b="$w2" 'BEGIN { printf "work time 128 / 1024: %.2fx\n", b / a }'
rm -f /tmp/kanga-prio-$$.1024 /tmp/kanga-prio-$$.128
