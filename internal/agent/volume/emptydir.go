package volume

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"

	"github.com/kanga-run/kanga/errdefs"
)

// Medium is where an emptyDir lives, as Kubernetes names it.
type Medium string

const (
	// MediumDisk is a filesystem of its own on a sparse file.
	MediumDisk Medium = ""
	// MediumMemory is a tmpfs; its pages count against the memory cgroup
	// of the process that touches them, as with Kubernetes.
	MediumMemory Medium = "Memory"
)

// Size bounds of an emptyDir and a writable layer.
const (
	MinScratchSize = 4 << 20
	MaxScratchSize = 16 << 40
)

func (m *Manager) instanceDir(instanceID string) string {
	return filepath.Join(m.root, "empty", instanceID)
}

// EmptyDirPath is the host path of an instance's emptyDir (what EmptyDir
// returns), to read its usage.
func (m *Manager) EmptyDirPath(instanceID, name string) string {
	return filepath.Join(m.instanceDir(instanceID), name, "dir")
}

// EmptyDir makes the emptyDir name of an instance and returns its host
// path, to bind into each of the instance's containers, and a teardown
// that unmounts and deletes it. A disk emptyDir is an ext4 filesystem of
// its own (sparse file, loop device) whose free space is sizeLimit, so a
// write past it fails with ENOSPC; a memory one is a tmpfs of sizeLimit.
// sizeLimit is required: when the spec has none, pass the instance's disk
// or memory limit. Calling it again for a mounted emptyDir returns it as
// it is, so a start step can be retried.
func (m *Manager) EmptyDir(ctx context.Context, instanceID, name string, medium Medium, sizeLimit int64) (string, func(context.Context) error, error) {
	if err := checkName("instance", instanceID); err != nil {
		return "", nil, err
	}
	if err := checkName("emptyDir", name); err != nil {
		return "", nil, err
	}
	if medium != MediumDisk && medium != MediumMemory {
		return "", nil, fmt.Errorf("medium %q: must be \"\" (disk) or %q: %w", medium, MediumMemory, errdefs.ErrInvalidArgument)
	}
	if sizeLimit < MinScratchSize || sizeLimit > MaxScratchSize {
		return "", nil, fmt.Errorf("sizeLimit %d: must be between %d (4Mi) and %d (16Ti) bytes: %w", sizeLimit, int64(MinScratchSize), int64(MaxScratchSize), errdefs.ErrInvalidArgument)
	}
	dir := filepath.Join(m.instanceDir(instanceID), name)
	path := filepath.Join(dir, "dir")
	lockKey := "instance/" + instanceID
	teardown := func(ctx context.Context) error {
		defer m.locks.lock(lockKey)()
		return m.removeScratch(ctx, dir)
	}

	defer m.locks.lock(lockKey)()
	ok, err := mounted(path)
	if err != nil {
		return "", nil, err
	}
	if ok {
		return path, teardown, nil
	}
	// Whatever is there is a previous life's (a host reboot took its
	// mount): an emptyDir starts empty.
	if err := os.RemoveAll(dir); err != nil {
		return "", nil, err
	}
	if err := os.MkdirAll(path, 0o700); err != nil {
		return "", nil, err
	}
	if medium == MediumMemory {
		if err := mountTmpfs(path, sizeLimit); err != nil {
			_ = os.RemoveAll(dir)
			return "", nil, err
		}
	} else if err := m.mountScratch(ctx, dir, path, sizeLimit); err != nil {
		return "", nil, err
	}
	m.log.DebugContext(ctx, "emptyDir made", "instance", instanceID, "emptyDir", name, "medium", string(medium), "sizeLimit", sizeLimit)
	return path, teardown, nil
}

// mountScratch formats dir/disk.img to size and mounts it at path, with
// its root open to every user (as a Kubernetes emptyDir).
func (m *Manager) mountScratch(ctx context.Context, dir, path string, size int64) (err error) {
	defer func() {
		if err != nil {
			_ = unmountAll(path, true)
			_ = os.RemoveAll(dir)
		}
	}()
	if err := m.formatScratch(ctx, filepath.Join(dir, "disk.img"), size); err != nil {
		return err
	}
	if err := mountImage(filepath.Join(dir, "disk.img"), path); err != nil {
		return err
	}
	// lost+found would be in the tenant's way and counts for nothing.
	if err := os.Remove(filepath.Join(path, "lost+found")); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return os.Chmod(path, 0o777)
}

// WritableLayer puts an instance's writable layer on its disk (see
// InstanceDisk, made here if it is not there), so that the layer, with
// the instance's other ephemeral storage, cannot grow past size (ENOSPC).
// dir is the overlay snapshot's directory (containerd's
// <root>/snapshots/<n>, which holds fs, the upperdir, and work, the
// workdir: the two must be on one filesystem). It must be empty but for
// those two, that is freshly prepared; a directory of the disk is bound
// over it with fs and work made anew. The teardown unbinds it and must
// run before the snapshot is removed: the snapshotter deletes the dir
// with os.RemoveAll, which fails on a mount point.
func (m *Manager) WritableLayer(ctx context.Context, instanceID, dir string, size int64) (func(context.Context) error, error) {
	return m.writableLayer(ctx, instanceID, "", dir, size)
}

// ContainerWritableLayer is WritableLayer for one container of an
// instance of several: every container's layer is a directory of the one
// disk of the instance.
func (m *Manager) ContainerWritableLayer(ctx context.Context, instanceID, container, dir string, size int64) (func(context.Context) error, error) {
	if err := checkName("container", container); err != nil {
		return nil, err
	}
	return m.writableLayer(ctx, instanceID, container, dir, size)
}

// layerDir is where an earlier agent kept the filesystem of a container's
// writable layer when each had one of its own: among the instance's
// emptyDirs, so that RemoveEmptyDirs and Cleanup find it.
func (m *Manager) layerDir(instanceID, container string) string {
	if container == "" {
		return filepath.Join(m.instanceDir(instanceID), ".writable")
	}
	return filepath.Join(m.instanceDir(instanceID), ".writable-"+container)
}

// layerName is the directory of a container's writable layer on the
// instance's disk, relative to its root; "" is WritableLayer's.
func layerName(container string) string {
	if container == "" {
		return "layers/.instance"
	}
	return "layers/" + container
}

// RemoveWritableLayer unbinds the writable layer of a container from its
// snapshot dir and deletes it from the instance's disk, as the teardown
// ContainerWritableLayer returned does, for when that is lost (agent
// restart): the bind is found by the disk's loop device and the
// directory it shows. It must run after the container's task is deleted
// and before its snapshot is removed. Nothing to do is not an error.
func (m *Manager) RemoveWritableLayer(ctx context.Context, instanceID, container string) error {
	if err := checkName("instance", instanceID); err != nil {
		return err
	}
	if container != "" {
		if err := checkName("container", container); err != nil {
			return err
		}
	}
	if _, err := os.Stat(m.instanceDir(instanceID)); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	defer m.locks.lock("instance/" + instanceID)()
	// A filesystem of the container's own, made by an earlier agent.
	if img := m.layerDir(instanceID, container); exists(img) {
		return m.removeScratch(ctx, img)
	}
	devs, err := loopsBackedUnder(m.diskDir(instanceID))
	if err != nil {
		return err
	}
	name := layerName(container)
	targets, err := bindsOf(devs, "/"+name)
	if err != nil {
		return err
	}
	for _, t := range targets {
		if err := unmountAll(t, false); err != nil {
			return err
		}
	}
	if ok, err := mounted(m.DiskPath(instanceID)); err != nil || !ok {
		return err
	}
	return os.RemoveAll(filepath.Join(m.DiskPath(instanceID), name))
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

func (m *Manager) writableLayer(ctx context.Context, instanceID, container, dir string, size int64) (func(context.Context) error, error) {
	if err := checkName("instance", instanceID); err != nil {
		return nil, err
	}
	if size < MinScratchSize || size > MaxScratchSize {
		return nil, fmt.Errorf("disk %d: must be between %d (4Mi) and %d (16Ti) bytes: %w", size, int64(MinScratchSize), int64(MaxScratchSize), errdefs.ErrInvalidArgument)
	}
	if !filepath.IsAbs(dir) {
		return nil, fmt.Errorf("snapshot dir %q: must be absolute: %w", dir, errdefs.ErrInvalidArgument)
	}
	upper := filepath.Join(dir, "fs")
	st, err := os.Stat(upper)
	if err != nil {
		return nil, fmt.Errorf("snapshot dir %s: %w", dir, err)
	}
	lockKey := "instance/" + instanceID
	layer := filepath.Join(m.DiskPath(instanceID), layerName(container))
	teardown := func(ctx context.Context) error {
		defer m.locks.lock(lockKey)()
		if err := unmountAll(dir, false); err != nil {
			return err
		}
		if ok, err := mounted(m.DiskPath(instanceID)); err != nil || !ok {
			return err
		}
		return os.RemoveAll(layer)
	}
	defer m.locks.lock(lockKey)()
	if ok, err := mounted(dir); err != nil || ok {
		return teardown, err
	}
	// The bind would hide what the layer holds already.
	if ents, err := readDirN(upper, 1); err != nil || len(ents) > 0 {
		if err == nil {
			err = fmt.Errorf("writable layer %s already holds files: %w", upper, errdefs.ErrFailedPrecondition)
		}
		return nil, err
	}
	if _, err := m.instanceDisk(ctx, instanceID, size); err != nil {
		return nil, err
	}
	if err := os.RemoveAll(layer); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(layer, 0o700); err != nil {
		return nil, err
	}
	// fs and work as the snapshotter made them: same mode and owner (a
	// user-namespaced container's root owns its upperdir).
	uid, gid := -1, -1
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		uid, gid = int(sys.Uid), int(sys.Gid)
	}
	for _, d := range []string{"fs", "work"} {
		p := filepath.Join(layer, d)
		err := os.Mkdir(p, st.Mode().Perm())
		if err == nil {
			err = os.Chmod(p, st.Mode().Perm()) // past the umask
		}
		if err == nil {
			err = os.Lchown(p, uid, gid)
		}
		if err != nil {
			_ = os.RemoveAll(layer)
			return nil, err
		}
	}
	if err := bindMount(layer, dir, false); err != nil {
		_ = os.RemoveAll(layer)
		return nil, err
	}
	return teardown, nil
}

// removeScratch unmounts an emptyDir's or writable layer's filesystem
// wherever it is mounted and deletes its directory.
func (m *Manager) removeScratch(_ context.Context, dir string) error {
	if err := unmountBacked(dir, false); err != nil {
		return err
	}
	return os.RemoveAll(dir)
}

// RemoveEmptyDirs tears down every emptyDir (and the writable layer
// filesystem) of an instance: what the teardowns do, from the records on
// disk, for when the teardowns are lost (agent restart).
func (m *Manager) RemoveEmptyDirs(ctx context.Context, instanceID string) error {
	if err := checkName("instance", instanceID); err != nil {
		return err
	}
	// Most instances have none: no scan of the loop devices and mounts.
	if _, err := os.Stat(m.instanceDir(instanceID)); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	defer m.locks.lock("instance/" + instanceID)()
	return m.removeScratch(ctx, m.instanceDir(instanceID))
}

// unmountBacked unmounts everything mounted at or below dir, and every
// mount anywhere of a loop device whose backing file is below dir (a
// writable layer over a snapshot dir, a bind of an emptyDir), then
// detaches those loop devices if the kernel has not already.
func unmountBacked(dir string, detach bool) error {
	devs, err := loopsBackedUnder(dir)
	if err != nil {
		return err
	}
	targets, err := mountsOf(devs)
	if err != nil {
		return err
	}
	under, err := mountsUnder(dir)
	if err != nil {
		return err
	}
	var errs []error
	for _, t := range append(targets, under...) {
		if err := unmountAll(t, detach); err != nil {
			errs = append(errs, err)
		}
	}
	// Autoclear detaches a device soon after its last mount goes. One
	// attached without it (a crash between attach and mount in another
	// tool) is cleared now; on one still mounted in another namespace
	// LOOP_CLR_FD only sets autoclear, and the wait below reports it.
	devs, err = loopsBackedUnder(dir)
	if err != nil {
		return err
	}
	for _, d := range devs {
		if err := detachLoop(d); err != nil {
			errs = append(errs, err)
		}
	}
	if left, err := waitLoopsGone(dir, loopSettle); err != nil || len(left) > 0 {
		errs = append(errs, fmt.Errorf("loop devices %v still backed under %s (mounted in another namespace?): %v", left, dir, err))
	}
	return errors.Join(errs...)
}

func readDirN(dir string, n int) ([]os.DirEntry, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	ents, err := f.ReadDir(n)
	if errors.Is(err, io.EOF) {
		err = nil
	}
	return ents, err
}
