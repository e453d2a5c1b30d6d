package agent

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/containerd/containerd/containers"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/oci"
	specs "github.com/opencontainers/runtime-spec/specs-go"

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

// TestUserSpec: the process's user and groups from the spec over the
// image's, resolved against the image's /etc/passwd and /etc/group as
// the CRI plugin does; runAsNonRoot refuses a root result with errConfig;
// a read-only root and privilege escalation reach the spec.
func TestUserSpec(t *testing.T) {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		"etc/passwd": "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1500:app:/home/app:/bin/sh\n",
		"etc/group":  "root:x:0:\napp:x:1500:\nwheel:x:10:app\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(root, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	i64 := func(v int64) *int64 { return &v }
	yes := true
	// imageUser stands for what the image config set: USER app.
	imageUser := func(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
		s.Root = &specs.Root{Path: root}
		s.Process.User = specs.User{UID: 1000, GID: 1500, AdditionalGids: []uint32{1500, 10}}
		return nil
	}
	gen := func(spec *api.InstanceSpec) (*oci.Spec, error) {
		ctx := namespaces.WithNamespace(context.Background(), "test")
		c := &spec.Containers[0]
		opts := append([]oci.SpecOpts{imageUser}, userSpecOpts(spec, c)...)
		opts = append(opts, sandboxSpecOpts(c.SecurityContext)...)
		return oci.GenerateSpec(ctx, nil, &containers.Container{ID: "c"}, opts...)
	}
	one := func(sc *api.SecurityContext, fsGroup *int64) *api.InstanceSpec {
		s := &api.InstanceSpec{Containers: []api.ContainerSpec{{Name: "main", SecurityContext: sc}}}
		if fsGroup != nil {
			s.SecurityContext = &api.InstanceSecurityContext{FSGroup: fsGroup}
		}
		return s
	}
	for _, tc := range []struct {
		name   string
		spec   *api.InstanceSpec
		uid    uint32
		gid    uint32
		groups []uint32
	}{
		{"the image's user", one(nil, nil), 1000, 1500, []uint32{1500, 10}},
		{"uid and gid", one(&api.SecurityContext{RunAsUser: i64(2000), RunAsGroup: i64(2001)}, nil), 2000, 2001, []uint32{2001}},
		{"uid of a passwd entry: its group and groups", one(&api.SecurityContext{RunAsUser: i64(1000)}, nil), 1000, 1500, []uint32{1500, 10}},
		{"uid without an entry: group 0", one(&api.SecurityContext{RunAsUser: i64(4242)}, nil), 4242, 0, []uint32{0}},
		{"group only", one(&api.SecurityContext{RunAsGroup: i64(7)}, nil), 1000, 7, []uint32{7, 1500, 10}},
		{"fsGroup and supplemental groups", one(&api.SecurityContext{RunAsUser: i64(2000), RunAsGroup: i64(2000), SupplementalGroups: []int64{3000, 2000}}, i64(4000)),
			2000, 2000, []uint32{2000, 4000, 3000}},
		{"runAsNonRoot with a non-root image", one(&api.SecurityContext{RunAsNonRoot: &yes}, nil), 1000, 1500, []uint32{1500, 10}},
	} {
		s, err := gen(tc.spec)
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		u := s.Process.User
		if u.UID != tc.uid || u.GID != tc.gid || !slices.Equal(u.AdditionalGids, tc.groups) {
			t.Errorf("%s: user %d:%d groups %v, want %d:%d %v", tc.name, u.UID, u.GID, u.AdditionalGids, tc.uid, tc.gid, tc.groups)
		}
	}
	for _, sc := range []*api.SecurityContext{
		{RunAsNonRoot: &yes, RunAsUser: i64(0)},
		{RunAsNonRoot: &yes, RunAsGroup: i64(5), RunAsUser: i64(0)},
	} {
		_, err := gen(one(sc, nil))
		var nr *errConfig
		if !errors.As(err, &nr) || !strings.Contains(err.Error(), "runAsNonRoot") {
			t.Errorf("runAsNonRoot as root %+v: %v", sc, err)
		}
	}
	s, err := gen(one(&api.SecurityContext{ReadOnlyRootFilesystem: true, AllowPrivilegeEscalation: &yes}, nil))
	if err != nil {
		t.Fatal(err)
	}
	if !s.Root.Readonly || s.Process.NoNewPrivileges {
		t.Errorf("read-only root %v, no_new_privs %v: want true, false", s.Root.Readonly, s.Process.NoNewPrivileges)
	}
	if s, err = gen(one(nil, nil)); err != nil || s.Root.Readonly || !s.Process.NoNewPrivileges {
		t.Errorf("default: read-only root %v, no_new_privs %v (%v): want false, true", s.Root.Readonly, s.Process.NoNewPrivileges, err)
	}
}

func TestCheckUserNSIDs(t *testing.T) {
	i64 := func(v int64) *int64 { return &v }
	for _, tc := range []struct {
		sc      *api.SecurityContext
		fsGroup *int64
		want    string // empty: fits
	}{
		{nil, nil, ""},
		{&api.SecurityContext{RunAsUser: i64(UserNSSize - 1), RunAsGroup: i64(0), SupplementalGroups: []int64{5}}, i64(7), ""},
		{&api.SecurityContext{RunAsUser: i64(UserNSSize)}, nil, "securityContext.runAsUser 65536"},
		{&api.SecurityContext{RunAsGroup: i64(70000)}, nil, "securityContext.runAsGroup 70000"},
		{&api.SecurityContext{SupplementalGroups: []int64{1, 1 << 20}}, nil, "group 1048576"},
		{nil, i64(1 << 17), "group 131072"},
	} {
		spec := &api.InstanceSpec{Containers: []api.ContainerSpec{{Name: "main", SecurityContext: tc.sc}}}
		if tc.fsGroup != nil {
			spec.SecurityContext = &api.InstanceSecurityContext{FSGroup: tc.fsGroup}
		}
		err := checkUserNSIDs(spec, 0, "h1", "crun")
		var ce *errConfig
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%+v: %v", tc.sc, err)
		case tc.want != "" && (!errors.As(err, &ce) || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "user namespace")):
			t.Errorf("%+v, fsGroup %v: %v, want a config error with %q", tc.sc, tc.fsGroup, err, tc.want)
		}
	}
}
