package agent

import (
	"context"
	"encoding/json"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/containerd/containerd/oci"
	"github.com/moby/sys/mountinfo"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/internal/agent/warm/holder"
)

func TestHostID(t *testing.T) {
	m := []specs.LinuxIDMapping{{ContainerID: 0, HostID: UserNSBase, Size: UserNSSize}}
	for _, tc := range []struct {
		id   uint32
		m    []specs.LinuxIDMapping
		want uint32
	}{
		{id: 0, want: 0},
		{id: 1000, want: 1000},
		{id: 0, m: m, want: UserNSBase},
		{id: 1000, m: m, want: UserNSBase + 1000},
		{id: UserNSSize, m: m, want: UserNSSize}, // past the range: unmapped
	} {
		if got := hostID(tc.id, tc.m); got != tc.want {
			t.Errorf("hostID(%d, %v) = %d, want %d", tc.id, tc.m, got, tc.want)
		}
	}
}

// TestLauncherOpts: the spec of a container with env from secrets runs
// the launcher with the image's env and HOSTNAME only; the real args and
// the whole env, secrets included, are the runner's in memory, with the
// host ids of the process's user.
func TestLauncherOpts(t *testing.T) {
	a := New(Config{HostName: "h", DataDir: t.TempDir()})
	a.initPath = "/opt/kanga/bin/kanga-init"
	r := newRunner(a, &api.Instance{UID: "u1", Name: "i"})
	c := &ctr{spec: api.ContainerSpec{Name: "main"}}
	base := []string{"PATH=/usr/bin:/bin", "LANG=C"}
	s := &oci.Spec{
		Process: &specs.Process{
			Args: []string{"sh", "-c", "echo s3cr3t"},
			Env:  []string{"PATH=/usr/bin:/bin", "LANG=C", "HOSTNAME=i", "PW=s3cr3t"},
			User: specs.User{UID: 1000, GID: 2000},
		},
		Linux: &specs.Linux{
			UIDMappings: []specs.LinuxIDMapping{{ContainerID: 0, HostID: UserNSBase, Size: UserNSSize}},
			GIDMappings: []specs.LinuxIDMapping{{ContainerID: 0, HostID: UserNSBase, Size: UserNSSize}},
		},
	}
	if err := r.launcherOpts(c, &base, "HOSTNAME=i")(context.Background(), nil, nil, s); err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(s)
	if strings.Contains(string(b), "s3cr3t") {
		t.Errorf("the spec holds the secret: %s", b)
	}
	if want := []string{holder.Path, holder.LaunchArg}; !slices.Equal(s.Process.Args, want) {
		t.Errorf("args %q, want %q", s.Process.Args, want)
	}
	if want := []string{"PATH=/usr/bin:/bin", "LANG=C", "HOSTNAME=i"}; !slices.Equal(s.Process.Env, want) {
		t.Errorf("env %q, want %q", s.Process.Env, want)
	}
	var mounts []string
	for _, m := range s.Mounts {
		mounts = append(mounts, m.Destination+"<"+m.Source+" "+strings.Join(m.Options, ","))
	}
	want := []string{
		"/.kanga/init</opt/kanga/bin/kanga-init bind,ro",
		"/.kanga/env<" + a.launchFile("u1", "main") + " bind,rw,nosuid,nodev,noexec",
	}
	if !slices.Equal(mounts, want) {
		t.Errorf("mounts %q, want %q", mounts, want)
	}
	if c.launch == nil {
		t.Fatal("no launch recorded")
	}
	if got := c.launch.proc; !slices.Equal(got.Args, []string{"sh", "-c", "echo s3cr3t"}) || !slices.Contains(got.Env, "PW=s3cr3t") {
		t.Errorf("launch process %+v", got)
	}
	if c.launch.uid != UserNSBase+1000 || c.launch.gid != UserNSBase+2000 {
		t.Errorf("launch file owner %d:%d, want the host ids of 1000:2000", c.launch.uid, c.launch.gid)
	}
}

// TestWriteLaunch writes a launcher's file on its tmpfs: owned by the
// process's host ids, mode 0600, the process as JSON; removing the
// sandbox takes the tmpfs off.
func TestWriteLaunch(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a tmpfs")
	}
	a := New(Config{HostName: "h", DataDir: t.TempDir()})
	inst := &api.Instance{UID: "u1", Name: "i", Spec: api.InstanceSpec{Containers: []api.ContainerSpec{{Name: "main",
		EnvFrom: []api.EnvFromSource{{SecretRef: &api.ObjectRef{Name: "s"}}}}}}}
	r := newRunner(a, inst)
	t.Cleanup(func() { _ = unmountFiles(a.launchDir("u1")) })
	c := &ctr{spec: inst.Spec.Containers[0], launch: &launch{proc: holder.Process{Args: []string{"x"}, Env: []string{"PW=v"}}, uid: 1234, gid: 5678}}
	if err := r.writeLaunch(inst, c); err != nil {
		t.Fatal(err)
	}
	if ok, _ := mountinfo.Mounted(a.launchDir("u1")); !ok {
		t.Fatal("no tmpfs at the launch dir")
	}
	p := a.launchFile("u1", "main")
	st, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if sys := st.Sys().(*syscall.Stat_t); sys.Uid != 1234 || sys.Gid != 5678 || st.Mode().Perm() != 0o600 {
		t.Errorf("file %d:%d %v, want 1234:5678 -rw-------", sys.Uid, sys.Gid, st.Mode().Perm())
	}
	if b, _ := os.ReadFile(p); string(b) != `{"args":["x"],"env":["PW=v"],"uid":0,"gid":0}` {
		t.Errorf("file holds %s", b)
	}
	r.clearLaunch(c)
	if b, _ := os.ReadFile(p); len(b) != 0 {
		t.Errorf("after clearLaunch the file holds %d bytes", len(b))
	}
	a.removeSandboxDir("u1")
	if ok, _ := mountinfo.Mounted(a.launchDir("u1")); ok {
		t.Error("the launch tmpfs is still mounted")
	}
}

func TestExecThroughLauncher(t *testing.T) {
	if !launcherSpec(&specs.Process{Args: []string{holder.Path, holder.LaunchArg}}) || launcherSpec(&specs.Process{Args: []string{"sh"}}) ||
		launcherSpec(&specs.Process{Args: []string{holder.Path}}) || launcherSpec(nil) {
		t.Error("launcherSpec tells the launcher's process wrong")
	}
	got := withExecEnv([]string{"sh", "-c", "echo $PW"}, []string{"TERM=xterm"})
	want := []string{holder.Path, holder.ExecArg, "TERM=xterm", "--", "sh", "-c", "echo $PW"}
	if !slices.Equal(got, want) {
		t.Errorf("withExecEnv = %q, want %q", got, want)
	}
}
