#!/bin/bash
# install-deps.sh prepares a fresh Debian 12 host (no systemd, cgroup v1 hybrid)
# for building, testing and running Kanga. It is idempotent: a second run
# changes nothing and prints nothing unless asked (-v).
#
# What it does, each step only when needed:
#   1. apt-get install the runtime dependencies, with services kept stopped
#      (Kanga runs its own containerd and registry; see below).
#   2. mount hugetlb as a cgroup v1 hierarchy, which crun and runsc need on
#      this hybrid layout.
#   3. enable net.ipv4.ip_forward, which bridged containers need to reach
#      published ports and each other through the host.
#   4. build and install gVisor's runsc (scripts/install-runsc.sh), for the
#      gvisor runtime class. Skipped with a note when go is not installed or
#      KANGA_SKIP_RUNSC=1; the class is then simply unavailable.
#
# Must run as root.
set -euo pipefail

verbose=0
if [[ "${1:-}" == "-v" ]]; then
	verbose=1
fi

log() { echo "install-deps: $*"; }
info() { if ((verbose)); then log "$@"; fi; }
die() {
	echo "install-deps: error: $*" >&2
	exit 1
}

if [[ "$(id -u)" -ne 0 ]]; then
	die "must run as root (try: sudo $0)"
fi

packages=(
	containerd
	runc
	crun
	containernetworking-plugins
	iptables
	docker-registry
	skopeo
	umoci
	busybox-static
	iproute2
	curl
)

# --- 1. packages -------------------------------------------------------------

missing=()
for p in "${packages[@]}"; do
	# "install ok installed" is the only status that means the package is usable;
	# half-configured or removed-with-config packages must be (re)installed.
	status="$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)"
	if [[ "$status" != "install ok installed" ]]; then
		missing+=("$p")
	fi
done

if ((${#missing[@]} > 0)); then
	log "installing: ${missing[*]}"

	# Debian's maintainer scripts start services through invoke-rc.d, which
	# consults policy-rc.d: exit code 101 means "do not start". Kanga starts its
	# own containerd (own socket and root under its data dir) and tests start
	# their own registry on a free loopback port, so a system containerd on
	# /run/containerd/containerd.sock or a registry on :5000 would only compete
	# for resources. Only install a policy if there is none, and only for the
	# duration of the install.
	policy=/usr/sbin/policy-rc.d
	created_policy=0
	if [[ ! -e "$policy" ]]; then
		printf '#!/bin/sh\nexit 101\n' >"$policy"
		chmod 0755 "$policy"
		created_policy=1
		trap 'if ((created_policy)); then rm -f "$policy"; fi' EXIT
	fi

	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null

	if ((created_policy)); then
		rm -f "$policy"
		created_policy=0
	fi
	log "installed: ${missing[*]}"
else
	info "packages already installed"
fi

# Report, but do not stop, system services that are already running: they may
# belong to the operator. They do not conflict with Kanga, which uses its own
# socket and ports.
if pgrep -x containerd >/dev/null 2>&1 && [[ -S /run/containerd/containerd.sock ]]; then
	info "note: a containerd is running on /run/containerd/containerd.sock; Kanga uses its own"
fi
if pgrep -x docker-registry >/dev/null 2>&1; then
	info "note: a docker-registry is running (Debian default :5000); tests use their own"
fi

# --- 2. hugetlb cgroup v1 hierarchy -----------------------------------------

cgroot=/sys/fs/cgroup
hugetlb="$cgroot/hugetlb"

# is_mounted_cgroup_v1 DIR CONTROLLER: is DIR a cgroup v1 mount with CONTROLLER?
is_mounted_cgroup_v1() {
	awk -v dir="$1" -v ctl="$2" '
		$2 == dir && $3 == "cgroup" {
			n = split($4, opts, ",")
			for (i = 1; i <= n; i++) if (opts[i] == ctl) found = 1
		}
		END { exit found ? 0 : 1 }' /proc/mounts
}

# On a pure cgroup v2 host (cgroup2 mounted at /sys/fs/cgroup) there is nothing
# to do: hugetlb is a v2 controller there.
if awk -v d="$cgroot" '$2 == d && $3 == "cgroup2" { f = 1 } END { exit f ? 0 : 1 }' /proc/mounts; then
	info "cgroup v2 unified host; no hugetlb v1 hierarchy needed"
elif is_mounted_cgroup_v1 "$hugetlb" hugetlb; then
	info "hugetlb cgroup v1 hierarchy already mounted"
elif [[ "$(awk '$1 == "hugetlb" { print $4 }' /proc/cgroups)" != "1" ]]; then
	info "kernel has no hugetlb cgroup controller; skipping"
else
	if [[ ! -d "$hugetlb" ]]; then
		# /sys/fs/cgroup is a tmpfs on hybrid hosts; some container managers mount
		# it read-only. Remount it rw just long enough to add the mount point.
		ro=0
		if awk -v d="$cgroot" '$2 == d { split($4, o, ","); if (o[1] == "ro") f = 1 } END { exit f ? 0 : 1 }' /proc/mounts; then
			ro=1
			mount -o remount,rw "$cgroot" || die "$cgroot is read-only and cannot be remounted rw"
		fi
		mkdir -p "$hugetlb"
		if ((ro)); then
			mount -o remount,ro "$cgroot"
		fi
	fi
	# The mount fails with EBUSY if hugetlb is enabled in the cgroup2 hierarchy's
	# subtree_control: a controller can only be bound to one hierarchy.
	if ! mount -t cgroup -o hugetlb cgroup "$hugetlb"; then
		die "cannot mount hugetlb cgroup v1 at $hugetlb (is it enabled in cgroup2 subtree_control?)"
	fi
	log "mounted hugetlb cgroup v1 hierarchy at $hugetlb"
fi

# --- 3. IP forwarding ----------------------------------------------------------

if [[ "$(cat /proc/sys/net/ipv4/ip_forward)" != "1" ]]; then
	sysctl -q -w net.ipv4.ip_forward=1
	log "enabled net.ipv4.ip_forward"
else
	info "net.ipv4.ip_forward already enabled"
fi

# --- 4. gVisor runsc -------------------------------------------------------------

if [[ "${KANGA_SKIP_RUNSC:-}" == "1" ]]; then
	info "KANGA_SKIP_RUNSC=1; not installing runsc"
elif ! command -v "${GO:-go}" >/dev/null 2>&1; then
	log "note: go not found; skipping runsc (the gvisor runtime class stays unavailable)"
else
	runsc_args=()
	if ((verbose)); then
		runsc_args+=(-v)
	fi
	"$(dirname "${BASH_SOURCE[0]}")/install-runsc.sh" "${runsc_args[@]}"
fi
