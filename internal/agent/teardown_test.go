package agent

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/internal/model"
)

// stopTestRunner is a runner over inst, with no containerd: its
// containers have no tasks, so stop only ever records.
func stopTestRunner(inst *api.Instance, ctrs, inits []*ctr) *runner {
	r := newRunner(New(Config{CgroupRoot: "kanga-test-none"}), inst)
	r.ctrs, r.inits = ctrs, inits
	r.initDone = len(inits) == 0
	return r
}

// TestStop: a stop cancels pending restarts, makes every container
// unready, gives the whole instance its grace period (the spec's, or the
// one the stop asks for), and ends the containers that never ran when it
// comes before the init containers are done.
func TestStop(t *testing.T) {
	i64 := func(v int64) *int64 { return &v }
	g := func(v int) *int { return &v }
	for _, tc := range []struct {
		name      string
		specGrace *int64
		askGrace  *int
		withInits bool
		wantGrace time.Duration
	}{
		{name: "the default grace", wantGrace: time.Duration(model.DefaultStopGrace) * time.Second},
		{name: "the spec's grace", specGrace: i64(7), wantGrace: 7 * time.Second},
		{name: "the stop's own grace wins", specGrace: i64(7), askGrace: g(2), wantGrace: 2 * time.Second},
		{name: "a grace of zero", askGrace: g(0), wantGrace: 0},
		{name: "while initialising", withInits: true, wantGrace: time.Duration(model.DefaultStopGrace) * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			inst := &api.Instance{Name: "web", Tenant: "t1", UID: "u1", Spec: api.InstanceSpec{RestartPolicy: api.RestartAlways, TerminationGracePeriodSeconds: tc.specGrace}}
			app := &ctr{spec: api.ContainerSpec{Name: "app"}, restartAt: time.Now().Add(time.Hour),
				status: api.ContainerStatus{Name: "app", State: api.ContainerTerminated, Ready: true}}
			var inits []*ctr
			if tc.withInits {
				app.status.State, app.restartAt = api.ContainerWaiting, time.Time{}
				inits = []*ctr{{spec: api.ContainerSpec{Name: "setup"}, init: true, status: api.ContainerStatus{Name: "setup", State: api.ContainerWaiting}}}
			}
			r := stopTestRunner(inst, []*ctr{app}, inits)
			before := time.Now()
			r.stop(context.Background(), tc.askGrace)
			if !r.stopping {
				t.Error("not stopping")
			}
			if !app.restartAt.IsZero() || app.status.Ready {
				t.Errorf("app: restart at %s, ready %v; want no restart, not ready", app.restartAt, app.status.Ready)
			}
			if r.killAt.Before(before.Add(tc.wantGrace)) || r.killAt.After(time.Now().Add(tc.wantGrace)) {
				t.Errorf("killAt %s is not %s after the stop", r.killAt, tc.wantGrace)
			}
			for _, c := range r.all() {
				if tc.withInits && (c.status.State != api.ContainerTerminated || c.status.Reason != "Stopped") {
					t.Errorf("%s: %s %q, want Terminated Stopped: what never ran ends with the stop", c.spec.Name, c.status.State, c.status.Reason)
				}
			}
			if len(r.events) == 0 || r.events[len(r.events)-1].Reason != "Stopping" {
				t.Errorf("events %+v, want Stopping last", r.events)
			}
		})
	}
}

// TestActiveDeadline: once activeDeadlineSeconds runs out the instance
// is stopped, and every later write has it Failed, DeadlineExceeded;
// restarts that come due meanwhile do not happen.
func TestActiveDeadline(t *testing.T) {
	d := int64(30)
	inst := &api.Instance{Name: "web", Tenant: "t1", UID: "u1", Spec: api.InstanceSpec{RestartPolicy: api.RestartAlways, ActiveDeadlineSeconds: &d}}
	app := &ctr{spec: api.ContainerSpec{Name: "app"}, restartAt: time.Now().Add(-time.Second),
		status: api.ContainerStatus{Name: "app", State: api.ContainerTerminated}}
	r := stopTestRunner(inst, []*ctr{app}, nil)
	r.deadline = time.Now().Add(-time.Millisecond)
	r.handleDeadlines(context.Background())
	if !r.deadline.IsZero() || !r.stopping || r.terminal != api.PhaseFailed || r.failure == nil || r.failure.Reason != "DeadlineExceeded" ||
		!strings.Contains(r.failure.Message, "activeDeadlineSeconds (30s)") {
		t.Fatalf("after the deadline: deadline %s, stopping %v, terminal %s, failure %+v", r.deadline, r.stopping, r.terminal, r.failure)
	}
	if !app.restartAt.IsZero() || app.status.RestartCount != 0 {
		t.Errorf("restart at %s, count %d: a stopping instance does not restart", app.restartAt, app.status.RestartCount)
	}
	if w := r.statusWrite(""); w.force != api.PhaseFailed {
		t.Errorf("the next write forces %q, want Failed", w.force)
	}
}

// TestRestartDueWhileStopping: a restart that comes due after a stop is
// dropped, not run.
func TestRestartDueWhileStopping(t *testing.T) {
	inst := &api.Instance{Name: "web", Tenant: "t1", UID: "u1", Spec: api.InstanceSpec{RestartPolicy: api.RestartAlways}}
	now := time.Now()
	due := &ctr{spec: api.ContainerSpec{Name: "due"}, restartAt: now.Add(-time.Second), status: api.ContainerStatus{Name: "due", State: api.ContainerTerminated}}
	later := &ctr{spec: api.ContainerSpec{Name: "later"}, restartAt: now.Add(time.Hour), status: api.ContainerStatus{Name: "later", State: api.ContainerTerminated}}
	r := stopTestRunner(inst, []*ctr{due, later}, nil)
	r.stopping = true
	r.restartDue(context.Background(), now)
	if !due.restartAt.IsZero() || due.status.RestartCount != 0 {
		t.Errorf("due: restart at %s, count %d; want dropped", due.restartAt, due.status.RestartCount)
	}
	if !later.restartAt.Equal(now.Add(time.Hour)) {
		t.Errorf("a restart not yet due was touched: %s", later.restartAt)
	}
}

// TestKillDueWithoutTasks: a kill deadline that passes clears itself; a
// container with no task (it already exited) is not killed.
func TestKillDueWithoutTasks(t *testing.T) {
	inst := &api.Instance{Name: "web", Tenant: "t1", UID: "u1"}
	now := time.Now()
	c := &ctr{spec: api.ContainerSpec{Name: "app"}, killAt: now.Add(-time.Second), status: api.ContainerStatus{Name: "app", State: api.ContainerRunning}}
	r := stopTestRunner(inst, []*ctr{c}, nil)
	r.killAt = now.Add(-time.Second)
	r.killDue(context.Background(), now)
	if !r.killAt.IsZero() || !c.killAt.IsZero() {
		t.Errorf("killAt %s, container's %s: want both cleared", r.killAt, c.killAt)
	}
	if len(r.events) != 0 {
		t.Errorf("events %+v: nothing to kill", r.events)
	}
}

func TestAutoRemoveDue(t *testing.T) {
	for _, tc := range []struct {
		auto  bool
		phase api.Phase
		want  bool
	}{
		{true, api.PhaseSucceeded, true},
		{true, api.PhaseFailed, true},
		{true, api.PhaseRunning, false},
		{true, api.PhasePending, false},
		{false, api.PhaseSucceeded, false},
	} {
		inst := &api.Instance{Spec: api.InstanceSpec{AutoRemove: tc.auto}, Status: api.InstanceStatus{Phase: tc.phase}}
		if got := autoRemoveDue(inst); got != tc.want {
			t.Errorf("autoRemoveDue(autoRemove %v, %s) = %v, want %v", tc.auto, tc.phase, got, tc.want)
		}
	}
}

// TestFail: a runner that cannot run its instance ends every container
// that is not running with the reason, leaves a completed init container
// so, and writes the instance Failed with the error.
func TestFail(t *testing.T) {
	zero := 0
	inst := api.Instance{Name: "web", Tenant: "t1", UID: "u1", Spec: api.InstanceSpec{RestartPolicy: api.RestartAlways},
		Status: api.InstanceStatus{Phase: api.PhaseCreating, Host: "h"}}
	st := &memStore{inst: inst}
	r := newRunner(New(Config{Store: st, HostName: "h"}), &inst)
	r.inits = []*ctr{
		{init: true, status: api.ContainerStatus{Name: "done", State: api.ContainerTerminated, Reason: "Completed", ExitCode: &zero}},
		{init: true, status: api.ContainerStatus{Name: "next", State: api.ContainerWaiting}},
	}
	r.ctrs = []*ctr{{status: api.ContainerStatus{Name: "app", State: api.ContainerWaiting, Ready: true}}}
	r.fail(context.Background(), "StartFailed", errors.New("creating task: boom"))
	got, _ := st.state()
	s := got.Status
	if s.Phase != api.PhaseFailed || s.Reason != "StartFailed" || s.Message != "creating task: boom" {
		t.Fatalf("status %s %q %q, want Failed StartFailed with the error", s.Phase, s.Reason, s.Message)
	}
	if c := s.Containers[0]; c.State != api.ContainerTerminated || c.Reason != "StartFailed" || c.Ready {
		t.Errorf("app %+v, want terminated, StartFailed, not ready", c)
	}
	if c := s.InitContainers[0]; c.Reason != "Completed" {
		t.Errorf("completed init container now %q", c.Reason)
	}
	if c := s.InitContainers[1]; c.State != api.ContainerTerminated || c.Reason != "StartFailed" {
		t.Errorf("waiting init container %+v, want terminated, StartFailed", c)
	}
}
