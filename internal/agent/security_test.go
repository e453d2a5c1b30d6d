package agent

import (
	"context"
	"slices"
	"testing"

	"github.com/containerd/containerd/containers"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/oci"

	"github.com/kanga-run/kanga/api"
)

// TestSandboxSpec: the spec of a container asking for nothing has
// Docker's default capabilities without NET_RAW in every set, the default
// seccomp profile (refusing unshare without CAP_SYS_ADMIN), no_new_privs
// and containerd's masked and read-only paths; a container may drop, add
// (where allowed upstream) or run unconfined.
func TestSandboxSpec(t *testing.T) {
	gen := func(sc *api.SecurityContext) *oci.Spec {
		t.Helper()
		ctx := namespaces.WithNamespace(context.Background(), "test")
		s, err := oci.GenerateSpec(ctx, nil, &containers.Container{ID: "c"}, sandboxSpecOpts(sc)...)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	s := gen(nil)
	caps := s.Process.Capabilities
	for _, set := range [][]string{caps.Bounding, caps.Effective, caps.Permitted} {
		if slices.Contains(set, "CAP_NET_RAW") || !slices.Contains(set, "CAP_NET_BIND_SERVICE") || len(set) != 13 {
			t.Errorf("capability set %v: want Docker's 14 without CAP_NET_RAW", set)
		}
	}
	if len(caps.Inheritable) != 0 || len(caps.Ambient) != 0 {
		t.Errorf("inheritable %v, ambient %v: want none", caps.Inheritable, caps.Ambient)
	}
	if !s.Process.NoNewPrivileges {
		t.Error("no_new_privs is off")
	}
	if s.Linux.Seccomp == nil || s.Linux.Seccomp.DefaultAction != "SCMP_ACT_ERRNO" {
		t.Fatalf("seccomp %+v: want the default profile", s.Linux.Seccomp)
	}
	if allowed(s, "unshare") || allowed(s, "mount") || allowed(s, "kexec_load") || !allowed(s, "read") {
		t.Error("the profile allows unshare, mount or kexec_load, or refuses read")
	}
	for _, p := range []string{"/proc/kcore", "/proc/keys", "/sys/firmware", "/proc/timer_list", "/proc/sched_debug"} {
		if !slices.Contains(s.Linux.MaskedPaths, p) {
			t.Errorf("%s is not masked (%v)", p, s.Linux.MaskedPaths)
		}
	}
	for _, p := range []string{"/proc/sys", "/proc/sysrq-trigger", "/proc/bus"} {
		if !slices.Contains(s.Linux.ReadonlyPaths, p) {
			t.Errorf("%s is not read-only (%v)", p, s.Linux.ReadonlyPaths)
		}
	}

	s = gen(&api.SecurityContext{Capabilities: &api.Capabilities{Add: []string{"SYS_ADMIN"}, Drop: []string{"chown"}}})
	if !slices.Contains(s.Process.Capabilities.Bounding, "CAP_SYS_ADMIN") || slices.Contains(s.Process.Capabilities.Bounding, "CAP_CHOWN") {
		t.Errorf("add SYS_ADMIN, drop CHOWN: %v", s.Process.Capabilities.Bounding)
	}
	if !allowed(s, "unshare") || !allowed(s, "mount") {
		t.Error("the profile for a container with CAP_SYS_ADMIN refuses unshare or mount, as Docker's does not")
	}
	s = gen(&api.SecurityContext{SeccompProfile: &api.SeccompProfile{Type: api.SeccompUnconfined}})
	if s.Linux.Seccomp != nil {
		t.Error("an unconfined container has a seccomp profile")
	}
}

// allowed reports whether the profile allows syscall name outright.
func allowed(s *oci.Spec, name string) bool {
	for _, sc := range s.Linux.Seccomp.Syscalls {
		if sc.Action == "SCMP_ACT_ALLOW" && slices.Contains(sc.Names, name) && len(sc.Args) == 0 {
			return true
		}
	}
	return false
}
