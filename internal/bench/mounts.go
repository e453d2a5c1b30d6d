package bench

import (
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// mountsUnder lists the mount points at or below dir, in mount order.
func mountsUnder(dir string) []string {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	var m []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && (f[4] == dir || strings.HasPrefix(f[4], dir+"/")) {
			m = append(m, f[4])
		}
	}
	return m
}

// removeWorkDir unmounts whatever a runtime mounted below dir (runsc
// bind-mounts a "null-netns" into its --root) and removes dir.
func removeWorkDir(dir string) error {
	m := mountsUnder(dir)
	for i := len(m) - 1; i >= 0; i-- {
		_ = unix.Unmount(m[i], unix.MNT_DETACH)
	}
	return os.RemoveAll(dir)
}
