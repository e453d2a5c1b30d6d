// Status: the runner's view of its instance (containers, phase, reason,
// events) computed into api.InstanceStatus (statusUpdate.apply) and
// written to the store (publish, publishAsync). The runner is the only
// writer of its instance's status on this host; a write that would change
// nothing is skipped, and a stop or delete that arrived meanwhile is never
// lost under the written version (setWritten).

package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
	"github.com/kanga-run/kanga/internal/model"
)

// fail records that the instance cannot run.
func (r *runner) fail(ctx context.Context, reason string, err error) {
	for _, c := range r.ctrs {
		if c.status.State != api.ContainerRunning {
			c.status.State = api.ContainerTerminated
			c.status.Reason = reason
			c.status.Ready = false
		}
	}
	for _, c := range r.inits {
		if c.status.State == api.ContainerWaiting { // a completed one stays so
			c.status.State = api.ContainerTerminated
			c.status.Reason = reason
		}
	}
	r.failure = &api.InstanceStatus{Reason: reason, Message: err.Error()}
	r.publish(ctx, api.PhaseFailed)
}

// publish writes the runner's view into the store. force sets the phase
// instead of deriving it. It reports whether the write landed (or found
// the record gone).
func (r *runner) publish(ctx context.Context, force api.Phase) bool {
	r.waitPublished()
	w := r.statusWrite(force)
	if !r.writeStatus(ctx, w) {
		r.events = append(w.events, r.events...)
		return false
	}
	return true
}

// publishAsync starts writing the runner's view, with the phase forced,
// while the runner goes on; the next publish waits for it first, so that
// writes land in order and the record never goes back to an older phase.
// It serves the Creating write, which would otherwise hold up every
// start for an etcd round trip before anything is made.
func (r *runner) publishAsync(ctx context.Context, force api.Phase) {
	r.waitPublished()
	w := r.statusWrite(force)
	done := make(chan struct{})
	r.pending = done
	go func() {
		defer close(done)
		if !r.writeStatus(ctx, w) && len(w.events) > 0 {
			r.log.Warn("events lost with a failed status write", "events", len(w.events))
		}
	}()
}

// setWritten makes the version this runner just wrote its latest, under
// r.mu. The write's answer may come after the watch delivered a newer
// version (the stream and the write are separate requests, over the host
// link separate connections): a stop or delete asked meanwhile must not be
// lost under the written version, or the runner would never act on it.
// Those requests only ever turn on, so they are carried over; it reports
// whether it carried one, so that the loop looks again.
func (r *runner) setWritten(written *api.Instance) bool {
	cur := r.latest
	w := *written
	carried := false
	if cur != nil && cur.UID == w.UID {
		if cur.DeletionRequested && !w.DeletionRequested {
			w.DeletionRequested, carried = true, true
		}
		if cur.StopRequested && !w.StopRequested {
			w.StopRequested, carried = true, true
		}
		if g := cur.StopGraceSeconds; g != nil && (w.StopGraceSeconds == nil || *g < *w.StopGraceSeconds) {
			w.StopGraceSeconds, carried = g, true
		}
	}
	r.latest = &w
	return carried
}

// waitPublished waits for an asynchronous status write to finish.
func (r *runner) waitPublished() {
	if r.pending != nil {
		<-r.pending
		r.pending = nil
	}
}

// statusUpdate is the runner's view at one moment, ready to be written.
type statusUpdate struct {
	force    api.Phase
	events   []api.Event
	statuses []api.ContainerStatus
	ip       string
	stopping bool
	failure  *api.InstanceStatus
	hold     *api.InstanceStatus
	inits    []api.ContainerStatus
	devices  []string
}

// statusWrite takes the runner's view (and its pending events) for a write.
func (r *runner) statusWrite(force api.Phase) statusUpdate {
	if force == "" {
		force = r.terminal
	}
	w := statusUpdate{force: force, events: r.events, ip: r.ip, stopping: r.stopping, failure: r.failure, hold: r.hold, devices: r.devices}
	r.events = nil
	w.statuses = make([]api.ContainerStatus, len(r.ctrs))
	for i, c := range r.ctrs {
		w.statuses[i] = c.status
	}
	w.inits = r.initStatuses()
	return w
}

// writeStatus writes w into the store. It returns false when the write
// failed and should be retried with the next one (its events included).
// It touches only the runner's mutex-guarded state, so it may run beside
// the runner.
func (r *runner) writeStatus(ctx context.Context, w statusUpdate) bool {
	var phase api.Phase
	var unchanged *api.Instance
	updated, err := r.a.cfg.Store.UpdateInstance(r.tctx(ctx), r.name, func(inst *api.Instance) error {
		if inst.UID != r.uid || inst.Status.Host != r.a.cfg.HostName {
			// Replaced, or assigned to another host: the record is no
			// longer this runner's to write.
			return errInstanceGone
		}
		before, _ := json.Marshal(inst.Status)
		wasTerminal := inst.Status.Phase.Terminal()
		w.apply(inst, &phase)
		if phase.Terminal() && !wasTerminal && inst.Spec.AutoRemove {
			inst.Status.Events = model.AppendEvent(inst.Status.Events, api.Event{Time: time.Now().UTC(), Type: "Normal",
				Reason: "AutoRemove", Message: "the instance ended and autoRemove is set: removing it"})
		}
		// Writing the record as it is would only wake every watcher, this
		// runner included (its own write comes back as a watch event and
		// a notify, after which the loop publishes again): each running
		// instance would rewrite its record over and over.
		if after, _ := json.Marshal(inst.Status); bytes.Equal(before, after) {
			unchanged = inst
			return errUnchanged
		}
		return nil
	})
	if unchanged != nil && errors.Is(err, errUnchanged) {
		updated, err = unchanged, nil
	}
	switch {
	case err == nil:
		// No notify: this is the runner's own view; a change anyone else
		// made meanwhile (stop, delete) arrives through the watch.
		r.mu.Lock()
		renotify := false
		if !r.gone {
			renotify = r.setWritten(updated)
		}
		r.mu.Unlock()
		if renotify {
			select {
			case r.notify <- struct{}{}:
			default:
			}
		}
		r.setPhase(phase)
		if autoRemoveDue(updated) {
			// This write ended an autoRemove instance: remove it without
			// waiting for the watch to bring the write back.
			select {
			case r.notify <- struct{}{}:
			default:
			}
		}
	case errors.Is(err, errInstanceGone), errors.Is(err, errdefs.ErrNotFound):
		r.mu.Lock()
		r.gone = true
		r.mu.Unlock()
		select {
		case r.notify <- struct{}{}:
		default:
		}
	default:
		if ctx.Err() == nil {
			r.log.Warn("publishing status failed", "err", err)
			return false
		}
	}
	return true
}

// errUnchanged ends an update that would write the record as it is.
var errUnchanged = errors.New("status unchanged")

// apply writes the update into inst's status and reports the phase.
func (w statusUpdate) apply(inst *api.Instance, phase *api.Phase) {
	st := &inst.Status
	st.Containers = w.statuses
	st.InitContainers = w.inits
	st.IP = w.ip
	st.Devices = w.devices
	stopped := inst.StopRequested || w.stopping
	*phase = w.force
	if *phase == "" {
		*phase = model.DeriveInstancePhase(inst.Spec.RestartPolicy, stopped, w.inits, w.statuses)
	}
	now := time.Now().UTC()
	if *phase == api.PhaseRunning && st.StartedAt == nil {
		st.StartedAt = &now
	}
	if phase.Terminal() && st.FinishedAt == nil {
		st.FinishedAt = &now
	}
	st.Phase = *phase
	st.Conditions = readyCondition(*phase, w.statuses, st.Conditions, now)
	st.Reason, st.Message = "", ""
	if w.failure != nil {
		st.Reason, st.Message = w.failure.Reason, w.failure.Message
	} else if w.hold != nil {
		st.Reason, st.Message = w.hold.Reason, w.hold.Message
	} else if reason, msg := model.InitReason(inst.Spec.RestartPolicy, stopped, w.inits); reason != "" {
		st.Reason, st.Message = reason, msg
	} else if *phase == api.PhaseFailed {
		for _, c := range w.statuses {
			if c.ExitCode != nil && *c.ExitCode != 0 {
				st.Reason = c.Reason
				st.Message = fmt.Sprintf("container %s exited with code %d", c.Name, *c.ExitCode)
				break
			}
		}
	}
	for _, e := range w.events {
		st.Events = model.AppendEvent(st.Events, e)
	}
}
