package agent

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/moby/sys/mountinfo"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
)

// Volume mounts with a subPath.
//
// A container may have planted a symlink in a volume (an emptyDir, a
// persistent volume) pointing anywhere: "data -> /" or "data -> ../../..".
// Handing the runtime <volume>/<subPath> as a bind source would have it
// follow that link on the host. So the agent resolves the sub-path itself
// with openat2(RESOLVE_IN_ROOT), which resolves every symlink and ".." as
// if the volume's directory were "/", binds the file it opened, through
// /proc/self/fd/N, onto a mount point of its own under the sandbox
// (subpaths/<container>/<index>), and gives the runtime that mount
// point: what the container sees is inside the volume whatever the
// volume holds. A missing sub-path of an emptyDir or persistent volume is
// made a directory, component by component with mkdirat under a
// directory opened the same way, as the kubelet makes it.
//
// A secret or config file mounted by subPath is the file of the version
// current at container start: later updates swap ..data, not the bound
// file (as in Kubernetes).

func (a *Agent) subPathDir(uid string) string { return filepath.Join(a.sandboxDir(uid), "subpaths") }

// subPathTarget is the mount point of the i-th volume mount of container.
func (a *Agent) subPathTarget(uid, container string, i int) string {
	return filepath.Join(a.subPathDir(uid), container, strconv.Itoa(i))
}

// mountsOf are container c's volume mounts, each with its volume's host
// directory as source.
func (r *runner) mountsOf(inst *api.Instance, c api.ContainerSpec) []specs.Mount {
	ms := volumeMounts(c, r.volumePaths)
	ms = append(ms, objectMounts(r.a.filesDir(r.uid), &inst.Spec, &c)...)
	return append(ms, r.a.pvSpecMounts(inst, c)...)
}

// withSubPaths points the mounts of ms that c makes with a subPath at
// their mount points under the sandbox, which bindSubPaths fills before
// each task of c: the sub-path is resolved when the container starts,
// after the init containers ran, as the kubelet resolves it.
func (r *runner) withSubPaths(c api.ContainerSpec, ms []specs.Mount) []specs.Mount {
	for i, vm := range c.VolumeMounts {
		if vm.SubPath == "" {
			continue
		}
		dest := filepath.Clean(vm.MountPath)
		if j := slices.IndexFunc(ms, func(m specs.Mount) bool { return m.Destination == dest }); j >= 0 {
			ms[j].Source = r.a.subPathTarget(r.uid, c.Name, i)
		}
	}
	return ms
}

// bindSubPaths binds each sub-path container c mounts onto its mount
// point (see above). A missing sub-path of an emptyDir or persistent
// volume is made a directory; of a secret or config volume, the agent's
// own files, it is an error.
func (r *runner) bindSubPaths(inst *api.Instance, c api.ContainerSpec) error {
	if !slices.ContainsFunc(c.VolumeMounts, func(vm api.VolumeMount) bool { return vm.SubPath != "" }) {
		return nil
	}
	ms := r.mountsOf(inst, c)
	for i, vm := range c.VolumeMounts {
		if vm.SubPath == "" {
			continue
		}
		dest := filepath.Clean(vm.MountPath)
		j := slices.IndexFunc(ms, func(m specs.Mount) bool { return m.Destination == dest })
		if j < 0 {
			continue
		}
		k := slices.IndexFunc(inst.Spec.Volumes, func(v api.Volume) bool { return v.Name == vm.Name })
		create := k >= 0 && inst.Spec.Volumes[k].Secret == nil && inst.Spec.Volumes[k].Config == nil
		if err := bindSubPath(ms[j].Source, vm.SubPath, r.a.subPathTarget(r.uid, c.Name, i), create); err != nil {
			return fmt.Errorf("volumeMounts[%d] %s subPath %q: %w", i, vm.Name, vm.SubPath, err)
		}
	}
	return nil
}

// resolveInRoot is how a sub-path is opened under its volume's root.
const resolveInRoot = unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS

// openInRoot opens p under the directory rootFD as if it were "/".
func openInRoot(rootFD int, p string, flags uint64) (int, error) {
	for {
		fd, err := unix.Openat2(rootFD, p, &unix.OpenHow{Flags: flags | unix.O_CLOEXEC, Resolve: resolveInRoot})
		if err == unix.EINTR || err == unix.EAGAIN {
			continue
		}
		return fd, err
	}
}

// bindSubPath binds sub, resolved inside root, onto target (created as a
// file or directory to match). create makes a missing sub-path a
// directory. A target already mounted (the container restarted, or the
// agent did) is left as it is.
func bindSubPath(root, sub, target string, create bool) error {
	if ok, err := mountinfo.Mounted(target); err == nil && ok {
		return nil
	}
	rootFD, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("opening the volume: %w", err)
	}
	defer unix.Close(rootFD)
	fd, err := openInRoot(rootFD, sub, unix.O_PATH)
	if errors.Is(err, unix.ENOENT) && create {
		if err = mkdirInRoot(rootFD, sub); err == nil {
			fd, err = openInRoot(rootFD, sub, unix.O_PATH)
		}
	}
	if errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("no such file or directory in the volume: %w", errdefs.ErrInvalidArgument)
	}
	if err != nil {
		return fmt.Errorf("resolving it inside the volume: %w", err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(target), 0o700); err != nil {
		return err
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		err = os.Mkdir(target, 0o755)
	case unix.S_IFREG:
		var f *os.File
		if f, err = os.OpenFile(target, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644); err == nil {
			err = f.Close()
		}
	default:
		// A device node or socket a container made: binding it would
		// grant nothing (nodev) but is no volume content either.
		return fmt.Errorf("it is neither a file nor a directory: %w", errdefs.ErrInvalidArgument)
	}
	if err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	// Bind what fd is, not a path: nothing a container does between the
	// open and the mount can redirect it.
	if err := unix.Mount("/proc/self/fd/"+strconv.Itoa(fd), target, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("binding it: %w", err)
	}
	return nil
}

// mkdirInRoot makes the missing directories of p under rootFD, each with
// mkdirat in its parent as opened inside the root: a symlink on the way
// is resolved inside the root, and mkdirat does not follow one at the
// last element.
func mkdirInRoot(rootFD int, p string) error {
	parts := strings.Split(p, "/")
	for i := range parts {
		if err := existsInRoot(rootFD, strings.Join(parts[:i+1], "/")); err == nil {
			continue
		} else if !errors.Is(err, unix.ENOENT) {
			return err
		}
		parent := "."
		if i > 0 {
			parent = strings.Join(parts[:i], "/")
		}
		pfd, err := openInRoot(rootFD, parent, unix.O_PATH|unix.O_DIRECTORY)
		if err != nil {
			return err
		}
		err = unix.Mkdirat(pfd, parts[i], 0o755)
		unix.Close(pfd)
		if err != nil && !errors.Is(err, unix.EEXIST) {
			return err
		}
	}
	return nil
}

func existsInRoot(rootFD int, p string) error {
	fd, err := openInRoot(rootFD, p, unix.O_PATH)
	if err == nil {
		unix.Close(fd)
	}
	return err
}

// unmountSubPaths takes the sub-path binds of instance uid off and
// removes their mount points; before its volumes are unmounted, which the
// binds would otherwise keep busy.
func (a *Agent) unmountSubPaths(uid string) error {
	dir := a.subPathDir(uid)
	infos, err := mountinfo.GetMounts(mountinfo.PrefixFilter(dir))
	if err != nil {
		return err
	}
	var errs []error
	for _, m := range infos {
		if err := unix.Unmount(m.Mountpoint, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("unmounting %s: %w", m.Mountpoint, err))
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	return os.RemoveAll(dir)
}
