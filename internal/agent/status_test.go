package agent

import (
	"testing"
	"time"

	"github.com/kanga-run/kanga/api"
)

func intp(v int) *int { return &v }

// TestStatusUpdateApply: what a status write makes of the runner's view,
// field by field, for the phases and reasons an instance goes through.
func TestStatusUpdateApply(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	running := api.ContainerStatus{Name: "app", State: api.ContainerRunning, Ready: true, StartedAt: &t0}
	unready := api.ContainerStatus{Name: "app", State: api.ContainerRunning, StartedAt: &t0}
	failed := api.ContainerStatus{Name: "app", State: api.ContainerTerminated, Reason: "Error", ExitCode: intp(3), StartedAt: &t0, FinishedAt: &t0}
	done := api.ContainerStatus{Name: "app", State: api.ContainerTerminated, Reason: "Completed", ExitCode: intp(0), StartedAt: &t0, FinishedAt: &t0}
	waiting := api.ContainerStatus{Name: "app", State: api.ContainerWaiting, Reason: "PodInitializing"}
	initRunning := api.ContainerStatus{Name: "setup", State: api.ContainerRunning, StartedAt: &t0}
	ev := api.Event{Time: t0, Type: "Normal", Reason: "Started", Message: "started container app"}
	for _, tc := range []struct {
		name     string
		policy   api.RestartPolicy
		stopReq  bool
		old      api.InstanceStatus
		w        statusUpdate
		phase    api.Phase
		reason   string
		message  string
		ready    string
		started  bool // StartedAt set
		finished bool // FinishedAt set
		events   int
	}{
		{
			name: "running and ready", policy: api.RestartAlways,
			w:     statusUpdate{statuses: []api.ContainerStatus{running}, ip: "10.0.0.2", events: []api.Event{ev}},
			phase: api.PhaseRunning, ready: api.ConditionTrue, started: true, events: 1,
		},
		{
			name: "running, not ready", policy: api.RestartAlways,
			w:     statusUpdate{statuses: []api.ContainerStatus{unready}},
			phase: api.PhaseRunning, ready: api.ConditionFalse, started: true,
		},
		{
			name: "a container failed under Never", policy: api.RestartNever,
			old:   api.InstanceStatus{StartedAt: &t0},
			w:     statusUpdate{statuses: []api.ContainerStatus{failed}},
			phase: api.PhaseFailed, reason: "Error", message: "container app exited with code 3",
			ready: api.ConditionFalse, started: true, finished: true,
		},
		{
			name: "completed under OnFailure", policy: api.RestartOnFailure,
			old:   api.InstanceStatus{StartedAt: &t0},
			w:     statusUpdate{statuses: []api.ContainerStatus{done}},
			phase: api.PhaseSucceeded, ready: api.ConditionFalse, started: true, finished: true,
		},
		{
			name: "a forced phase and the runner's failure", policy: api.RestartAlways,
			w:     statusUpdate{force: api.PhaseFailed, statuses: []api.ContainerStatus{waiting}, failure: &api.InstanceStatus{Reason: "StartFailed", Message: "creating task: boom"}},
			phase: api.PhaseFailed, reason: "StartFailed", message: "creating task: boom", ready: api.ConditionFalse, finished: true,
		},
		{
			name: "held in Pending", policy: api.RestartAlways,
			w:     statusUpdate{force: api.PhasePending, statuses: []api.ContainerStatus{waiting}, hold: &api.InstanceStatus{Reason: "InsufficientCPU", Message: "waiting for a core"}},
			phase: api.PhasePending, reason: "InsufficientCPU", message: "waiting for a core", ready: api.ConditionFalse,
		},
		{
			name: "a failure wins over a hold", policy: api.RestartAlways,
			w: statusUpdate{force: api.PhaseFailed, statuses: []api.ContainerStatus{waiting},
				failure: &api.InstanceStatus{Reason: "ConfigError", Message: "bad"}, hold: &api.InstanceStatus{Reason: "InsufficientCPU"}},
			phase: api.PhaseFailed, reason: "ConfigError", message: "bad", ready: api.ConditionFalse, finished: true,
		},
		{
			name: "initialising", policy: api.RestartAlways,
			w:     statusUpdate{statuses: []api.ContainerStatus{waiting}, inits: []api.ContainerStatus{initRunning}},
			phase: api.PhaseCreating, reason: "Init:0/1", ready: api.ConditionFalse,
		},
		{
			name: "an old reason is cleared", policy: api.RestartAlways,
			old:   api.InstanceStatus{Reason: "InsufficientCPU", Message: "waiting"},
			w:     statusUpdate{statuses: []api.ContainerStatus{running}},
			phase: api.PhaseRunning, ready: api.ConditionTrue, started: true,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			inst := &api.Instance{Spec: api.InstanceSpec{RestartPolicy: tc.policy}, StopRequested: tc.stopReq, Status: tc.old}
			var phase api.Phase
			tc.w.apply(inst, &phase)
			st := inst.Status
			if phase != tc.phase || st.Phase != tc.phase {
				t.Errorf("phase = %s (status %s), want %s", phase, st.Phase, tc.phase)
			}
			if st.Reason != tc.reason || st.Message != tc.message {
				t.Errorf("reason, message = %q, %q; want %q, %q", st.Reason, st.Message, tc.reason, tc.message)
			}
			if st.IP != tc.w.ip {
				t.Errorf("ip = %q, want %q", st.IP, tc.w.ip)
			}
			if len(st.Containers) != len(tc.w.statuses) || len(st.InitContainers) != len(tc.w.inits) {
				t.Errorf("statuses = %d, %d init; want %d, %d", len(st.Containers), len(st.InitContainers), len(tc.w.statuses), len(tc.w.inits))
			}
			if (st.StartedAt != nil) != tc.started || (st.FinishedAt != nil) != tc.finished {
				t.Errorf("startedAt %v, finishedAt %v; want set: %v, %v", st.StartedAt, st.FinishedAt, tc.started, tc.finished)
			}
			if tc.old.StartedAt != nil && !st.StartedAt.Equal(*tc.old.StartedAt) {
				t.Errorf("startedAt moved from %s to %s", tc.old.StartedAt, st.StartedAt)
			}
			var ready *api.InstanceCondition
			for i := range st.Conditions {
				if st.Conditions[i].Type == api.InstanceReady {
					ready = &st.Conditions[i]
				}
			}
			if ready == nil || ready.Status != tc.ready {
				t.Errorf("Ready condition = %+v, want status %s", ready, tc.ready)
			}
			if len(st.Events) != tc.events {
				t.Errorf("%d events, want %d", len(st.Events), tc.events)
			}
		})
	}
}

// TestSetWritten: the version a write returns becomes the runner's, but
// a stop or delete the watch brought meanwhile is carried over (and
// reported, so that the loop looks again); a shorter grace wins.
func TestSetWritten(t *testing.T) {
	g := func(v int) *int { return &v }
	for _, tc := range []struct {
		name        string
		cur         *api.Instance
		written     api.Instance
		want        api.Instance
		wantCarried bool
	}{
		{
			name:    "nothing newer",
			cur:     &api.Instance{UID: "u"},
			written: api.Instance{UID: "u", Status: api.InstanceStatus{Phase: api.PhaseRunning}},
			want:    api.Instance{UID: "u", Status: api.InstanceStatus{Phase: api.PhaseRunning}},
		},
		{
			name:    "no version yet",
			written: api.Instance{UID: "u"},
			want:    api.Instance{UID: "u"},
		},
		{
			name:        "a delete arrived meanwhile",
			cur:         &api.Instance{UID: "u", DeletionRequested: true},
			written:     api.Instance{UID: "u", Status: api.InstanceStatus{Phase: api.PhaseRunning}},
			want:        api.Instance{UID: "u", DeletionRequested: true, Status: api.InstanceStatus{Phase: api.PhaseRunning}},
			wantCarried: true,
		},
		{
			name:        "a stop with its grace arrived meanwhile",
			cur:         &api.Instance{UID: "u", StopRequested: true, StopGraceSeconds: g(5)},
			written:     api.Instance{UID: "u"},
			want:        api.Instance{UID: "u", StopRequested: true, StopGraceSeconds: g(5)},
			wantCarried: true,
		},
		{
			name:        "a shorter grace wins",
			cur:         &api.Instance{UID: "u", StopRequested: true, StopGraceSeconds: g(2)},
			written:     api.Instance{UID: "u", StopRequested: true, StopGraceSeconds: g(10)},
			want:        api.Instance{UID: "u", StopRequested: true, StopGraceSeconds: g(2)},
			wantCarried: true,
		},
		{
			name:    "a longer grace does not",
			cur:     &api.Instance{UID: "u", StopRequested: true, StopGraceSeconds: g(30)},
			written: api.Instance{UID: "u", StopRequested: true, StopGraceSeconds: g(10)},
			want:    api.Instance{UID: "u", StopRequested: true, StopGraceSeconds: g(10)},
		},
		{
			name:    "another instance's requests are not carried",
			cur:     &api.Instance{UID: "old", DeletionRequested: true, StopRequested: true},
			written: api.Instance{UID: "u"},
			want:    api.Instance{UID: "u"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &runner{latest: tc.cur}
			written := tc.written
			carried := r.setWritten(&written)
			if carried != tc.wantCarried {
				t.Errorf("carried = %v, want %v", carried, tc.wantCarried)
			}
			got := r.latest
			if got.UID != tc.want.UID || got.DeletionRequested != tc.want.DeletionRequested || got.StopRequested != tc.want.StopRequested ||
				got.Status.Phase != tc.want.Status.Phase || (got.StopGraceSeconds == nil) != (tc.want.StopGraceSeconds == nil) ||
				(got.StopGraceSeconds != nil && *got.StopGraceSeconds != *tc.want.StopGraceSeconds) {
				t.Errorf("latest = %+v, want %+v", *got, tc.want)
			}
			if written.DeletionRequested != tc.written.DeletionRequested || written.StopRequested != tc.written.StopRequested {
				t.Error("setWritten changed the written version in place")
			}
		})
	}
}

// TestStatusWrite: a write takes the runner's pending events (the next
// one starts with none) and its view; the phase is the runner's terminal
// one unless forced.
func TestStatusWrite(t *testing.T) {
	ev := api.Event{Reason: "Started"}
	r := &runner{
		events:   []api.Event{ev},
		ip:       "10.0.0.9",
		terminal: api.PhaseFailed,
		ctrs:     []*ctr{{status: api.ContainerStatus{Name: "a"}}, {status: api.ContainerStatus{Name: "b"}}},
		inits:    []*ctr{{init: true, status: api.ContainerStatus{Name: "i"}}},
	}
	w := r.statusWrite("")
	if w.force != api.PhaseFailed {
		t.Errorf("force = %q, want the terminal phase %q", w.force, api.PhaseFailed)
	}
	if len(w.events) != 1 || len(r.events) != 0 {
		t.Errorf("events: write has %d, runner kept %d; want 1, 0", len(w.events), len(r.events))
	}
	if w.ip != "10.0.0.9" || len(w.statuses) != 2 || w.statuses[1].Name != "b" || len(w.inits) != 1 || w.inits[0].Name != "i" {
		t.Errorf("write = %+v", w)
	}
	// The write holds copies: a later change to the runner's view is not in it.
	r.ctrs[0].status.Name = "changed"
	if w.statuses[0].Name != "a" {
		t.Error("the write shares the container's status with the runner")
	}
	if w := r.statusWrite(api.PhaseRunning); w.force != api.PhaseRunning || len(w.events) != 0 {
		t.Errorf("forced write = %+v", w)
	}
}
