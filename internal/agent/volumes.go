package agent

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/mount"
	"github.com/moby/sys/mountinfo"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
	"github.com/kanga-run/kanga/internal/agent/steps"
	"github.com/kanga-run/kanga/internal/agent/volume"
	"github.com/kanga-run/kanga/internal/model"
)

// The instance's storage on the host (package volume): its disk
// (resources.disk) and emptyDirs, made by the volumes step before the
// containers that mount them; each container's writable layer is a
// directory of the disk, bound under the container's snapshot between
// its creation and its task's. The disk holds the writable layers of all
// the containers, the disk emptyDirs without a sizeLimit and the logs: one
// kernel-enforced filesystem, so that together they stop at the limit
// with ENOSPC. A memory emptyDir, or a disk one with a sizeLimit, is a
// filesystem of its own of that size.
//
// Warm containers have neither: their mounts and rootfs are fixed before
// the instance exists, so an instance with volumes or a disk cap starts
// the usual way (takeWarm).

// volumesStep makes the instance's emptyDirs and records the host path of
// each in r.volumePaths, which volumeMounts binds into the containers. A
// new source (a persistent volume) is one more case here, its path in the
// same map, its teardown in the same undo.
type volumesStep struct {
	r    *runner
	inst *api.Instance
}

func (s *volumesStep) Name() string { return "volumes" }

func (s *volumesStep) Do(ctx context.Context) (steps.Undo, error) {
	r, spec := s.r, &s.inst.Spec
	paths := map[string]string{}
	var teardowns []func(context.Context) error
	undo := func(ctx context.Context) error {
		// The sub-path binds into the emptyDirs (subpath.go) first.
		errs := []error{r.a.unmountSubPaths(r.uid)}
		for i := len(teardowns) - 1; i >= 0; i-- {
			errs = append(errs, teardowns[i](ctx))
		}
		r.volumePaths = nil
		return errors.Join(errs...)
	}
	fail := func(err error) (steps.Undo, error) {
		if ctx.Err() == nil && fresh(s.inst) {
			if uerr := undo(context.WithoutCancel(ctx)); uerr != nil {
				r.log.Warn("removing the emptyDirs of a failed start failed", "err", uerr)
			}
		}
		return nil, err
	}
	// The instance's disk first: its writable layers (containers step)
	// and its disk emptyDirs without a sizeLimit go on it, and its
	// teardown, last in the undo, takes them all down.
	disk := r.res.Disk
	if disk > 0 {
		if r.a.volumes == nil {
			return fail(fmt.Errorf("spec.resources.disk: host %s has no volume storage (see the agent's log): %w", r.a.cfg.HostName, errdefs.ErrUnavailable))
		}
		teardown, err := r.a.volumes.InstanceDisk(ctx, r.uid, disk)
		if err != nil {
			return fail(fmt.Errorf("spec.resources.disk: %w", err))
		}
		teardowns = append(teardowns, func(ctx context.Context) error {
			r.a.forgetLogs(r.a.logDir(r.uid)) // open log files would keep the disk busy
			return teardown(ctx)
		})
		// The logs count in the disk too (the log caps still apply).
		if err := r.a.volumes.DiskLogs(ctx, r.uid, r.a.logDir(r.uid)); errors.Is(err, errdefs.ErrFailedPrecondition) {
			r.log.Warn("the instance's logs stay outside its disk", "err", err)
		} else if err != nil {
			return fail(fmt.Errorf("spec.resources.disk: putting the logs on the disk: %w", err))
		}
	}
	for i, v := range spec.Volumes {
		if v.EmptyDir == nil {
			continue
		}
		if r.a.volumes == nil {
			return fail(fmt.Errorf("spec.volumes[%d]: host %s has no volume storage (see the agent's log): %w", i, r.a.cfg.HostName, errdefs.ErrUnavailable))
		}
		size, err := model.EmptyDirSize(spec, v.EmptyDir, fmt.Sprintf("spec.volumes[%d].emptyDir", i))
		if err != nil {
			return fail(err)
		}
		var path string
		var teardown func(context.Context) error
		if onDisk(spec, v.EmptyDir) {
			path, teardown, err = r.a.volumes.DiskEmptyDir(ctx, r.uid, v.Name, disk)
		} else {
			path, teardown, err = r.a.volumes.EmptyDir(ctx, r.uid, v.Name, volume.Medium(v.EmptyDir.Medium), size)
		}
		if err != nil {
			return fail(fmt.Errorf("emptyDir %s: %w", v.Name, err))
		}
		paths[v.Name] = path
		teardowns = append(teardowns, teardown)
		if err := r.applyFSGroup(s.inst, path); err != nil {
			return fail(fmt.Errorf("emptyDir %s: %w", v.Name, err))
		}
	}
	r.volumePaths = paths
	r.mark("volumes")
	if len(teardowns) == 0 || !fresh(s.inst) {
		return nil, nil
	}
	return undo, nil
}

// onDisk tells whether emptyDir e of spec is a directory of the
// instance's disk, counted in its disk limit: a disk emptyDir without a
// sizeLimit of its own in an instance with a disk limit. One with a
// sizeLimit keeps a filesystem of that size.
func onDisk(spec *api.InstanceSpec, e *api.EmptyDirVolumeSource) bool {
	return spec.Resources.Disk != "" && e.Medium == api.MediumDefault && e.SizeLimit == ""
}

// applyFSGroup gives a volume's files at host path dir to the
// instance's fsGroup (spec.securityContext.fsGroup), if it has one: the
// group as the containers see it, a host id of the user-namespace range
// when they run in one.
func (r *runner) applyFSGroup(inst *api.Instance, dir string) error {
	sc := inst.Spec.SecurityContext
	if sc == nil || sc.FSGroup == nil {
		return nil
	}
	gid := *sc.FSGroup
	if r.a.usesUserNS(inst.Spec.Runtime) {
		if gid >= UserNSSize {
			return fmt.Errorf("spec.securityContext.fsGroup %d: containers of runtime %s on host %s run in a user namespace of ids 0-%d: %w",
				gid, inst.Spec.Runtime, r.a.cfg.HostName, UserNSSize-1, errdefs.ErrInvalidArgument)
		}
		gid += UserNSBase
	}
	if err := volume.SetGroupOwnership(dir, int(gid)); err != nil {
		return fmt.Errorf("giving it to fsGroup %d: %w", *sc.FSGroup, err)
	}
	return nil
}

// volumeMounts are the OCI mounts of container c for the volumes with a
// host path in paths (those the volumes step made), in the order of its
// volumeMounts; other volumes (secret, config files) are mounted by their
// own code.
func volumeMounts(c api.ContainerSpec, paths map[string]string) []specs.Mount {
	var out []specs.Mount
	for _, m := range c.VolumeMounts {
		src, ok := paths[m.Name]
		if !ok {
			continue
		}
		mode := "rw"
		if m.ReadOnly {
			mode = "ro"
		}
		out = append(out, specs.Mount{
			Destination: filepath.Clean(m.MountPath), Type: "bind", Source: src,
			// rprivate: a mount the tenant makes below the path stays in
			// the container; nosuid, nodev: what the tenant writes there
			// grants nothing on the way back in.
			Options: []string{"rbind", "rprivate", "nosuid", "nodev", mode},
		})
	}
	return out
}

// limitWritableLayer puts a filesystem of the instance's disk limit under
// the writable layer of container c, just created with its snapshot: the
// shim mounts the rootfs overlay when the task is created, and the
// overlay's upper and work directories must then already be on it.
//
// It is idempotent: for a container an earlier agent created (and may have
// died before capping), it caps the layer if it is not yet, and fails if
// the layer already holds files it would hide.
func (r *runner) limitWritableLayer(ctx context.Context, spec *api.InstanceSpec, c *ctr, snapshotter, snapshotKey string) error {
	size := r.res.Disk
	if spec.Resources.Disk == "" {
		return nil
	}
	if r.a.volumes == nil {
		return fmt.Errorf("spec.resources.disk: host %s has no volume storage (see the agent's log): %w", r.a.cfg.HostName, errdefs.ErrUnavailable)
	}
	mounts, err := r.a.cfg.Client.SnapshotService(snapshotter).Mounts(ctx, snapshotKey)
	if err != nil {
		return fmt.Errorf("reading the mounts of snapshot %s: %w", snapshotKey, err)
	}
	dir, err := snapshotDir(mounts)
	if err != nil {
		return fmt.Errorf("spec.resources.disk: %w", err)
	}
	if _, err := r.a.volumes.ContainerWritableLayer(ctx, r.uid, c.spec.Name, dir, size); err != nil {
		return fmt.Errorf("capping the writable layer at %s: %w", spec.Resources.Disk, err)
	}
	r.mark("writable-layer")
	return nil
}

// snapshotDir is the directory of an overlay snapshot, which holds its
// upper (fs) and work directories, from the mounts the snapshotter gives
// for it: an overlay with upperdir=<dir>/fs, or, for an image without
// layers, a bind of <dir>/fs.
func snapshotDir(mounts []mount.Mount) (string, error) {
	for _, m := range mounts {
		switch m.Type {
		case "overlay":
			for _, o := range m.Options {
				if up, ok := strings.CutPrefix(o, "upperdir="); ok {
					return filepath.Dir(up), nil
				}
			}
		case "bind":
			if filepath.Base(m.Source) == "fs" {
				return filepath.Dir(m.Source), nil
			}
		}
	}
	return "", fmt.Errorf("the snapshot has no writable overlay directory (snapshotter not overlayfs?): %w", errdefs.ErrFailedPrecondition)
}

// limitExistingLayer is limitWritableLayer for a container an earlier
// agent created.
func (r *runner) limitExistingLayer(ctx context.Context, spec *api.InstanceSpec, c *ctr, existing containerd.Container) error {
	if spec.Resources.Disk == "" {
		return nil
	}
	info, err := existing.Info(ctx, containerd.WithoutRefreshedMetadata)
	if err != nil {
		return err
	}
	return r.limitWritableLayer(ctx, spec, c, info.Snapshotter, info.SnapshotKey)
}

// removeWritableLayer unmounts and deletes the filesystem under the
// writable layer of container c, if it has one: after its task is
// deleted, before its snapshot is (whose removal would fail on the mount
// point).
func (a *Agent) removeWritableLayer(ctx context.Context, c containerd.Container) error {
	if a.volumes == nil {
		return nil
	}
	info, err := c.Info(ctx, containerd.WithoutRefreshedMetadata)
	if err != nil {
		return err
	}
	uid, name := info.Labels[labelUID], info.Labels[labelContainer]
	if uid == "" || name == "" || isWarmLabelled(info.Labels) {
		return nil
	}
	return a.volumes.RemoveWritableLayer(ctx, uid, name)
}

// removeVolumes removes the instance's emptyDirs (and what is left of
// its writable-layer filesystems), from the records on disk, so that it
// works after an agent restart as well.
func (a *Agent) removeVolumes(ctx context.Context, uid string) error {
	if a.volumes == nil {
		return nil
	}
	// The logs of an instance with a disk are on it: their open files
	// would keep it busy.
	a.forgetLogs(a.logDir(uid))
	return a.volumes.RemoveEmptyDirs(ctx, uid)
}

// cleanupVolumes removes the emptyDirs and writable-layer filesystems of
// instances that are gone (a killed agent's leftovers): after the orphaned
// containers are removed, before any instance is adopted.
func (a *Agent) cleanupVolumes(ctx context.Context, known map[string]bool) {
	if a.volumes == nil {
		return
	}
	if err := a.volumes.Cleanup(ctx, func(uid string) bool { return known[uid] }); err != nil {
		a.log.Warn("removing the storage of gone instances failed", "err", err)
	}
}

// hasStorage tells whether inst needs storage a warm container cannot
// have: volumes (mounted at container creation) or a writable-layer cap.
func hasStorage(spec api.InstanceSpec) bool {
	return len(spec.Volumes) > 0 || spec.Resources.Disk != ""
}

// storageStats reads how full the instance's emptyDirs and capped
// writable layers are (statfs of each filesystem); what is not there (not
// started yet, or removed) is left out. For `kanga stats` and `kanga sla`,
// never on the sampler's path.
func (a *Agent) storageStats(ctx context.Context, inst *api.Instance) []api.StorageStats {
	if a.volumes == nil {
		return nil
	}
	var out []api.StorageStats
	add := func(st api.StorageStats, path string) {
		if ok, err := isMountPoint(path); err != nil || !ok {
			return
		}
		u, err := volume.UsageOf(path)
		if err != nil {
			return
		}
		st.Size, st.Used = uint64(u.Used+u.Available), uint64(u.Used)
		out = append(out, st)
	}
	for i, v := range inst.Spec.Volumes {
		if v.EmptyDir == nil {
			continue
		}
		size, err := model.EmptyDirSize(&inst.Spec, v.EmptyDir, fmt.Sprintf("spec.volumes[%d].emptyDir", i))
		if err != nil {
			continue
		}
		add(api.StorageStats{Name: v.Name, Kind: api.StorageEmptyDir, Medium: v.EmptyDir.Medium, Limit: uint64(size)},
			a.volumes.EmptyDirPath(inst.UID, v.Name))
	}
	if limit := a.resourcesOf(inst).Disk; limit > 0 {
		add(api.StorageStats{Name: "disk", Kind: api.StorageDisk, Limit: uint64(limit)}, a.volumes.DiskPath(inst.UID))
	}
	return out
}

// isMountPoint tells whether path is where a filesystem is mounted: the
// statfs of a plain directory would be the host's disk.
func isMountPoint(path string) (bool, error) { return mountinfo.Mounted(path) }

// storageItems are the SLA items of the instance's size-limited
// filesystems: the promise is the size; it is kept when the kernel's
// filesystem holds no more than that (the format leaves it within a
// fraction of a percent above: 1% is allowed), so a writer past the limit
// gets ENOSPC.
func storageItems(sts []api.StorageStats) []api.SLAItem {
	items := make([]api.SLAItem, 0, len(sts))
	for _, st := range sts {
		item := api.SLAItem{
			Resource:  "disk",
			Promised:  fmt.Sprintf("at most %s in the writable layer of %s", bytesSize(float64(st.Limit)), st.Name),
			Delivered: fmt.Sprintf("%s used, the filesystem holds %s", bytesSize(float64(st.Used)), bytesSize(float64(st.Size))),
			Kept:      st.Size <= st.Limit+st.Limit/100 && st.Size+st.Limit/100 >= st.Limit,
		}
		if st.Kind == api.StorageDisk {
			item.Promised = fmt.Sprintf("at most %s of ephemeral storage: the writable layers and the disk emptyDirs without a sizeLimit", bytesSize(float64(st.Limit)))
		}
		if st.Kind == api.StorageEmptyDir {
			item.Resource = "emptyDir"
			item.Promised = fmt.Sprintf("at most %s in emptyDir %s", bytesSize(float64(st.Limit)), st.Name)
			if st.Medium == api.MediumMemory {
				item.Promised += " (memory)"
			}
		}
		if !item.Kept {
			item.Detail = fmt.Sprintf("the kernel's filesystem holds %s, not the promised %s", bytesSize(float64(st.Size)), bytesSize(float64(st.Limit)))
		}
		items = append(items, item)
	}
	return items
}
