package agent

import (
	"context"
	"fmt"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/internal/model"
)

// Init containers run one after another, each to completion, before any
// app container starts, in the instance's sandbox: they are created by the
// containers step with the app containers (same network namespace, mounts,
// cgroup and security defaults) and differ only in when their tasks run.
// The tasks step starts the first one not completed; each exit 0 starts
// the next (initCompleted), and the last one's starts the app containers.
// A failure follows the restart policy through the runner's usual exit
// handling: Never leaves it failed (the instance is Failed, Init:Error),
// OnFailure and Always restart it with the crash-loop backoff.
//
// An agent that restarts meanwhile adopts what it finds: completed init
// containers are recorded as such before their tasks are deleted, so they
// never run twice; a running one is adopted and its exit awaited; app
// containers that an earlier agent started mean the init containers are
// done, whatever the record says.

// initContainers sets up the runner's init containers from inst's spec and
// recorded status.
func (r *runner) initContainers(inst *api.Instance) {
	for _, cs := range inst.Spec.InitContainers {
		c := &ctr{spec: cs, init: true, status: api.ContainerStatus{Name: cs.Name, State: api.ContainerWaiting, Reason: model.ReasonPodInitializing}}
		for _, old := range inst.Status.InitContainers {
			if old.Name == cs.Name {
				c.status = old
			}
		}
		r.inits = append(r.inits, c)
	}
	r.initDone = model.InitDone(inst.Spec.RestartPolicy, r.initStatuses())
	for _, c := range r.ctrs {
		if c.status.State != api.ContainerWaiting {
			r.initDone = true // the app containers ran before
		}
	}
}

// all is every container of the instance: init containers first.
func (r *runner) all() []*ctr {
	if len(r.inits) == 0 {
		return r.ctrs
	}
	return append(append(make([]*ctr, 0, len(r.inits)+len(r.ctrs)), r.inits...), r.ctrs...)
}

func (r *runner) initStatuses() []api.ContainerStatus {
	if len(r.inits) == 0 {
		return nil
	}
	out := make([]api.ContainerStatus, len(r.inits))
	for i, c := range r.inits {
		out[i] = c.status
	}
	return out
}

// pendingInit is the first init container that has not completed.
func (r *runner) pendingInit() *ctr {
	for _, c := range r.inits {
		if c.status.State != api.ContainerTerminated || c.status.ExitCode == nil || *c.status.ExitCode != 0 {
			return c
		}
	}
	return nil
}

// appsStarted tells whether an app container of an adopted instance has a
// task: an earlier agent started it, so the init containers completed
// even if it died before recording the last completion.
func (r *runner) appsStarted(ctx context.Context) bool {
	for _, c := range r.ctrs {
		if c.c == nil || c.fresh {
			continue
		}
		if _, err := c.c.Task(ctx, nil); err == nil {
			return true
		}
	}
	return false
}

// startNext starts, or adopts, what runs now: the first init container
// that has not completed, or every app container once none is left. It
// returns the containers whose tasks it started (for a failed start to
// undo). ctx carries the tenant's namespace.
func (r *runner) startNext(ctx context.Context, inst *api.Instance) ([]*ctr, error) {
	if !r.initDone {
		if c := r.pendingInit(); c != nil {
			ok, err := r.adoptOrStart(ctx, inst, c)
			if err != nil {
				return nil, fmt.Errorf("init container %s: %w", c.spec.Name, err)
			}
			if ok {
				return []*ctr{c}, nil
			}
			return nil, nil
		}
		r.initDone = true
	}
	var started []*ctr
	for _, c := range r.ctrs {
		ok, err := r.adoptOrStart(ctx, inst, c)
		if err != nil {
			return started, fmt.Errorf("container %s: %w", c.spec.Name, err)
		}
		if ok {
			started = append(started, c)
		}
	}
	return started, nil
}

// initCompleted moves on from init container c, which exited 0. The
// completion is recorded before c's task is deleted (its shim then goes):
// an agent that restarts in between finds the record, or else the stopped
// task and its exit, and never runs c again. If the record cannot be
// written the task stays until teardown.
func (r *runner) initCompleted(ctx context.Context, inst *api.Instance, c *ctr) error {
	nctx := r.tctx(ctx)
	if r.publish(ctx, "") && c.task != nil {
		if err := deleteTask(nctx, c.task); err != nil {
			r.log.Warn("deleting the task of a completed init container failed; it goes with the instance", "container", c.spec.Name, "err", err)
		} else {
			c.task = nil
		}
	}
	started, err := r.startNext(nctx, inst)
	if err != nil {
		for i := len(started) - 1; i >= 0; i-- {
			if uerr := r.unstart(nctx, started[i]); uerr != nil {
				r.log.Warn("stopping the tasks of a failed start failed", "err", uerr)
			}
		}
		return err
	}
	// The app containers started now (after the last init container)
	// get their probes; none was running before.
	r.startAllProbes(ctx)
	return nil
}
