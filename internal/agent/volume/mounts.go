package volume

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/containerd/containerd/mount"
	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
)

// Options every mount made here carries: tenant data is never a device
// node or a setuid binary on the host.
var baseOptions = []string{"nodev", "nosuid"}

// mountImage mounts the ext4 filesystem in file img at dir through a loop
// device. containerd's "loop" option attaches the device with autoclear,
// so the kernel detaches it when the filesystem is unmounted (or if this
// process dies between attaching and mounting): no loop device outlives
// its mount.
func mountImage(img, dir string) error {
	m := mount.Mount{Type: "ext4", Source: img, Options: append([]string{"loop"}, baseOptions...)}
	if err := m.Mount(dir); err != nil {
		return fmt.Errorf("mount %s on %s: %w", img, dir, err)
	}
	return nil
}

// bindMount binds src onto dst, read-only when ro.
func bindMount(src, dst string, ro bool) error {
	opts := append([]string{"bind"}, baseOptions...)
	if ro {
		opts = append(opts, "ro")
	}
	m := mount.Mount{Type: "none", Source: src, Options: opts}
	if err := m.Mount(dst); err != nil {
		return fmt.Errorf("bind %s on %s: %w", src, dst, err)
	}
	return nil
}

func mountTmpfs(dir string, size int64) error {
	opts := append([]string{fmt.Sprintf("size=%d", size), "mode=0777"}, baseOptions...)
	m := mount.Mount{Type: "tmpfs", Source: "tmpfs", Options: opts}
	if err := m.Mount(dir); err != nil {
		return fmt.Errorf("mount tmpfs on %s: %w", dir, err)
	}
	return nil
}

// mounted says whether dir is a mount point; a missing dir is not.
func mounted(dir string) (bool, error) {
	ok, err := mountinfo.Mounted(dir)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	return ok, err
}

// unmountAll takes every mount stacked on dir off. detach (MNT_DETACH)
// is for cleanup: a process still inside the mount (a container's cwd)
// does not keep the host path busy; the kernel frees the filesystem,
// and with it the loop device, when its last user goes.
func unmountAll(dir string, detach bool) error {
	flags := 0
	if detach {
		flags = unix.MNT_DETACH
	}
	if err := mount.UnmountAll(dir, flags); err != nil {
		return fmt.Errorf("unmount %s: %w", dir, err)
	}
	return nil
}

// mountsUnder lists the mount points at or below root, deepest first, so
// they can be unmounted in that order.
func mountsUnder(root string) ([]string, error) {
	infos, err := mountinfo.GetMounts(mountinfo.PrefixFilter(root))
	if err != nil {
		return nil, err
	}
	var dirs []string
	seen := map[string]bool{}
	for _, i := range infos {
		if !seen[i.Mountpoint] {
			seen[i.Mountpoint] = true
			dirs = append(dirs, i.Mountpoint)
		}
	}
	sort.Slice(dirs, func(i, j int) bool { return len(dirs[i]) > len(dirs[j]) })
	return dirs, nil
}

// loopsBackedUnder lists the loop devices whose backing file is at or
// below root (a deleted file's name ends in " (deleted)").
func loopsBackedUnder(root string) ([]string, error) {
	files, err := filepath.Glob("/sys/block/loop*/loop/backing_file")
	if err != nil {
		return nil, err
	}
	var devs []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue // detached meanwhile
		}
		back := strings.TrimSuffix(strings.TrimSpace(string(b)), " (deleted)")
		if back == root || strings.HasPrefix(back, root+"/") {
			devs = append(devs, "/dev/"+filepath.Base(filepath.Dir(filepath.Dir(f))))
		}
	}
	return devs, nil
}

// loopSettle bounds the wait for the kernel to detach a loop device
// after its filesystem's last unmount: since Linux 5.19 autoclear runs
// from a workqueue, so the device is still bound for a moment after
// umount returns (a few ms here; seconds under heavy load).
const loopSettle = 5 * time.Second

// waitLoopsGone waits until no loop device is backed by a file at or
// below root, for at most timeout, and returns those still there.
func waitLoopsGone(root string, timeout time.Duration) ([]string, error) {
	deadline := time.Now().Add(timeout)
	for delay := time.Millisecond; ; delay = min(2*delay, 50*time.Millisecond) {
		devs, err := loopsBackedUnder(root)
		if err != nil || len(devs) == 0 || time.Now().After(deadline) {
			return devs, err
		}
		time.Sleep(delay)
	}
}

// detachLoop clears a loop device. A device still mounted somewhere
// answers EBUSY; with autoclear set it goes when that mount does.
func detachLoop(dev string) error {
	err := mount.DetachLoopDevice(dev)
	if errors.Is(err, unix.ENXIO) || errors.Is(err, os.ErrNotExist) {
		return nil // already detached
	}
	return err
}

// mountsOf lists the mount points whose source is one of devs, deepest
// first: a filesystem on a loop device shows the device as the source of
// every mount of it, bind mounts included.
func mountsOf(devs []string) ([]string, error) {
	return mountsWhere(devs, func(*mountinfo.Info) bool { return true })
}

// mountsWhere lists the mount points whose source is one of devs and
// that keep says to keep, deepest first.
func mountsWhere(devs []string, keep func(*mountinfo.Info) bool) ([]string, error) {
	if len(devs) == 0 {
		return nil, nil
	}
	want := map[string]bool{}
	for _, d := range devs {
		want[d] = true
	}
	infos, err := mountinfo.GetMounts(func(i *mountinfo.Info) (skip, stop bool) {
		return !want[i.Source] || !keep(i), false
	})
	if err != nil {
		return nil, err
	}
	var dirs []string
	for _, i := range infos {
		dirs = append(dirs, i.Mountpoint)
	}
	sort.Slice(dirs, func(i, j int) bool { return len(dirs[i]) > len(dirs[j]) })
	return dirs, nil
}
