package agent

import (
	"os"

	"github.com/containerd/containerd/contrib/seccomp"
	"github.com/containerd/containerd/oci"
	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/internal/model"
)

// The sandbox of a runc or crun container, beyond what containerd's
// default spec gives every container already (no_new_privs, the masked and
// read-only /proc and /sys paths, no devices but the standard ones, new
// pid, ipc, uts and mount namespaces): Docker's default capability set
// without NET_RAW, and Docker's default seccomp profile (containerd's
// contrib/seccomp, the profile dockerd and the CRI plugin load), which
// among others refuses new user namespaces, mount, kexec, bpf, keyctl and
// the other calls a container breakout starts with. gVisor enforces
// capabilities itself and applies its own seccomp filter to the sandbox
// (its Sentry), not the spec's profile to the application (runsc would
// need --oci-seccomp); the spec carries the profile anyway.

// sandboxSpecOpts are the last spec options of every container, warm
// containers included: the capability set of sc and, unless sc runs
// unconfined, the default seccomp profile computed for that set (it allows
// the calls an added capability is for, as Docker does). They come after
// every option that sets the process.
func sandboxSpecOpts(sc *api.SecurityContext) []oci.SpecOpts {
	opts := []oci.SpecOpts{
		oci.WithCapabilities(model.ContainerCapabilities(sc)),
		oci.WithNoNewPrivileges,
	}
	if !model.Unconfined(sc) {
		opts = append(opts, seccomp.WithDefaultProfile())
	}
	return opts
}

// netnsSysctls are written in every instance's network namespace, as
// Docker sets them for a container with a namespace of its own:
// ping_group_range lets every group send ICMP echo through datagram
// sockets, so that ping works without CAP_NET_RAW; ip_unprivileged_port_start
// 0 lets the instance's processes bind ports below 1024 in their own
// namespace, which a container in a user namespace (not the namespace's
// owner) could not do with CAP_NET_BIND_SERVICE alone.
var netnsSysctls = []struct{ path, value string }{
	{"/proc/sys/net/ipv4/ping_group_range", "0 2147483647"},
	{"/proc/sys/net/ipv4/ip_unprivileged_port_start", "0"},
}

// setNetnsSysctls writes netnsSysctls in the namespace at nsPath. The
// agent writes them rather than the runtime (sysctls in the spec): the
// runtime writes from inside the container, which cannot write a
// namespace's /proc/sys/net when it has a user namespace of its own; and
// the container's /proc/sys is read-only, so it cannot change them back.
func setNetnsSysctls(nsPath string) error {
	return ns.WithNetNSPath(nsPath, func(ns.NetNS) error {
		for _, s := range netnsSysctls {
			if err := os.WriteFile(s.path, []byte(s.value), 0); err != nil {
				return err
			}
		}
		return nil
	})
}
