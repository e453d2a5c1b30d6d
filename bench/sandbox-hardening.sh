#!/bin/sh
# Reproduces bench/sandbox-hardening.md, in one sitting:
#
#  - seccomp on vs off: one throwaway `kanga up --tenant-allow-unconfined`
#    whose default tenant may run unconfined; per runtime class, ROUNDS
#    rounds of two alternating `kanga bench start` batches of N sequential
#    starts, the default profile then --security-opt seccomp=unconfined;
#  - user namespaces off vs on: ROUNDS pairs of sessions of a fresh
#    `kanga up`, without then with --userns; in each, per runtime class,
#    one first start of a 100 MB image of 2,000 files (in the --userns
#    session it pays the remap of the image's layers) and a batch of N
#    starts of busybox.
#
# Each batch's p50 (request to Running, through the API) goes to
# $OUT/p50.txt with the load average; the summary is the median of the
# batches' p50 per mode and the on/off ratio. Needs root, jq, skopeo and
# umoci. Output goes to $OUT (default /tmp/kanga-sandbox).
set -eu

cd "$(dirname "$0")/.."
DATA=${DATA:-/tmp/ksbx}
OUT=${OUT:-/tmp/kanga-sandbox}
LISTEN=${LISTEN:-127.0.0.1:7495}
BRIDGE=${BRIDGE:-kangasbx}
SUBNET=${SUBNET:-10.242.7.0/24}
N=${N:-10}
ROUNDS=${ROUNDS:-4}
RUNTIMES=${RUNTIMES:-runc crun}
export KANGA_CONFIG=${KANGA_CONFIG:-/tmp/ksbx.json}
K=${K:-bin/kanga}

[ -n "${NOBUILD:-}" ] || make build images >/dev/null
rm -f "$OUT/p50.txt"
mkdir -p "$OUT"

. bench/lib.sh
trap platform_down EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# big_image ARCHIVE: busybox plus a layer of 2,000 files of 50 kB of
# random data.
big_image() {
	[ -f "$1" ] && return
	d=$(mktemp -d)
	skopeo copy -q oci-archive:testdata/images/busybox.tar "oci:$d/layout:big"
	umoci unpack --image "$d/layout:big" "$d/bundle" >/dev/null
	mkdir "$d/bundle/rootfs/data"
	i=0
	while [ $i -lt 2000 ]; do
		head -c 50000 /dev/urandom >"$d/bundle/rootfs/data/f$i"
		i=$((i + 1))
	done
	umoci repack --image "$d/layout:big" "$d/bundle"
	skopeo copy -q "oci:$d/layout:big" "oci-archive:$1:kanga.test/big:latest"
	rm -rf "$d"
}
BIG="$OUT/big.tar"
big_image "$BIG"

# batch NAME ARGS...: one `kanga bench start` through the API only.
batch() {
	name=$1
	shift
	$K bench start --baseline=false --json "$@" >"$OUT/$name.json"
	p=$(jq -r '.paths[0].p50Ms' "$OUT/$name.json")
	echo "$name $p $(cut -d' ' -f1 /proc/loadavg)" | tee -a "$OUT/p50.txt"
}

platform_up seccomp --tenant-allow-unconfined
$K tenant security default --allow-unconfined >/dev/null
for rt in $RUNTIMES; do
	r=1
	while [ $r -le "$ROUNDS" ]; do
		batch "seccomp-on-$rt-$r" --runtime "$rt" --n "$N"
		batch "seccomp-off-$rt-$r" --runtime "$rt" --n "$N" --security-opt seccomp=unconfined
		r=$((r + 1))
	done
done
platform_down

r=1
while [ $r -le "$ROUNDS" ]; do
	for mode in off on; do
		if [ $mode = on ]; then
			platform_up "userns-$mode-$r" --userns
		else
			platform_up "userns-$mode-$r"
		fi
		$K image import "$BIG" >/dev/null 2>&1
		for rt in $RUNTIMES; do
			# Each class's first start of the image (on: the remap, once
			# per image and host).
			batch "userns-$mode-big-first-$rt-$r" --runtime "$rt" --n 1 --image kanga.test/big:latest
			batch "userns-$mode-$rt-$r" --runtime "$rt" --n "$N"
		done
		platform_down
	done
	r=$((r + 1))
done

# summary: the median of the batches' p50 per mode, and the ratio.
median() {
	sort -n | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
p50s() { grep "^$1-[0-9]* " "$OUT/p50.txt" | awk '{ print $2 }' | median; }
{
	echo "mode runtime p50-on p50-off ratio"
	for rt in $RUNTIMES; do
		for m in seccomp userns userns-big-first; do
			case $m in
			userns-big-first)
				on=$(p50s "userns-on-big-first-$rt")
				off=$(p50s "userns-off-big-first-$rt")
				;;
			*)
				on=$(p50s "$m-on-$rt")
				off=$(p50s "$m-off-$rt")
				;;
			esac
			echo "$m $rt $on $off $(echo "$on $off" | awk '{ printf "%.2f", $1 / $2 }')"
		done
	done
} | column -t | tee "$OUT/summary.txt"
echo "remaps of an image's layers (ms), from the agents' logs:" | tee -a "$OUT/summary.txt"
grep -h "layers for user namespaces" "$OUT"/userns-on-*-kanga-up.log | sed 's/.*chain_id=//' | tee -a "$OUT/summary.txt"
