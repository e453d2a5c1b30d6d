package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/containerd/containerd/mount"
	"github.com/moby/sys/mountinfo"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
	"github.com/kanga-run/kanga/internal/hostcontract"
	"github.com/kanga-run/kanga/internal/model"
)

// Secret and config volumes, and env from secrets.
//
// The instance record names the secrets and configs an instance uses,
// never their values: it sits in the store in the clear. At start the
// agent asks the control plane (FileSource) for the files of the
// instance's secret and config volumes and the env of its containers that
// take env from secrets, for this instance and this host only. The env is
// a snapshot taken at start, as Kubernetes takes it; the files follow the
// objects' updates (refreshFiles polls every filesPoll).
//
// The files live on a tmpfs of the instance's own, <sandbox>/files, mode
// 0700 and owned by root, so that a secret never touches the host's disk.
// Each volume is a directory in it laid out as the kubelet's atomic
// writer lays it out:
//
//	files/<volume>/..2026_12_03_06_15_00.123456789/<files>  one version
//	files/<volume>/..data -> ..2026_12_03_06_15_00.123456789
//	files/<volume>/<key> -> ..data/<key>                    (first path element)
//
// An update writes a new version next to the old one and swaps ..data
// with rename(2) of a new symlink over it, so that a reader in the
// container sees either version whole, never a mix. The volume's
// directory is bound read-only into each container that mounts it
// (objectMounts).
//
// The env from secrets is kept off the containers' OCI specs, which
// containerd keeps on disk: see launch.go.

// FileSource answers what the agent needs of the secrets and configs of
// an instance placed on its host (name of the tenant in ctx, and uid):
// the store's host view in the all-in-one, the host link for a joined
// agent.
type FileSource interface {
	InstanceFiles(ctx context.Context, name, uid string) (hostcontract.InstanceFiles, error)
}

// filesPoll is how often a running instance's secret and config volumes
// are compared with their objects.
const filesPoll = 2 * time.Second

// A volume's tmpfs holds at most two versions of it (during a swap); one
// version is at most api.MaxObjectBytes of data in at most
// model.MaxObjectKeys files, each taking at least a page. The size is a
// cap, not a reservation: tmpfs takes memory as files are written.
const (
	filesPerVolume       = 2 * (api.MaxObjectBytes + model.MaxObjectKeys*4096)
	filesInodesPerVolume = 2*(2*model.MaxObjectKeys) + 8
)

// dataLink is the symlink naming a volume's current version.
const dataLink = "..data"

func (a *Agent) filesDir(uid string) string { return filepath.Join(a.sandboxDir(uid), "files") }

// objectVolumes counts the secret and config volumes of spec.
func objectVolumes(spec *api.InstanceSpec) int {
	n := 0
	for _, v := range spec.Volumes {
		if v.Secret != nil || v.Config != nil {
			n++
		}
	}
	return n
}

// needsFiles tells whether starting spec needs the control plane's
// InstanceFiles: it has secret or config volumes, or env from secrets.
func needsFiles(spec *api.InstanceSpec) bool {
	if objectVolumes(spec) > 0 {
		return true
	}
	for _, c := range model.AllContainers(spec) {
		if model.EnvFromSecrets(c.Spec) {
			return true
		}
	}
	return false
}

// instanceFiles asks the control plane for inst's files.
func (r *runner) instanceFiles(ctx context.Context, inst *api.Instance) (hostcontract.InstanceFiles, error) {
	src := r.a.cfg.Files
	if src == nil {
		return hostcontract.InstanceFiles{}, fmt.Errorf("this host has no way to get secrets and configs from the control plane: %w", errdefs.ErrFailedPrecondition)
	}
	return src.InstanceFiles(r.tctx(ctx), inst.Name, inst.UID)
}

// ensureSecretEnv makes sure the runner holds the env from secrets of
// inst's containers, asking the control plane if it does not.
func (r *runner) ensureSecretEnv(ctx context.Context, inst *api.Instance) error {
	if r.secretEnv != nil || !needsFiles(&inst.Spec) {
		return nil
	}
	f, err := r.instanceFiles(ctx, inst)
	if err != nil {
		return fmt.Errorf("getting the instance's secrets and configs: %w", err)
	}
	r.secretEnv = f.Env
	if r.secretEnv == nil {
		r.secretEnv = map[string][]api.EnvVar{}
	}
	return nil
}

// containerEnv is the env of container c: its spec's, or, when it takes
// env from secrets, the one the control plane resolved at start.
func (r *runner) containerEnv(c *ctr) ([]api.EnvVar, error) {
	if !model.EnvFromSecrets(&c.spec) {
		return c.spec.Env, nil
	}
	env, ok := r.secretEnv[c.spec.Name]
	if !ok {
		return nil, fmt.Errorf("container %s takes env from secrets, which the control plane did not resolve: %w", c.spec.Name, errdefs.ErrFailedPrecondition)
	}
	return env, nil
}

// setupFiles gets inst's files and env from secrets and writes its secret
// and config volumes to their tmpfs. It returns whether it mounted the
// tmpfs (then the caller's undo is teardownFiles). An instance an earlier
// agent started keeps the files it has when the control plane cannot be
// reached: its containers already run with them.
func (r *runner) setupFiles(ctx context.Context, inst *api.Instance) (bool, error) {
	if !needsFiles(&inst.Spec) {
		return false, nil
	}
	f, err := r.instanceFiles(ctx, inst)
	if err != nil {
		if !fresh(inst) {
			if ok, _ := mounted(r.a.filesDir(r.uid)); ok {
				r.log.Warn("getting the instance's secrets and configs failed; keeping its files as they are", "err", err)
				return false, nil
			}
		}
		return false, fmt.Errorf("getting the instance's secrets and configs: %w", err)
	}
	r.secretEnv = f.Env
	if r.secretEnv == nil {
		r.secretEnv = map[string][]api.EnvVar{}
	}
	n := objectVolumes(&inst.Spec)
	if n == 0 {
		return false, nil
	}
	dir := r.a.filesDir(r.uid)
	made, err := mountFiles(dir, n)
	if err != nil {
		return false, err
	}
	owner := r.filesOwner(inst)
	for _, v := range f.Volumes {
		if _, err := writeVolume(filepath.Join(dir, v.Name), owner.files(v.Files), owner); err != nil {
			if made {
				if uerr := unmountFiles(dir); uerr != nil {
					r.log.Warn("removing the files of a failed start failed", "err", uerr)
				}
			}
			return false, fmt.Errorf("writing the files of volume %s: %w", v.Name, err)
		}
	}
	return made, nil
}

// refreshFiles brings inst's secret and config volumes up to date with
// their objects every filesPoll until ctx ends. A failure (the control
// plane unreachable, an object deleted, an item's key gone) keeps the
// files as they are, as the kubelet does, and is logged when it changes.
func (r *runner) refreshFiles(ctx context.Context, inst *api.Instance) {
	dir := r.a.filesDir(r.uid)
	owner := r.filesOwner(inst)
	t := time.NewTicker(filesPoll)
	defer t.Stop()
	var last string
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		f, err := r.instanceFiles(ctx, inst)
		if err == nil {
			for _, v := range f.Volumes {
				changed, werr := writeVolume(filepath.Join(dir, v.Name), owner.files(v.Files), owner)
				if werr != nil {
					err = fmt.Errorf("volume %s: %w", v.Name, werr)
					break
				}
				if changed {
					r.log.Info("updated the files of a volume", "volume", v.Name)
				}
			}
		}
		if ctx.Err() != nil {
			return
		}
		if msg := fmt.Sprint(err); err != nil && msg != last {
			r.log.Warn("updating the instance's secret and config files failed; they stay as they are", "err", err)
			last = msg
		} else if err == nil {
			last = ""
		}
	}
}

// mounted says whether dir is a mount point; a missing dir is not.
func mounted(dir string) (bool, error) {
	ok, err := mountinfo.Mounted(dir)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	return ok, err
}

// mountFiles mounts the tmpfs of an instance's n secret and config
// volumes at dir, unless it is there (an earlier agent's); it reports
// whether it mounted it.
func mountFiles(dir string, n int) (bool, error) {
	made, err := mountTmpfs(dir, "kanga-files", n*filesPerVolume, n*filesInodesPerVolume)
	if err != nil {
		return false, fmt.Errorf("mounting the tmpfs of the secret and config files: %w", err)
	}
	return made, nil
}

// mountTmpfs mounts a tmpfs named source of size bytes and inodes files,
// root's alone (mode 0700), at dir, unless one is there; it reports
// whether it mounted it.
func mountTmpfs(dir, source string, size, inodes int) (bool, error) {
	if ok, err := mounted(dir); err != nil || ok {
		return false, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return false, err
	}
	m := mount.Mount{Type: "tmpfs", Source: source, Options: []string{
		"mode=0700", "uid=0", "gid=0", "nodev", "nosuid",
		fmt.Sprintf("size=%d", size), fmt.Sprintf("nr_inodes=%d", inodes),
	}}
	if err := m.Mount(dir); err != nil {
		return false, err
	}
	return true, nil
}

// unmountFiles takes the tmpfs of an instance's files off dir, if it is
// mounted, and removes dir. MNT_DETACH: a container still holding a bind
// of it does not keep the host path busy; the kernel frees the tmpfs with
// its last user.
func unmountFiles(dir string) error {
	// Stacked mounts (two agents raced, or a test) come off one by one.
	for range 8 {
		ok, err := mounted(dir)
		if err != nil {
			return err
		}
		if !ok {
			return os.RemoveAll(dir)
		}
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			return fmt.Errorf("unmounting %s: %w", dir, err)
		}
	}
	return fmt.Errorf("unmounting %s: still mounted: %w", dir, errdefs.ErrUnavailable)
}

// writeVolume brings the volume laid out at dir to files, as the
// kubelet's atomic writer does: unless the current version already is
// files, it writes a new version into a fresh timestamped directory,
// points ..data at it by rename(2) of a new symlink, adds the top-level
// links the new version needs, and then removes the links and the version
// it no longer needs. owner, if not -1, owns the files (the container's
// root in a user namespace). It reports whether it changed anything.
func writeVolume(dir string, files []hostcontract.File, owner fileOwner) (bool, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return false, err
	}
	old, err := os.Readlink(filepath.Join(dir, dataLink))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, err
	}
	if old != "" && sameVersion(filepath.Join(dir, old), files) {
		return false, nil
	}
	ts, err := os.MkdirTemp(dir, time.Now().UTC().Format("..2006_01_02_15_04_05."))
	if err != nil {
		return false, err
	}
	if err := writeVersion(ts, files, owner); err != nil {
		_ = os.RemoveAll(ts)
		return false, err
	}
	tmp := filepath.Join(dir, "..data_tmp")
	_ = os.Remove(tmp)
	if err := os.Symlink(filepath.Base(ts), tmp); err != nil {
		_ = os.RemoveAll(ts)
		return false, err
	}
	if err := os.Rename(tmp, filepath.Join(dir, dataLink)); err != nil {
		_ = os.Remove(tmp)
		_ = os.RemoveAll(ts)
		return false, err
	}
	tops := topNames(files)
	for _, n := range tops {
		p := filepath.Join(dir, n)
		if _, err := os.Lstat(p); err == nil {
			continue
		}
		if err := os.Symlink(path.Join(dataLink, n), p); err != nil {
			return true, err
		}
	}
	// What the old version had and the new one has not: its links, the
	// old version, and any version an agent killed mid-write left.
	ents, err := os.ReadDir(dir)
	if err != nil {
		return true, err
	}
	for _, e := range ents {
		n := e.Name()
		if n == dataLink || n == filepath.Base(ts) || slices.Contains(tops, n) {
			continue
		}
		if err := os.RemoveAll(filepath.Join(dir, n)); err != nil {
			return true, err
		}
	}
	return true, nil
}

// writeVersion writes files under the new version's directory ts.
func writeVersion(ts string, files []hostcontract.File, owner fileOwner) error {
	// MkdirTemp makes it 0700; the container's user, whoever it is,
	// reads through it, as through the volume's other directories.
	if err := os.Chmod(ts, 0o755); err != nil {
		return err
	}
	chown := func(p string) error {
		if owner.uid < 0 && owner.gid < 0 {
			return nil
		}
		return os.Lchown(p, owner.uid, owner.gid)
	}
	if err := chown(ts); err != nil {
		return err
	}
	for _, f := range files {
		if !filepath.IsLocal(f.Path) {
			// The control plane cleans and validates paths; a host does
			// not write outside the volume whatever it is sent.
			return fmt.Errorf("file path %q is not inside the volume: %w", f.Path, errdefs.ErrInvalidArgument)
		}
		p := filepath.Join(ts, f.Path)
		if d := filepath.Dir(p); d != ts {
			if err := os.MkdirAll(d, 0o755); err != nil {
				return err
			}
			for q := d; q != ts; q = filepath.Dir(q) {
				if err := chown(q); err != nil {
					return err
				}
			}
		}
		if err := os.WriteFile(p, f.Data, 0o600); err != nil {
			return err
		}
		// Explicitly: WriteFile's mode passes through the umask.
		if err := os.Chmod(p, fs.FileMode(f.Mode&0o777)); err != nil {
			return err
		}
		if err := chown(p); err != nil {
			return err
		}
	}
	return nil
}

// fileOwner owns the files of a secret or config volume: the container's
// root in a user namespace (uid and gid UserNSBase), or the host's root;
// the group is the instance's fsGroup when it has one. -1 leaves the id
// as the agent's.
type fileOwner struct {
	uid, gid int
	fsGroup  bool
}

// filesOwner is the owner of inst's secret and config files.
func (r *runner) filesOwner(inst *api.Instance) fileOwner {
	o := fileOwner{uid: -1, gid: -1}
	if r.a.usesUserNS(inst.Spec.Runtime) {
		o.uid, o.gid = UserNSBase, UserNSBase
	}
	if sc := inst.Spec.SecurityContext; sc != nil && sc.FSGroup != nil {
		o.fsGroup = true
		o.gid = int(*sc.FSGroup)
		if r.a.usesUserNS(inst.Spec.Runtime) {
			o.gid += UserNSBase // past the range, the container cannot take the group and does not start
		}
	}
	return o
}

// files are the files as written for o: with an fsGroup, the group may
// read each one (the kubelet adds 0440 to a secret's files for it), so a
// container's non-root user in that group reads a file whose mode
// (defaultMode 0400) would otherwise keep it to root.
func (o fileOwner) files(fs []hostcontract.File) []hostcontract.File {
	if !o.fsGroup {
		return fs
	}
	out := make([]hostcontract.File, len(fs))
	for i, f := range fs {
		f.Mode |= 0o440
		out[i] = f
	}
	return out
}

// sameVersion tells whether the version at ts holds exactly files, with
// their modes.
func sameVersion(ts string, files []hostcontract.File) bool {
	n := 0
	err := filepath.WalkDir(ts, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			n++
		}
		return err
	})
	if err != nil || n != len(files) {
		return false
	}
	for _, f := range files {
		p := filepath.Join(ts, f.Path)
		st, err := os.Lstat(p)
		if err != nil || !st.Mode().IsRegular() || uint32(st.Mode().Perm()) != f.Mode&0o777 {
			return false
		}
		b, err := os.ReadFile(p)
		if err != nil || !bytes.Equal(b, f.Data) {
			return false
		}
	}
	return true
}

// topNames are the distinct first elements of the files' paths: what the
// top-level links of a volume point at in ..data.
func topNames(files []hostcontract.File) []string {
	var out []string
	for _, f := range files {
		n, _, _ := strings.Cut(filepath.ToSlash(f.Path), "/")
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out
}

// objectMounts are the bind mounts of inst's secret and config volumes
// into container c, from their directories under dir (the instance's
// files tmpfs). They are read-only whatever the mount asks: nothing a
// container writes there would reach the object, and the next update
// would undo it. Other kinds of volumes are not this function's.
func objectMounts(dir string, spec *api.InstanceSpec, c *api.ContainerSpec) []specs.Mount {
	var out []specs.Mount
	for _, vm := range c.VolumeMounts {
		i := slices.IndexFunc(spec.Volumes, func(v api.Volume) bool { return v.Name == vm.Name })
		if i < 0 || (spec.Volumes[i].Secret == nil && spec.Volumes[i].Config == nil) {
			continue
		}
		out = append(out, specs.Mount{
			Destination: path.Clean(vm.MountPath), Type: "bind", Source: filepath.Join(dir, vm.Name),
			Options: []string{"rbind", "ro", "nosuid", "nodev"},
		})
	}
	return out
}
