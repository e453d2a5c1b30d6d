// Exits: a container's task ending, from waitTask (one goroutine per
// task, forwarding to the runner's loop) to handleExit, which records the
// exit in the container's status, names its reason (exitReason) and asks
// the restart policy what comes next. The metering of a run ends here too,
// with the last container's exit.

package agent

import (
	"context"
	"time"

	"github.com/containerd/containerd"
	cerrdefs "github.com/containerd/containerd/errdefs"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/internal/model"
)

// exit is a container's task ending.
type exit struct {
	container  string
	generation int
	code       int
	at         time.Time
}

// waitTask forwards a task's exit to the runner. If containerd goes away
// (it is restarted under us) the wait is re-established; shims keep the
// container and its exit status meanwhile.
func (r *runner) waitTask(ctx context.Context, name string, gen int, task containerd.Task, statusC <-chan containerd.ExitStatus) {
	for {
		select {
		case <-ctx.Done():
			return
		case st := <-statusC:
			if st.Error() == nil {
				select {
				case r.exits <- exit{container: name, generation: gen, code: int(st.ExitCode()), at: st.ExitTime()}:
				case <-ctx.Done():
				}
				return
			}
			r.log.Debug("waiting on task failed; retrying", "container", name, "err", st.Error())
		}
		for {
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
			var err error
			statusC, err = task.Wait(ctx)
			if err == nil {
				break
			}
			if cerrdefs.IsNotFound(err) {
				select {
				case r.exits <- exit{container: name, generation: gen, code: 255, at: time.Now()}:
				case <-ctx.Done():
				}
				return
			}
		}
	}
}

// handleExit records a container's exit and schedules its restart if the
// restart policy asks for one; the exit of an init container that
// completed starts what comes next, whose failure it returns.
func (r *runner) handleExit(ctx context.Context, ex exit) error {
	var c *ctr
	for _, cc := range r.all() {
		if cc.spec.Name == ex.container {
			c = cc
		}
	}
	if c == nil || ex.generation != c.generation {
		return nil // a stale exit of a task already replaced
	}
	inst, _ := r.snapshot()
	code := ex.code
	at := exitTime(ex.at, time.Now())
	r.stopProbes(c)
	r.cancelHook(c)
	c.postStartDue = false
	c.killAt = time.Time{}
	c.status.Ready = false
	c.status.State = api.ContainerTerminated
	c.status.ExitCode = &code
	c.status.FinishedAt = &at
	c.status.PID = 0
	c.status.Message = r.a.terminationMessage(r.uid, &c.spec, code)
	// The OOM count is read only for an exit that looks like a kill.
	oomKilled := !r.stopping && code == 137 && r.a.oomKills(r.uid, c.spec.Name) > c.oomKills
	c.status.Reason = exitReason(r.stopping, code, oomKilled)
	r.event("Normal", "Exited", "container %s exited with code %d (%s)", c.spec.Name, code, c.status.Reason)
	running := !r.stopping && !inst.StopRequested
	// An init container that completed is done for good, whatever the
	// policy: the next one (or the app containers) runs instead.
	if c.init && code == 0 {
		if !running {
			return nil
		}
		return r.initCompleted(ctx, &inst, c)
	}
	if running && model.WillRestart(inst.Spec.RestartPolicy, code) {
		r.scheduleRestart(c)
		r.event("Normal", "BackOff", "restarting container %s in %s (restart policy %s)", c.spec.Name, c.backoff, inst.Spec.RestartPolicy)
	} else if c.init && running {
		r.event("Warning", "InitFailed", "init container %s failed with code %d: the app containers do not start (restart policy %s)", c.spec.Name, code, inst.Spec.RestartPolicy)
	}
	return nil
}

// lastExit is when the last of the containers exited (fallback if none
// says).
func lastExit(cs []api.ContainerStatus, fallback *time.Time) time.Time {
	var last time.Time
	for _, c := range cs {
		if c.FinishedAt != nil && c.FinishedAt.After(last) {
			last = *c.FinishedAt
		}
	}
	if last.IsZero() && fallback != nil {
		last = *fallback
	}
	if last.IsZero() {
		last = time.Now()
	}
	return last
}

// meterRunEnd ends the metering once nothing runs or will run again: at
// the last container's exit.
func (r *runner) meterRunEnd(ctx context.Context) {
	inst, _ := r.snapshot()
	statuses := make([]api.ContainerStatus, len(r.ctrs))
	for i, c := range r.ctrs {
		statuses[i] = c.status
	}
	inits := r.initStatuses()
	if model.DeriveInstancePhase(inst.Spec.RestartPolicy, inst.StopRequested || r.stopping, inits, statuses).Terminal() {
		r.a.meter.end(ctx, r.uid, lastExit(append(inits, statuses...), nil))
	}
}

// exitTime is when a task exited, in UTC: the time containerd reports,
// or now when it reports none (a zero time, or the epoch of a shim that
// lost it).
func exitTime(at, now time.Time) time.Time {
	if at.IsZero() || at.Year() < 2000 {
		return now.UTC()
	}
	return at.UTC()
}

// exitReason is the reason a container's status gives for an exit with
// code: Stopped when the instance is stopping, OOMKilled when the kernel
// killed it for its memory limit (oomKilled: a 137 with a new OOM kill in
// its cgroup), Completed for 0, Error otherwise.
func exitReason(stopping bool, code int, oomKilled bool) string {
	switch {
	case stopping:
		return "Stopped"
	case code == 137 && oomKilled:
		return "OOMKilled"
	case code == 0:
		return "Completed"
	default:
		return "Error"
	}
}
