package volume

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// Usage is how full a limited filesystem is, for stats next to its limit.
type Usage struct {
	// Used is what the filesystem's files and directories take, in bytes
	// (a fresh ext4 shows a few KiB: its root and lost+found).
	Used int64
	// Available is what a writer can still write before ENOSPC.
	Available int64
}

// UsageOf reports the usage of the filesystem mounted at path: an
// emptyDir's path, a volume's target, a writable layer's snapshot dir.
// The limit is the size it was made with: Used + Available is within a
// fraction of a percent of it (see format).
func UsageOf(path string) (Usage, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return Usage{}, fmt.Errorf("statfs %s: %w", path, err)
	}
	return Usage{Used: int64(st.Blocks-st.Bfree) * st.Bsize, Available: int64(st.Bavail) * st.Bsize}, nil
}
