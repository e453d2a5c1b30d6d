package agent

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
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
