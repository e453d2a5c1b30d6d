// Stop and teardown: stopping an instance's containers (preStop hook, the
// image's stop signal, SIGKILL after the grace period) and removing
// everything of the instance from this host once it is deleted or
// auto-removed (containers, sub-path binds, volumes, network or its
// return to the pool, cgroups, files), retried until it is all gone, the
// record last.

package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/containerd"
	cerrdefs "github.com/containerd/containerd/errdefs"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
	"github.com/kanga-run/kanga/internal/agent/pool"
	"github.com/kanga-run/kanga/internal/agent/warm"
	"github.com/kanga-run/kanga/internal/model"
	"github.com/kanga-run/kanga/internal/tenant"
)

// stop runs each running container's preStop hook, then sends it its
// image's stop signal (SIGTERM unless the image's STOPSIGNAL says
// otherwise), and SIGKILL after grace.
func (r *runner) stop(ctx context.Context, gracePtr *int) {
	r.stopping = true
	inst, _ := r.snapshot()
	grace := model.StopGrace(&inst.Spec)
	if gracePtr != nil {
		grace = *gracePtr
	}
	for _, c := range r.all() {
		c.restartAt = time.Time{}
		// A stopping container is not ready, and no probe kills it.
		r.stopProbes(c)
		c.status.Ready = false
		if c.status.State == api.ContainerRunning && c.task != nil {
			r.stopContainer(ctx, c, time.Duration(grace)*time.Second)
		}
	}
	if !r.initDone {
		// Stopped while initialising: what has not run will not, and
		// ends without having run, so the instance ends too.
		for _, c := range r.all() {
			if c.status.State == api.ContainerWaiting {
				c.status.State = api.ContainerTerminated
				c.status.Reason = "Stopped"
			}
		}
	}
	r.killAt = time.Now().Add(time.Duration(grace) * time.Second)
	r.event("Normal", "Stopping", "sent the stop signal (SIGTERM unless the image says otherwise); SIGKILL in %ds", grace)
}

// killNow sends c SIGKILL at the end of its grace period, unless its
// preStop hook is still running: that hook is cut short, and the
// container gets its stop signal and a last preStopMinGrace, as from
// the kubelet.
func (r *runner) killNow(ctx context.Context, c *ctr, why string) {
	if c.hookRunning == preStop {
		r.event("Warning", "FailedPreStopHook", "PreStop hook %s of container %s did not end within the grace period", model.HookDescription(hook(c, preStop)), c.spec.Name)
		r.cancelHook(c)
		r.signalStop(ctx, c)
		c.killAt = time.Now().Add(preStopMinGrace)
		return
	}
	r.event("Normal", "Killing", "container %s %s: sending SIGKILL", c.spec.Name, why)
	_ = c.task.Kill(r.tctx(ctx), syscall.SIGKILL)
}

// waitForDelete parks a finished runner until the instance is deleted.
func (r *runner) waitForDelete(ctx context.Context) {
	r.waitPublished()
	if inst, gone := r.snapshot(); !gone && autoRemoveDue(&inst) {
		r.teardown(ctx, true)
		return
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.notify:
			inst, gone := r.snapshot()
			if gone || inst.DeletionRequested || autoRemoveDue(&inst) {
				r.teardown(ctx, !gone)
				return
			}
		}
	}
}

// autoRemoveDue reports an instance that ended and asked to be removed
// then (docker run --rm). The host removes it as it does a deleted one:
// the API records no deletion request, which hosts may not write.
func autoRemoveDue(inst *api.Instance) bool {
	return inst.Spec.AutoRemove && inst.Status.Phase.Terminal()
}

// teardownBackoff spaces the attempts of a teardown that did not remove
// everything: 0.5s, 1s, 2s ... up to 30s.
var teardownBackoff = backoffPolicy{min: 500 * time.Millisecond, max: 30 * time.Second}

// teardown kills and removes everything of the instance on this host;
// with deleteRecord it then removes the instance from the store. It keeps
// trying until everything is gone (or the agent stops): the record is
// removed last, so a failure never hides a leaked container.
func (r *runner) teardown(ctx context.Context, deleteRecord bool) {
	r.stopAllProbes()
	if r.stopFiles != nil {
		r.stopFiles()
	}
	// The run ends now, read while the cgroup is still there.
	r.a.meter.end(ctx, r.uid, time.Now())
	for delay := teardownBackoff.next(0, 0); ; delay = teardownBackoff.next(delay, 0) {
		err := r.teardownOnce(ctx)
		if err == nil {
			break
		}
		r.log.Warn("teardown incomplete; retrying", "err", err, "in", delay)
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
	}
	r.setPhase(api.PhaseSucceeded) // wakes log followers
	// The final usage record goes before the instance's record: a host
	// may report only instances placed on it.
	r.a.meter.finish(ctx, r.uid, time.Now())
	if deleteRecord {
		err := r.a.cfg.Store.DeleteInstance(tenant.WithName(ctx, r.tenant), r.name)
		if err != nil && !errors.Is(err, errdefs.ErrNotFound) {
			r.log.Warn("deleting the instance record failed", "err", err)
			return
		}
	}
	r.log.Info("instance removed")
}

func (r *runner) teardownOnce(ctx context.Context) error {
	nctx := r.tctx(ctx)
	inst, _ := r.snapshot()
	netID := r.a.netID(r.uid)
	var errs []error
	for _, cs := range model.AllContainers(&inst.Spec) {
		c, err := r.a.cfg.Client.LoadContainer(nctx, r.a.ctrID(r.uid, cs.Spec.Name))
		if err == nil {
			err = r.a.removeContainer(nctx, c)
		} else if cerrdefs.IsNotFound(err) {
			err = nil
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		// Keep the sandbox while containers may still use it.
		return errors.Join(errs...)
	}
	// Once no container has them: the data stays on the persistent
	// volumes, the emptyDirs go (the sub-path binds into them first).
	if err := r.a.unmountSubPaths(r.uid); err != nil {
		return fmt.Errorf("unmounting the sub-path binds: %w", err)
	}
	if err := r.releaseVolumes(ctx, &inst); err != nil {
		return err
	}
	if err := r.a.removeVolumes(ctx, r.uid); err != nil {
		return fmt.Errorf("removing the emptyDirs: %w", err)
	}
	ip := r.ip
	if ip == "" {
		ip = inst.Status.IP
	}
	// Before the DEL releases the address (afterwards it may already
	// belong to someone else), and before a recycled sandbox serves the
	// tenant's next instance.
	flushConntrack(ip)
	if !r.recycleSandbox(inst) {
		if err := r.a.cfg.Network.Teardown(ctx, r.a.netID(r.uid), ports(inst.Spec)); err != nil {
			return fmt.Errorf("network teardown: %w", err)
		}
	}
	r.a.netIDs.Delete(r.uid)
	r.a.removeCgroupNamed(r.uid)
	if strings.HasPrefix(netID, warm.Prefix) {
		r.a.removeCgroupNamed(netID) // the claimed warm container's
		_ = os.RemoveAll(r.a.logFIFODir(netID))
	}
	r.a.cpus.release(r.uid)
	r.a.releaseDevices(r.uid)
	r.a.removeFiles(r.uid)
	return nil
}

// recycleSandbox hands the instance's pooled network sandbox back to the
// pool for the tenant's next instance, instead of destroying it, when it
// can: its containers are deleted (teardownOnce removed them), the
// conntrack entries of its address are flushed, and the runtime leaves
// the namespace as it found it (not gVisor, whose netstack takes the
// addresses). The instance's record of the sandbox goes first, so that an
// agent dying in between leaves an unclaimed pool id, which the next one
// destroys.
func (r *runner) recycleSandbox(inst api.Instance) bool {
	p := r.a.cfg.Pool
	id := r.a.netID(r.uid)
	if p == nil || r.att == nil || !pool.IsPoolID(id) || r.att.IP != r.ip {
		return false
	}
	if class, ok := r.a.cfg.Classes[inst.Spec.Runtime]; !ok || class.ExclusiveNetns {
		return false
	}
	if r.resErr != nil || !poolable(inst.Spec, netLimits(r.res)) {
		return false
	}
	if err := os.Remove(r.a.netIDFile(r.uid)); err != nil && !os.IsNotExist(err) {
		r.log.Warn("unrecording the pooled sandbox failed; destroying it", "sandbox", id, "err", err)
		return false
	}
	if !p.Recycle(r.tenant, pool.Sandbox{ID: id, Attachment: *r.att}) {
		return false
	}
	r.log.Debug("recycled the network sandbox for the tenant", "sandbox", id, "ip", r.ip)
	return true
}

// removeContainer kills a container's task and deletes it with its
// snapshot, and the filesystem under its writable layer in between.
func (a *Agent) removeContainer(ctx context.Context, c containerd.Container) error {
	if task, err := c.Task(ctx, nil); err == nil {
		if err := deleteTask(ctx, task); err != nil {
			return fmt.Errorf("deleting the task of %s: %w", c.ID(), err)
		}
	} else if !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("loading the task of %s: %w", c.ID(), err)
	}
	if err := a.removeWritableLayer(ctx, c); err != nil {
		return fmt.Errorf("removing the writable layer's filesystem of %s: %w", c.ID(), err)
	}
	if err := c.Delete(ctx, containerd.WithSnapshotCleanup); err != nil && !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("deleting container %s: %w", c.ID(), err)
	}
	return nil
}

// deleteTask kills a task if it still runs, waits for it to stop and
// deletes it. A stopped task is deleted without another kill: runsc answers
// a kill of an exited sandbox with an error the shim does not treat as
// "already gone", which makes WithProcessKill fail.
func deleteTask(ctx context.Context, task containerd.Task) error {
	st, err := task.Status(ctx)
	if err != nil && !cerrdefs.IsNotFound(err) {
		return err
	}
	if err == nil && st.Status != containerd.Stopped {
		statusC, werr := task.Wait(ctx)
		if err := task.Kill(ctx, syscall.SIGKILL, containerd.WithKillAll); err != nil && !cerrdefs.IsNotFound(err) {
			slog.Debug("SIGKILL failed", "task", task.ID(), "err", err)
		}
		if werr == nil {
			select {
			case <-statusC:
			case <-time.After(10 * time.Second):
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
	if _, err := task.Delete(ctx); err != nil && !cerrdefs.IsNotFound(err) {
		// Last resort for a task that did not stop.
		if _, err2 := task.Delete(ctx, containerd.WithProcessKill); err2 != nil && !cerrdefs.IsNotFound(err2) {
			return err
		}
	}
	return nil
}

// killDue sends SIGKILL to what did not stop by its last moment: the
// whole instance's (r.killAt, after stop's grace period) and a single
// container's (c.killAt, after a probe or a preStop hook killed it).
func (r *runner) killDue(ctx context.Context, now time.Time) {
	if !r.killAt.IsZero() && !now.Before(r.killAt) {
		r.killAt = time.Time{}
		for _, c := range r.all() {
			// A container whose preStop hook just ended keeps its last
			// moment (c.killAt, handleHook).
			if c.status.State == api.ContainerRunning && c.task != nil && !c.killAt.After(now) {
				r.killNow(ctx, c, "did not stop in time")
			}
		}
	}
	for _, c := range r.ctrs {
		if !c.killAt.IsZero() && !now.Before(c.killAt) {
			c.killAt = time.Time{}
			if c.status.State == api.ContainerRunning && c.task != nil {
				r.killNow(ctx, c, "did not stop in time after it was killed")
			}
		}
	}
}
