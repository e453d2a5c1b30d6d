package agent

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"
)

// TestPrioritize weights a cgroup root of the test's own: the default, a
// value of the operator's, and none (the kernel's default stays).
func TestPrioritize(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("requires root")
	}
	if _, err := os.Stat(filepath.Join(cgroupV1Root, "cpu", "cpu.shares")); err != nil {
		t.Skip("requires the cgroup v1 cpu controller")
	}
	for _, tc := range []struct {
		name   string
		shares int
		want   int
	}{
		{"default", 0, DefaultRootCPUShares},
		{"operator's", 512, 512},
		{"off", -1, 1024},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := fmt.Sprintf("/kanga-prio-test-%d-%s", os.Getpid(), tc.name[:3])
			dir := filepath.Join(cgroupV1Root, "cpu", root)
			t.Cleanup(func() { _ = os.Remove(dir) })
			if tc.shares < 0 {
				// Off: the root is left as the runtime makes it.
				if err := os.Mkdir(dir, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			a := New(Config{HostName: "h", Network: nopNet{}, CgroupRoot: root, RootCPUShares: tc.shares})
			a.prioritize()
			got, err := readRootCPUShares(root)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("cpu.shares of %s = %d, want %d", root, got, tc.want)
			}
		})
	}
}

// A created task's threads go to instanceNice before it starts, and what
// it then forks inherits that.
func TestResetNice(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("lowering a nice value needs root")
	}
	// The test's own thread pretends to be a daemon at nice -5 for the
	// child it starts; the child inherits it.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	old, err := unix.Getpriority(unix.PRIO_PROCESS, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Setpriority(unix.PRIO_PROCESS, 0, -5); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = unix.Setpriority(unix.PRIO_PROCESS, 0, 20-old) }()
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	nice := func() int {
		t.Helper()
		p, err := unix.Getpriority(unix.PRIO_PROCESS, cmd.Process.Pid)
		if err != nil {
			t.Fatal(err)
		}
		return 20 - p
	}
	if n := nice(); n != -5 {
		t.Fatalf("child starts at nice %d, want the parent's -5", n)
	}
	if err := resetNice(uint32(cmd.Process.Pid)); err != nil {
		t.Fatal(err)
	}
	if n := nice(); n != instanceNice {
		t.Fatalf("after resetNice the child is at nice %d, want %d", n, instanceNice)
	}
}
