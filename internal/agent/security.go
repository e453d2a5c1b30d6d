package agent

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"

	"github.com/containerd/containerd/containers"
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
	}
	if model.PrivilegeEscalation(sc) {
		// Allowed by the tenant's policy (CheckSecurity, checkSecurity).
		opts = append(opts, func(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
			if s.Process != nil {
				s.Process.NoNewPrivileges = false
			}
			return nil
		})
	} else {
		opts = append(opts, oci.WithNoNewPrivileges)
	}
	if sc != nil && sc.ReadOnlyRootFilesystem {
		// The runtime's own mounts (/dev, /dev/shm, /proc...) and the
		// volume mounts keep their options: only the root is read-only.
		opts = append(opts, oci.WithRootFSReadonly())
	}
	if !model.Unconfined(sc) {
		opts = append(opts, seccomp.WithDefaultProfile())
	}
	return opts
}

// errConfig is a container spec the host cannot make from the instance's
// spec and image (runAsNonRoot with a root user, an id outside the user
// namespace): the instance fails with CreateContainerConfigError, as in
// Kubernetes, and is not retried (nothing but a new spec or image
// changes it).
type errConfig struct{ msg string }

func (e *errConfig) Error() string { return e.msg }

func nonRoot(container, why string) error {
	return &errConfig{fmt.Sprintf("container %s has runAsNonRoot and %s: set securityContext.runAsUser to a non-zero uid (kanga run --user UID), or use an image whose USER is not root", container, why)}
}

// checkUserNSIDs refuses user and group ids a container in a user
// namespace cannot take: only 0 to UserNSSize-1 are mapped.
func checkUserNSIDs(spec *api.InstanceSpec, i int, host, class string) error {
	c := spec.Containers[i]
	ids := map[string]*int64{}
	if sc := c.SecurityContext; sc != nil {
		ids["securityContext.runAsUser"], ids["securityContext.runAsGroup"] = sc.RunAsUser, sc.RunAsGroup
	}
	for _, g := range model.ContainerGroups(spec, &c) {
		if g >= UserNSSize {
			return &errConfig{fmt.Sprintf("container %s: group %d: containers of runtime %s on host %s run in a user namespace of ids 0-%d", c.Name, g, class, host, UserNSSize-1)}
		}
	}
	for f, id := range ids {
		if id != nil && *id >= UserNSSize {
			return &errConfig{fmt.Sprintf("container %s: %s %d: containers of runtime %s on host %s run in a user namespace of ids 0-%d", c.Name, f, *id, class, host, UserNSSize-1)}
		}
	}
	return nil
}

// reasonConfigError is the reason of an instance whose container spec
// cannot be made, as Kubernetes names it.
const reasonConfigError = "CreateContainerConfigError"

// userSpecOpts set the process's user and groups from the container's
// security context and the instance's fsGroup, after the image config
// (which set the image's USER, resolved against its /etc/passwd, and that
// user's groups from its /etc/group), and check runAsNonRoot on the
// result. With neither runAsUser nor runAsGroup, the image's user stays.
func userSpecOpts(spec *api.InstanceSpec, c *api.ContainerSpec) []oci.SpecOpts {
	sc := c.SecurityContext
	var opts []oci.SpecOpts
	switch {
	case sc != nil && sc.RunAsUser != nil:
		uid := strconv.FormatInt(*sc.RunAsUser, 10)
		user := uid
		if sc.RunAsGroup != nil {
			user += ":" + strconv.FormatInt(*sc.RunAsGroup, 10)
		}
		// As the CRI plugin: the group from the image's /etc/passwd when
		// runAsGroup is unset (0 if the uid has no entry), and the
		// user's groups from its /etc/group.
		opts = append(opts, oci.WithUser(user), oci.WithAdditionalGIDs(uid))
	case sc != nil && sc.RunAsGroup != nil:
		gid := uint32(*sc.RunAsGroup)
		opts = append(opts, func(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
			s.Process.User.GID = gid
			if !slices.Contains(s.Process.User.AdditionalGids, gid) {
				s.Process.User.AdditionalGids = append([]uint32{gid}, s.Process.User.AdditionalGids...)
			}
			return nil
		})
	}
	if groups := model.ContainerGroups(spec, c); len(groups) > 0 {
		opts = append(opts, func(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
			for _, g := range groups {
				if !slices.Contains(s.Process.User.AdditionalGids, g) {
					s.Process.User.AdditionalGids = append(s.Process.User.AdditionalGids, g)
				}
			}
			return nil
		})
	}
	if model.RunAsNonRoot(sc) {
		name := c.Name
		opts = append(opts, func(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
			if s.Process.User.UID != 0 {
				return nil
			}
			why := "its image runs as root (uid 0)"
			if sc.RunAsUser != nil {
				why = "runAsUser is 0"
			}
			return nonRoot(name, why)
		})
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
