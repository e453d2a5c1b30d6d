package volume

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/kanga-run/kanga/errdefs"
)

// Cleanup removes what a killed agent (kill -9, host crash) left behind
// for instances that are gone: live says whether a holder (an instance
// id) still runs. For every other instance it unmounts its emptyDirs and
// writable-layer filesystem, wherever mounted, detaches their loop
// devices and deletes them; it releases (unmounts) the volumes such a
// holder had claimed, keeping their data; it deletes volumes a crash left
// half-made; and it detaches any loop device still backed by a file under
// the root that nothing mounts. A nil live means no instance runs. Call it
// when the agent starts, then Restore.
func (m *Manager) Cleanup(ctx context.Context, live func(holder string) bool) error {
	if live == nil {
		live = func(string) bool { return false }
	}
	var errs []error

	insts, err := os.ReadDir(filepath.Join(m.root, "empty"))
	if err != nil {
		return err
	}
	for _, e := range insts {
		if live(e.Name()) {
			continue
		}
		unlock := m.locks.lock("instance/" + e.Name())
		err := m.removeScratch(ctx, m.instanceDir(e.Name()))
		unlock()
		if err != nil {
			errs = append(errs, fmt.Errorf("instance %s: %w", e.Name(), err))
			continue
		}
		m.log.InfoContext(ctx, "emptyDirs of a gone instance removed", "instance", e.Name())
	}

	vols, err := os.ReadDir(filepath.Join(m.root, "volumes"))
	if err != nil {
		return err
	}
	for _, e := range vols {
		if err := m.cleanupVolume(ctx, e.Name(), live); err != nil {
			errs = append(errs, fmt.Errorf("volume %s: %w", e.Name(), err))
		}
	}

	// Anything else attached from under the root. LOOP_CLR_FD detaches a
	// device nothing uses; on one still mounted (a live instance's) it
	// only sets autoclear, which the mounts made here have already.
	devs, err := loopsBackedUnder(m.root)
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	for _, d := range devs {
		if err := detachLoop(d); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// cleanupVolume releases volume name if its holder is gone, or deletes it
// if a crash left it half-made.
func (m *Manager) cleanupVolume(ctx context.Context, name string, live func(string) bool) error {
	defer m.locks.lock("volume/" + name)()
	v, err := m.load(name)
	if errors.Is(err, errdefs.ErrNotFound) {
		// No volume.json: Create died half-way.
		if err := unmountBacked(m.volDir(name), true); err != nil {
			return err
		}
		if err := os.RemoveAll(m.volDir(name)); err != nil {
			return err
		}
		m.log.InfoContext(ctx, "half-made volume removed", "volume", name)
		return nil
	}
	if err != nil {
		return err
	}
	if v.Holder != nil && live(v.Holder.ID) {
		return nil
	}
	if v.Holder != nil {
		// The holder's target first: it is a bind of the fs dir.
		if err := unmountAll(v.Holder.Target, true); err != nil {
			return err
		}
	}
	if err := unmountBacked(m.volDir(name), true); err != nil {
		return err
	}
	if v.Holder == nil {
		return nil
	}
	if err := os.Remove(filepath.Join(m.volDir(name), "holder.json")); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	m.log.InfoContext(ctx, "volume of a gone holder released", "volume", name, "holder", v.Holder.ID)
	return nil
}
