# Shared by the bench scripts that run a throwaway `kanga up` (sourced, not
# run). The caller sets K (the kanga binary), DATA, LISTEN, BRIDGE, SUBNET,
# OUT and exports KANGA_CONFIG; CGROOT is optional.

# A cgroup root of the script's own: an agent removes the empty cgroups it
# does not know under its root, and other platforms on the machine share
# the default /kanga.
CGROOT=${CGROOT:-/kanga-bench-$BRIDGE}

# platform_up NAME [FLAGS...]: a fresh `kanga up` with the caller's data
# dir, bridge and subnet plus FLAGS, logging to $OUT/NAME-kanga-up.log;
# returns once the API answers, with the test image imported.
platform_up() {
	_name=$1
	shift
	rm -rf "$DATA"
	# Baseline builds older than the flag keep the default root.
	case " $* " in
	*" --cgroup-root "*) ;;
	*) if $K up --help 2>&1 | grep -q -- --cgroup-root; then set -- "$@" --cgroup-root "$CGROOT"; fi ;;
	esac
	$K up --data-dir "$DATA" --listen "$LISTEN" --write-config "$KANGA_CONFIG" \
		--bridge "$BRIDGE" --subnet "$SUBNET" "$@" >"$OUT/$_name-kanga-up.log" 2>&1 &
	_i=0
	until $K version >/dev/null 2>&1; do
		_i=$((_i + 1))
		[ $_i -lt 100 ] || { echo "kanga up did not start; see $OUT/$_name-kanga-up.log" >&2; exit 1; }
		sleep 0.2
	done
	$K image import testdata/images/busybox.tar >/dev/null 2>&1
}

# platform_netns_dir: the agent's namespace directory for $DATA (named as
# the agent names it, after the network state dir).
platform_netns_dir() {
	echo "/run/kanga/netns/$(printf %s "$DATA/network" | sha256sum | cut -c1-12)"
}

# platform_down: stops `kanga up` with every instance removed (and stops
# there, leaving the data dir, when `kanga down` fails), then
# removes whatever a stop cut short may have left: containerd and the warm
# containers' shims, mounts under $DATA, the instances' namespaces,
# the bridge, the subnet's masquerade jump and chain, the bridge's tenant
# isolation tables (with the nft tool, when installed), the empty
# namespace directory, the empty cgroups under $CGROOT, the data dir and
# the client config.
platform_down() {
	if [ -n "$K" ] && [ -e "$DATA/kanga.pid" ] && ! $K down --data-dir "$DATA" --purge >"$OUT/kanga-down.log" 2>&1; then
		# A `kanga up` that would not stop still uses the data dir: removing
		# it under the process would leave its instances and mounts behind.
		echo "kanga down failed (see $OUT/kanga-down.log); $DATA is left for inspection" >&2
		return 1
	fi
	# kanga down leaves containerd and the warm containers' shims running
	# for the next kanga up to adopt; a benchmark's platform has none.
	# Their processes first (thawed, if a freezer holds them), then the
	# shims: a shim killed first leaves its container's processes behind.
	case "$CGROOT" in /kanga-*)
		for _f in $(find /sys/fs/cgroup/freezer/"$CGROOT" -name freezer.state 2>/dev/null); do
			echo THAWED >"$_f" 2>/dev/null || true
		done
		find /sys/fs/cgroup/*/"$CGROOT" -name cgroup.procs -exec cat {} + 2>/dev/null | sort -u |
			while read -r _p; do kill -9 "$_p" 2>/dev/null || true; done ;;
	esac
	pkill -f "containerd-shim-runc-v2 .*-address $DATA/" 2>/dev/null || true
	pkill -f "containerd --config $DATA/" 2>/dev/null || true
	sleep 1
	grep " $DATA/" /proc/mounts | awk '{ print $2 }' | sort -r | while read -r m; do
		umount "$m" || true
	done
	for _ns in "$(platform_netns_dir)"/*; do
		[ -e "$_ns" ] || continue
		umount "$_ns" 2>/dev/null || true
		rm -f "$_ns"
	done
	iptables -t nat -S POSTROUTING 2>/dev/null | grep -- "-j KANGA-MASQ-$BRIDGE\$" | sed 's/^-A/-D/' |
		while read -r rule; do eval "iptables -t nat $rule" || true; done
	iptables -t nat -F "KANGA-MASQ-$BRIDGE" 2>/dev/null || true
	iptables -t nat -X "KANGA-MASQ-$BRIDGE" 2>/dev/null || true
	if command -v nft >/dev/null 2>&1; then
		nft delete table inet "kanga-$BRIDGE" 2>/dev/null || true
		nft delete table bridge "kanga-$BRIDGE" 2>/dev/null || true
	fi
	ip link del "$BRIDGE" 2>/dev/null || true
	rmdir "$(platform_netns_dir)" 2>/dev/null || true
	for _h in /sys/fs/cgroup/*/"$CGROOT"; do
		[ -d "$_h" ] && find "$_h" -depth -type d -exec rmdir {} + 2>/dev/null || true
	done
	rm -rf "$DATA" "$KANGA_CONFIG"
}
