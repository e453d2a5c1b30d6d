#!/bin/sh
# Alternates builds (BINS/<variant>/kanga): kanga bench start, crun, with
# warm containers (after kanga image prewarm: every start claims one) and
# without (--warm-max 0). VARIANTS (default "before after") are run in
# turn, the order rotated every round; a variant named <build>flat runs
# BINS/<build>/kanga with the kernel's CPU weights (--instances-cpu-shares
# -1 --nice 0) instead of Kanga's priorities.
set -u
cd "$(dirname "$0")/.."
DATA=/tmp/rlcb
OUT=${OUT:-/tmp/rlc-bench/out}
# BINS holds before/kanga (+kanga-init) and after/kanga (+kanga-init).
BINS=${BINS:-/tmp/rlc-bench}
LISTEN=127.0.0.1:7593
BRIDGE=kangarlc
SUBNET=10.241.213.0/24
export KANGA_CONFIG=/tmp/rlcb.json
IMG=kanga.test/busybox:latest
mkdir -p "$OUT"
. bench/lib.sh
K=
trap platform_down EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
SOCK="$DATA/containerd/containerd.sock"
ROUNDS=${ROUNDS:-2}
for r in $(seq 1 "$ROUNDS"); do
	set -- ${VARIANTS:-before after}
	i=1
	while [ $i -lt "$r" ]; do
		v=$1
		shift
		set -- "$@" "$v"
		i=$((i + 1))
	done
	order="$*"
	for mode in warm nowarm; do
		for b in $order; do
			K=$BINS/${b%flat}/kanga
			prio=""
			[ "${b%flat}" != "$b" ] && prio="--instances-cpu-shares -1 --nice 0"
			name=$b-$mode-r$r
			if [ $mode = warm ]; then
				platform_up "$name" --warm-max 10 --warm-total 10 $prio
				sleep 3
				$K image prewarm "$IMG" >/dev/null
				sleep 6
				$K bench start --runtime crun --n 10 --baseline=false --json --containerd "$SOCK" >"$OUT/$name.json" 2>"$OUT/$name.err"
				cat "$DATA/agent/warm.json" >"$OUT/$name.warm.json" 2>/dev/null
			else
				platform_up "$name" --warm-max 0 $prio
				sleep 3
				$K bench start --runtime crun --n 20 --baseline=false --json --containerd "$SOCK" >"$OUT/$name.json" 2>"$OUT/$name.err"
			fi
			echo "$name $(cat /proc/loadavg | cut -d' ' -f1-3) $(head -c 300 $OUT/$name.json | tr -d '\n')"
			platform_down
		done
	done
done
