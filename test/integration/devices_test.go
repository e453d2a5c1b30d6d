package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kanga-run/kanga/api"
)

// mockCDISpec describes kanga.dev/mock over real devices whose numbers
// no container may use by default: m0 is the host's /dev/fuse (c 10:229,
// which opens read-write without a mount), m1 the loop device loop (over
// a file that starts with "kanga-m1"), and shared a shareable /dev/null.
func mockCDISpec(loop string) string {
	return `cdiVersion: "0.6.0"
kind: kanga.dev/mock
devices:
  - name: m0
    containerEdits:
      deviceNodes:
        - path: /dev/kanga-mock
          hostPath: /dev/fuse
      env:
        - KANGA_MOCK=m0
  - name: m1
    containerEdits:
      deviceNodes:
        - path: /dev/kanga-mock
          hostPath: ` + loop + `
      env:
        - KANGA_MOCK=m1
  - name: shared
    annotations:
      kanga.run/shareable: "true"
    containerEdits:
      deviceNodes:
        - path: /dev/kanga-shared
          hostPath: /dev/null
`
}

// mockDevices writes the mock kind's CDI spec into a directory of its
// own, with a loop device over a marked file that the test's end detaches,
// and returns the directory and the loop device's numbers ("7 N").
func mockDevices(t testing.TB) (dir, loopNumbers string) {
	dir = t.TempDir()
	backing := filepath.Join(dir, "m1.img")
	img := make([]byte, 1<<20)
	copy(img, "kanga-m1")
	if err := os.WriteFile(backing, img, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("losetup", "--find", "--show", backing).Output()
	if err != nil {
		t.Fatalf("losetup: %v", err)
	}
	loop := strings.TrimSpace(string(out))
	t.Cleanup(func() {
		if out, err := exec.Command("losetup", "-d", loop).CombinedOutput(); err != nil {
			t.Errorf("losetup -d %s: %v: %s", loop, err, out)
		}
	})
	var st unix.Stat_t
	if err := unix.Stat(loop, &st); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "mock.yaml"), []byte(mockCDISpec(loop)), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir, fmt.Sprintf("%d %d", unix.Major(st.Rdev), unix.Minor(st.Rdev))
}

// TestDevices runs instances with CDI devices on kanga up: the host
// advertises the spec's devices, an instance gets its device node (and
// the cgroup rule that lets it open it) and environment, the scheduler
// keeps a third instance Pending while the two exclusive devices are
// held and places it once one is freed, holdings survive a restart of
// kanga up, devices are attached to and detached from running
// instances, and bad requests are 400s naming the field.
func TestDevices(t *testing.T) {
	dir, loopNum := mockDevices(t)
	p := startPlatformWith(t, "--pool-max", "0", "--cdi-spec-dir", dir)
	p.importImages()

	out := p.must("host", "ls", "-o", "json")
	for _, d := range []string{"kanga.dev/mock=m0", "kanga.dev/mock=m1", "kanga.dev/mock=shared"} {
		if !strings.Contains(out, d) {
			t.Fatalf("host ls does not list device %s:\n%s", d, out)
		}
	}

	run := func(name string, args ...string) {
		p.must(append([]string{"run", "-d", "--name", name}, append(args, "kanga.test/busybox", "sleep", "1000")...)...)
		p.eventually(name+" running", time.Minute, func() bool { return p.inspect(name).Status.Phase == api.PhaseRunning })
	}
	run("plain")
	run("named", "--device", "kanga.dev/mock=m0", "--device", "kanga.dev/mock=shared")
	run("counted", "--device", "kanga.dev/mock")

	if got := p.inspect("named").Status.Devices; !slices.Equal(got, []string{"kanga.dev/mock=m0", "kanga.dev/mock=shared"}) {
		t.Fatalf("named holds %q", got)
	}
	if got := p.inspect("counted").Status.Devices; !slices.Equal(got, []string{"kanga.dev/mock=m1"}) {
		t.Fatalf("counted holds %q, want the device named left free: m1", got)
	}
	// m0 is the host's /dev/fuse, which opens read-write; m1 the loop
	// device, which reads the marked file.
	if out := p.must("exec", "named", "sh", "-c", "echo $KANGA_MOCK; exec 3<>/dev/kanga-mock && echo opened"); out != "m0\nopened\n" {
		t.Fatalf("opening m0 in named: %q", out)
	}
	if out := p.must("exec", "counted", "sh", "-c", "echo $KANGA_MOCK; head -c 8 /dev/kanga-mock"); out != "m1\nkanga-m1" {
		t.Fatalf("reading m1 in counted: %q", out)
	}
	if r := p.kanga("exec", "plain", "sh", "-c", "ls /dev/kanga-mock /dev/kanga-shared"); r.code == 0 {
		t.Fatalf("an instance without devices sees them: %s", r.stdout)
	}
	// Nor may it make the node itself: its devices cgroup denies it.
	if r := p.kanga("exec", "plain", "sh", "-c", "mknod /tmp/fuse c 10 229 && exec 3<>/tmp/fuse"); r.code == 0 || !strings.Contains(r.stderr, "not permitted") {
		t.Fatalf("a fuse node made in an instance without the device: exit %d, stderr %q", r.code, r.stderr)
	}

	// Both exclusive devices are held: a third waits, and runs once one
	// is freed.
	p.must("run", "-d", "--name", "third", "--device", "kanga.dev/mock=1", "kanga.test/busybox", "sleep", "1000")
	p.eventually("third pending for the device", time.Minute, func() bool {
		st := p.inspect("third").Status
		return st.Phase == api.PhasePending && strings.Contains(st.Message, "insufficient kanga.dev/mock")
	})

	// A restart of kanga up keeps what the instances hold.
	p.stop()
	p.start()
	p.eventually("named running after the restart", 2*time.Minute, func() bool { return p.inspect("named").Status.Phase == api.PhaseRunning })
	if got := p.inspect("named").Status.Devices; !slices.Equal(got, []string{"kanga.dev/mock=m0", "kanga.dev/mock=shared"}) {
		t.Fatalf("after the restart named holds %q", got)
	}
	if st := p.inspect("third").Status; st.Phase != api.PhasePending {
		t.Fatalf("third is %s after the restart, want Pending: the devices are still held", st.Phase)
	}

	p.must("rm", "-f", "named")
	p.eventually("third running on the freed device", 2*time.Minute, func() bool {
		in := p.inspect("third")
		return in.Status.Phase == api.PhaseRunning && slices.Equal(in.Status.Devices, []string{"kanga.dev/mock=m0"})
	})
	if out := p.must("exec", "third", "sh", "-c", "exec 3<>/dev/kanga-mock && echo opened"); out != "opened\n" {
		t.Fatalf("opening m0 in third: %q", out)
	}

	// Attach and detach while running. Both exclusive devices are held
	// (counted: m1, third: m0): an attach of the kind is refused.
	if r := p.kanga("device", "attach", "plain", "kanga.dev/mock"); r.code == 0 || !strings.Contains(r.stderr, "0 of 1 kanga.dev/mock devices free") {
		t.Fatalf("attach with none free: exit %d, stderr %q", r.code, r.stderr)
	}
	if r := p.kanga("device", "attach", "plain", "kanga.dev/nosuch"); r.code == 0 || !strings.Contains(r.stderr, "has no kanga.dev/nosuch devices") {
		t.Fatalf("attach of an unknown kind: exit %d, stderr %q", r.code, r.stderr)
	}
	if r := p.kanga("device", "attach", "plain", "kanga.dev/mock=m1"); r.code == 0 || !strings.Contains(r.stderr, "held by another instance") || strings.Contains(r.stderr, p.inspect("counted").UID) {
		t.Fatalf("attach of another instance's device: exit %d, stderr %q", r.code, r.stderr)
	}
	// holder opens the device as soon as it appears and keeps it open.
	p.must("run", "-d", "--name", "holder", "kanga.test/busybox", "sh", "-c",
		"while [ ! -e /dev/kanga-mock ]; do sleep 0.1; done; exec 3</dev/kanga-mock; echo opened; sleep 1000")
	p.eventually("holder running", time.Minute, func() bool { return p.inspect("holder").Status.Phase == api.PhaseRunning })
	if out := p.must("device", "detach", "counted", "kanga.dev/mock=m1"); out != "kanga.dev/mock=m1\n" {
		t.Fatalf("detach printed %q", out)
	}
	if r := p.kanga("exec", "counted", "sh", "-c", "head -c 1 /dev/kanga-mock"); r.code == 0 {
		t.Fatalf("counted still opens the detached device: %q", r.stdout)
	}
	if r := p.kanga("exec", "counted", "sh", "-c", "mknod /tmp/loop b "+loopNum+" && head -c 1 /tmp/loop"); r.code == 0 || !strings.Contains(r.stderr, "not permitted") {
		t.Fatalf("a node of the detached device made in counted: exit %d, stderr %q", r.code, r.stderr)
	}
	if in := p.inspect("counted"); len(in.Spec.Devices) != 0 {
		t.Fatalf("counted's spec still asks for %+v after the detach", in.Spec.Devices)
	}
	if out := p.must("device", "attach", "holder", "kanga.dev/mock=1"); out != "kanga.dev/mock=m1\n" {
		t.Fatalf("attach printed %q, want the freed m1", out)
	}
	p.eventually("holder opening the attached device", time.Minute, func() bool {
		return strings.Contains(p.kanga("logs", "holder").stdout, "opened")
	})
	if out := p.must("exec", "holder", "sh", "-c", "head -c 8 /dev/kanga-mock"); out != "kanga-m1" {
		t.Fatalf("reading the attached m1: %q", out)
	}
	// An agent restart keeps the attached device.
	p.stop()
	p.start()
	p.eventually("holder running after the restart", 2*time.Minute, func() bool {
		in := p.inspect("holder")
		return in.Status.Phase == api.PhaseRunning && slices.Equal(in.Status.Devices, []string{"kanga.dev/mock=m1"})
	})
	if out := p.must("exec", "holder", "sh", "-c", "head -c 8 /dev/kanga-mock"); out != "kanga-m1" {
		t.Fatalf("reading the attached m1 after the restart: %q", out)
	}
	p.must("device", "detach", "holder", "kanga.dev/mock=m1")
	if r := p.kanga("exec", "holder", "sh", "-c", "head -c 1 /dev/kanga-mock"); r.code == 0 {
		t.Fatal("holder opens the device after the detach")
	}
	// The node is gone and the cgroup denies the device: one the tenant
	// makes itself does not open.
	if r := p.kanga("exec", "holder", "sh", "-c", "mknod /tmp/again b "+loopNum+" && head -c 1 /tmp/again"); r.code == 0 || !strings.Contains(r.stderr, "not permitted") {
		t.Fatalf("a node made in the container after the detach: exit %d, stderr %q", r.code, r.stderr)
	}
	// The process that opened it before keeps its descriptor: the event
	// says so.
	p.eventually("the detach event naming the holder", time.Minute, func() bool {
		for _, ev := range p.inspect("holder").Status.Events {
			if ev.Reason == "DeviceDetached" && strings.Contains(ev.Message, "still open in pid") && strings.Contains(ev.Message, "(sleep)") {
				return true
			}
		}
		return false
	})
	if r := p.kanga("device", "detach", "holder", "kanga.dev/mock=m1"); r.code == 0 || !strings.Contains(r.stderr, "holds no device") {
		t.Fatalf("detaching twice: exit %d, stderr %q", r.code, r.stderr)
	}

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--device", "kanga.dev/mock=0"}, "spec.devices[0].count 0"},
		{[]string{"--device", "mock"}, `spec.devices[0].kind "mock" is not a CDI kind`},
		{[]string{"--runtime", "gvisor", "--device", "kanga.dev/mock"}, "runtime class gvisor cannot use host devices"},
	} {
		r := p.kanga(append(append([]string{"run", "-d"}, tc.args...), "kanga.test/busybox", "true")...)
		if r.code == 0 || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("run %v: exit %d, stderr %q; want an error with %q", tc.args, r.code, r.stderr, tc.want)
		}
	}
}

// TestMultiHostDevices schedules by device counts on a server and three
// agents, each offering the mock kind's two exclusive devices: six
// instances asking for one each take them all, a seventh waits Pending
// with the scheduler's reason, and runs on the host where one is freed.
func TestMultiHostDevices(t *testing.T) {
	dir, _ := mockDevices(t)
	p := startPoolWith(t, map[string]string{"dv-a": "a", "dv-b": "b", "dv-c": "c"}, nil, func(p *hostPool) {
		p.agentArgs = []string{"--cdi-spec-dir", dir}
	})
	p.importEverywhere()
	perHost := map[string]int{}
	for i := range 6 {
		name := fmt.Sprintf("dv-%d", i)
		p.must("run", "-d", "--name", name, "--device", "kanga.dev/mock", "kanga.test/busybox", "sleep", "1000")
		p.eventually(name+" running", 2*time.Minute, func() bool { return p.get(name).Status.Phase == api.PhaseRunning })
		in := p.get(name)
		if len(in.Status.Devices) != 1 {
			t.Fatalf("%s holds %q, want one device", name, in.Status.Devices)
		}
		perHost[in.Status.Host]++
	}
	if len(perHost) != 3 || perHost["dv-a"] != 2 || perHost["dv-b"] != 2 || perHost["dv-c"] != 2 {
		t.Fatalf("instances per host %v, want two on each of three", perHost)
	}
	p.must("run", "-d", "--name", "dv-late", "--device", "kanga.dev/mock", "kanga.test/busybox", "sleep", "1000")
	p.eventually("dv-late Pending for the devices", time.Minute, func() bool {
		st := p.get("dv-late").Status
		return st.Phase == api.PhasePending && strings.Contains(st.Message, "0/3 hosts available: 3 insufficient kanga.dev/mock")
	})
	freed := p.get("dv-4").Status.Host
	p.must("rm", "-f", "dv-4")
	p.eventually("dv-late running where a device was freed", 2*time.Minute, func() bool {
		st := p.get("dv-late").Status
		return st.Phase == api.PhaseRunning && st.Host == freed && len(st.Devices) == 1
	})
}
