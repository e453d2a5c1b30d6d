package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/opencontainers/runtime-spec/specs-go"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
	"github.com/kanga-run/kanga/internal/agent/steps"
	"github.com/kanga-run/kanga/internal/agent/volume"
	"github.com/kanga-run/kanga/internal/hostcontract"
	"github.com/kanga-run/kanga/internal/model"
	"github.com/kanga-run/kanga/internal/tenant"
)

// Persistent volumes on this host (package volume keeps them under
// <data-dir>/volumes). The control plane makes and removes them through
// CreateVolume and RemoveVolume; an instance bound to volumes
// (api.Instance.PersistentVolumes) holds each from its start until its
// teardown: the pvolumes step mounts it at <data-dir>/pvmounts/<uid>/<name>
// and the containers bind that. Encrypted volumes are unlocked with a key
// fetched from the control plane at each mount (the host keeps none).

// Compile-time check: the agent keeps volumes.
var _ hostcontract.VolumeHost = (*Agent)(nil)

// volumeManager is the host's volume.Manager: the one the emptyDirs and
// writable-layer caps use too, on the same root, so that Cleanup's view of
// the root is whole.
func (a *Agent) volumeManager() (*volume.Manager, error) {
	if a.volumes == nil {
		return nil, fmt.Errorf("volume storage is off on host %s (its agent's log says why): %w", a.cfg.HostName, errdefs.ErrUnavailable)
	}
	return a.volumes, nil
}

// CreateVolume makes a persistent volume on this host.
func (a *Agent) CreateVolume(ctx context.Context, id string, size int64, encrypted bool, key []byte) error {
	m, err := a.volumeManager()
	if err != nil {
		return err
	}
	_, err = m.Create(ctx, id, size, encrypted, key)
	return err
}

// RemoveVolume deletes a persistent volume and its data.
func (a *Agent) RemoveVolume(ctx context.Context, id string) error {
	m, err := a.volumeManager()
	if err != nil {
		return err
	}
	if err := m.Remove(ctx, id); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
		return err
	}
	return nil
}

// volumeKey fetches an encrypted volume's key from the control plane.
func (a *Agent) volumeKey(ctx context.Context, id string) ([]byte, error) {
	ks, ok := a.cfg.Store.(hostcontract.VolumeKeySource)
	if !ok {
		return nil, fmt.Errorf("volume %s is encrypted and this host cannot ask the control plane for volume keys: %w", id, errdefs.ErrNotImplemented)
	}
	return ks.VolumeKey(ctx, id)
}

func (a *Agent) pvTarget(uid, name string) string {
	return filepath.Join(a.cfg.DataDir, "pvmounts", uid, name)
}

// restoreVolumes runs before any instance is adopted, after
// cleanupVolumes released the volumes held by instances no longer on this
// host (their data kept): those still held are mounted again where a
// reboot unmounted them.
func (a *Agent) restoreVolumes(ctx context.Context, live map[string]bool) {
	m, err := a.volumeManager()
	if err != nil {
		return // New logged why
	}
	// Cleanup ran with the orphans (cleanupVolumes): the volumes of
	// instances gone are released already.
	if err := m.Restore(ctx, func(id string) ([]byte, error) { return a.volumeKey(ctx, id) }); err != nil {
		a.log.Warn("restoring volume mounts failed", "err", err)
	}
	// pvmounts of instances gone: their mounts went with Cleanup.
	ents, _ := os.ReadDir(filepath.Join(a.cfg.DataDir, "pvmounts"))
	for _, e := range ents {
		if !live[e.Name()] {
			removeEmptyTree(filepath.Join(a.cfg.DataDir, "pvmounts", e.Name()))
		}
	}
}

// removeEmptyTree removes dir and its empty subdirectories; never
// RemoveAll, which would delete a volume's data through a mount left
// behind.
func removeEmptyTree(dir string) {
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		_ = os.Remove(filepath.Join(dir, e.Name()))
	}
	_ = os.Remove(dir)
}

// readOnlyVolume says whether every mount of the instance's volume name
// is read-only, in which case it is mounted read-only for the instance.
func readOnlyVolume(inst *api.Instance, name string) bool {
	ro, mounted := true, false
	for _, v := range inst.Spec.Volumes {
		if v.PersistentVolume == nil || v.PersistentVolume.Name != name {
			continue
		}
		for _, c := range model.AllContainers(&inst.Spec) {
			for _, m := range c.Spec.VolumeMounts {
				if m.Name == v.Name {
					mounted = true
					ro = ro && m.ReadOnly
				}
			}
		}
	}
	return ro && mounted
}

// conflictWait bounds how long a start waits for a volume's previous
// holder to let go of it (its teardown may still be under way).
const conflictWait = time.Minute

// pvolumesStep mounts the instance's persistent volumes for it.
type pvolumesStep struct {
	r    *runner
	inst *api.Instance
}

func (s *pvolumesStep) Name() string { return "pvolumes" }

func (s *pvolumesStep) Do(ctx context.Context) (steps.Undo, error) {
	r := s.r
	if len(s.inst.PersistentVolumes) == 0 {
		return nil, nil
	}
	m, err := r.a.volumeManager()
	if err != nil {
		return nil, err
	}
	var mounted []string
	undo := func(ctx context.Context) error {
		// The sub-path binds into the volumes (subpath.go) first.
		errs := []error{r.a.unmountSubPaths(r.uid)}
		for _, id := range mounted {
			if err := m.Unmount(ctx, id, r.uid); err != nil {
				errs = append(errs, err)
			}
		}
		return errors.Join(errs...)
	}
	for _, b := range s.inst.PersistentVolumes {
		if b.Host != r.a.cfg.HostName {
			err = fmt.Errorf("volume %q is on host %s, not on this host %s", b.Name, b.Host, r.a.cfg.HostName)
		} else {
			err = r.mountVolume(ctx, m, s.inst, b)
		}
		if err != nil {
			if uerr := undo(context.WithoutCancel(ctx)); uerr != nil {
				r.log.Warn("unmounting the volumes of a failed start failed", "err", uerr)
			}
			return nil, fmt.Errorf("volume %q: %w", b.Name, err)
		}
		mounted = append(mounted, b.ID)
	}
	r.mark("pvolumes")
	if !fresh(s.inst) {
		return nil, nil
	}
	return undo, nil
}

// mountVolume mounts volume b for the runner's instance, waiting a while
// for a previous holder's teardown to release it.
func (r *runner) mountVolume(ctx context.Context, m *volume.Manager, inst *api.Instance, b api.BoundVolume) error {
	opts := volume.MountOptions{Holder: r.uid, ReadOnly: readOnlyVolume(inst, b.Name)}
	if b.Encrypted {
		key, err := r.a.volumeKey(tenant.WithName(ctx, r.tenant), b.ID)
		if err != nil {
			return fmt.Errorf("key: %w", err)
		}
		defer clear(key)
		opts.Key = key
	}
	deadline := time.Now().Add(conflictWait)
	for {
		err := m.Mount(ctx, b.ID, r.a.pvTarget(r.uid, b.Name), opts)
		if err == nil && !opts.ReadOnly {
			// A read-only volume keeps its owners: the bind is read-only.
			return r.applyFSGroup(inst, r.a.pvTarget(r.uid, b.Name))
		}
		if err == nil || !errors.Is(err, errdefs.ErrConflict) || time.Now().After(deadline) {
			return err
		}
		r.log.Info("volume still held by its previous instance; waiting", "volume", b.Name, "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// releaseVolumes unmounts the instance's persistent volumes (teardown);
// their data stays.
func (r *runner) releaseVolumes(ctx context.Context, inst *api.Instance) error {
	if len(inst.PersistentVolumes) == 0 {
		return nil
	}
	m, err := r.a.volumeManager()
	if err != nil {
		return err
	}
	var errs []error
	for _, b := range inst.PersistentVolumes {
		// NotFound: removed; Conflict: another instance holds it (this
		// one never got it, its start failed): neither is this one's.
		if err := m.Unmount(ctx, b.ID, r.uid); err != nil && !errors.Is(err, errdefs.ErrNotFound) && !errors.Is(err, errdefs.ErrConflict) {
			errs = append(errs, fmt.Errorf("volume %q: %w", b.Name, err))
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	removeEmptyTree(filepath.Join(r.a.cfg.DataDir, "pvmounts", r.uid))
	return nil
}

// pvSpecMounts are container c's binds of the instance's persistent
// volumes.
func (a *Agent) pvSpecMounts(inst *api.Instance, c api.ContainerSpec) []specs.Mount {
	if len(inst.PersistentVolumes) == 0 {
		return nil
	}
	var out []specs.Mount
	for _, vm := range c.VolumeMounts {
		for _, v := range inst.Spec.Volumes {
			if v.Name != vm.Name || v.PersistentVolume == nil {
				continue
			}
			mode := "rw"
			if vm.ReadOnly {
				mode = "ro"
			}
			out = append(out, specs.Mount{Destination: filepath.Clean(vm.MountPath), Type: "bind",
				Source: a.pvTarget(inst.UID, v.PersistentVolume.Name),
				// rprivate: a mount the tenant makes below the path stays
				// in the container; nosuid, nodev: what the tenant writes
				// there grants nothing when read back.
				Options: []string{"rbind", "rprivate", "nosuid", "nodev", mode}})
		}
	}
	return out
}
