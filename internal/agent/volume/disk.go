package volume

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"

	"github.com/kanga-run/kanga/errdefs"
)

// An instance's disk: its ephemeral storage (resources.disk) as one
// promise. One filesystem of the instance's disk size (sparse file, loop
// device, ext4, as an emptyDir's) holds every container's writable layer,
// the disk emptyDirs without a sizeLimit of their own and the instance's
// logs, so that together they stop at the size with ENOSPC, whichever
// container writes:
//
//	empty/<instance>/.disk/disk.img
//	empty/<instance>/.disk/fs/                          the filesystem
//	empty/<instance>/.disk/fs/layers/<container>/{fs,work}
//	                             bound over the container's snapshot dir
//	empty/<instance>/.disk/fs/empty/<name>/   a disk emptyDir, bound into
//	                                          the containers that mount it
//	empty/<instance>/.disk/fs/logs/           bound at the instance's log dir
//
// It lives among the instance's emptyDirs: RemoveEmptyDirs and Cleanup
// take it down with them, every bind of it included (the binds show the
// disk's loop device as their source).

func (m *Manager) diskDir(instanceID string) string {
	return filepath.Join(m.instanceDir(instanceID), ".disk")
}

// DiskPath is where an instance's disk is mounted, to read its usage.
func (m *Manager) DiskPath(instanceID string) string {
	return filepath.Join(m.diskDir(instanceID), "fs")
}

// InstanceDisk makes the disk of an instance, of size bytes, unless it is
// mounted already (then it is kept as it is, so that a start step can be
// retried and a restarted agent adopts it), and returns its teardown,
// which unmounts it (and every bind of it) and deletes it.
func (m *Manager) InstanceDisk(ctx context.Context, instanceID string, size int64) (func(context.Context) error, error) {
	if err := checkName("instance", instanceID); err != nil {
		return nil, err
	}
	if size < MinScratchSize || size > MaxScratchSize {
		return nil, fmt.Errorf("disk %d: must be between %d (4Mi) and %d (16Ti) bytes: %w", size, int64(MinScratchSize), int64(MaxScratchSize), errdefs.ErrInvalidArgument)
	}
	lockKey := "instance/" + instanceID
	teardown := func(ctx context.Context) error {
		defer m.locks.lock(lockKey)()
		return m.removeScratch(ctx, m.diskDir(instanceID))
	}
	defer m.locks.lock(lockKey)()
	if _, err := m.instanceDisk(ctx, instanceID, size); err != nil {
		return nil, err
	}
	return teardown, nil
}

// instanceDisk mounts the instance's disk if it is not; the caller holds
// the instance's lock.
func (m *Manager) instanceDisk(ctx context.Context, instanceID string, size int64) (string, error) {
	fs := m.DiskPath(instanceID)
	if ok, err := mounted(fs); err != nil || ok {
		return fs, err
	}
	// Whatever is there is a previous life's (a host reboot took its
	// mount): ephemeral storage starts empty.
	dir := m.diskDir(instanceID)
	if err := os.RemoveAll(dir); err != nil {
		return "", err
	}
	if err := os.MkdirAll(fs, 0o700); err != nil {
		return "", err
	}
	if err := m.formatScratch(ctx, filepath.Join(dir, "disk.img"), size); err != nil {
		_ = os.RemoveAll(dir)
		return "", err
	}
	if err := mountImage(filepath.Join(dir, "disk.img"), fs); err != nil {
		_ = os.RemoveAll(dir)
		return "", err
	}
	if err := os.Remove(filepath.Join(fs, "lost+found")); err != nil && !errors.Is(err, os.ErrNotExist) {
		_ = unmountAll(fs, true)
		_ = os.RemoveAll(dir)
		return "", err
	}
	m.log.DebugContext(ctx, "instance disk made", "instance", instanceID, "size", size)
	return fs, nil
}

// DiskEmptyDir makes the disk emptyDir name of an instance as a directory
// of the instance's disk (of size bytes, made if it is not there), open
// to every user as a Kubernetes emptyDir, and returns its host path, to
// bind into the containers that mount it, and a teardown that deletes it.
func (m *Manager) DiskEmptyDir(ctx context.Context, instanceID, name string, size int64) (string, func(context.Context) error, error) {
	if err := checkName("instance", instanceID); err != nil {
		return "", nil, err
	}
	if err := checkName("emptyDir", name); err != nil {
		return "", nil, err
	}
	if size < MinScratchSize || size > MaxScratchSize {
		return "", nil, fmt.Errorf("disk %d: must be between %d (4Mi) and %d (16Ti) bytes: %w", size, int64(MinScratchSize), int64(MaxScratchSize), errdefs.ErrInvalidArgument)
	}
	lockKey := "instance/" + instanceID
	defer m.locks.lock(lockKey)()
	fs, err := m.instanceDisk(ctx, instanceID, size)
	if err != nil {
		return "", nil, err
	}
	p := filepath.Join(fs, "empty", name)
	if err := os.MkdirAll(p, 0o777); err != nil {
		return "", nil, err
	}
	if err := os.Chmod(p, 0o777); err != nil {
		return "", nil, err
	}
	teardown := func(context.Context) error {
		defer m.locks.lock(lockKey)()
		if ok, err := mounted(fs); err != nil || !ok {
			return err
		}
		return os.RemoveAll(p)
	}
	return p, teardown, nil
}

// bindsOf lists the mount points of the host whose source is one of devs
// and which show directory root of that filesystem (a bind of it),
// deepest first.
func bindsOf(devs []string, root string) ([]string, error) {
	return mountsWhere(devs, func(i *mountinfo.Info) bool { return i.Root == root })
}

// DiskCapacity is the ephemeral storage the host can promise its
// instances in all: what the filesystem under the root has free, plus
// what the disks of the instances on it already take (their sparse files
// are charged to the scheduler at their full size, so what they hold must
// not count twice).
func (m *Manager) DiskCapacity() (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(m.root, &st); err != nil {
		return 0, fmt.Errorf("statfs %s: %w", m.root, err)
	}
	free := int64(st.Bavail) * st.Bsize
	imgs, err := filepath.Glob(filepath.Join(m.root, "empty", "*", ".disk", "disk.img"))
	if err != nil {
		return 0, err
	}
	for _, img := range imgs {
		var s unix.Stat_t
		if err := unix.Stat(img, &s); err == nil {
			free += s.Blocks * 512
		}
	}
	return free, nil
}

// DiskLogs binds the directory logs of the instance's disk (which must be
// mounted: InstanceDisk) at target, the instance's log directory, so that
// its logs count in its disk too. A target already bound is kept; one
// that holds files (an earlier agent's, without the bind) is left alone,
// with ErrFailedPrecondition: the bind would hide them. The disk's
// teardown takes the bind with it; the caller closes its log files
// before, or the unmount finds the filesystem busy.
func (m *Manager) DiskLogs(ctx context.Context, instanceID, target string) error {
	if err := checkName("instance", instanceID); err != nil {
		return err
	}
	if !filepath.IsAbs(target) {
		return fmt.Errorf("log dir %q: must be absolute: %w", target, errdefs.ErrInvalidArgument)
	}
	defer m.locks.lock("instance/" + instanceID)()
	fs := m.DiskPath(instanceID)
	if ok, err := mounted(fs); err != nil || !ok {
		if err == nil {
			err = fmt.Errorf("the instance's disk is not mounted: %w", errdefs.ErrFailedPrecondition)
		}
		return err
	}
	if ok, err := mounted(target); err != nil || ok {
		return err
	}
	if err := os.MkdirAll(target, 0o755); err != nil {
		return err
	}
	if ents, err := readDirN(target, 1); err != nil || len(ents) > 0 {
		if err == nil {
			err = fmt.Errorf("log dir %s already holds files: %w", target, errdefs.ErrFailedPrecondition)
		}
		return err
	}
	src := filepath.Join(fs, "logs")
	if err := os.MkdirAll(src, 0o755); err != nil {
		return err
	}
	return bindMount(src, target, false)
}
