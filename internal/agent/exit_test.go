package agent

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/containerd/containerd"
	cerrdefs "github.com/containerd/containerd/errdefs"

	"github.com/kanga-run/kanga/api"
)

func TestExitReason(t *testing.T) {
	for _, tc := range []struct {
		name      string
		stopping  bool
		code      int
		oomKilled bool
		want      string
	}{
		{"completed", false, 0, false, "Completed"},
		{"error", false, 1, false, "Error"},
		{"killed, not for memory", false, 137, false, "Error"},
		{"killed for memory", false, 137, true, "OOMKilled"},
		{"an OOM kill counts only for a kill's code", false, 1, true, "Error"},
		{"stopping wins over an error", true, 1, false, "Stopped"},
		{"stopping wins over a clean exit", true, 0, false, "Stopped"},
		{"stopping wins over an OOM kill", true, 137, true, "Stopped"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := exitReason(tc.stopping, tc.code, tc.oomKilled); got != tc.want {
				t.Errorf("exitReason(%v, %d, %v) = %q, want %q", tc.stopping, tc.code, tc.oomKilled, got, tc.want)
			}
		})
	}
}

func TestExitTime(t *testing.T) {
	now := time.Date(2026, 5, 6, 7, 8, 9, 0, time.UTC)
	at := time.Date(2026, 5, 6, 7, 0, 0, 0, time.FixedZone("CEST", 2*3600))
	for _, tc := range []struct {
		name string
		at   time.Time
		want time.Time
	}{
		{"reported, in UTC", at, at.UTC()},
		{"none reported", time.Time{}, now},
		{"the epoch of a shim that lost it", time.Unix(0, 0), now},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := exitTime(tc.at, now.In(time.Local))
			if !got.Equal(tc.want) || got.Location() != time.UTC {
				t.Errorf("exitTime(%s) = %s, want %s in UTC", tc.at, got, tc.want)
			}
		})
	}
}

func TestLastExit(t *testing.T) {
	t1 := time.Date(2026, 1, 1, 0, 0, 1, 0, time.UTC)
	t2 := t1.Add(time.Minute)
	fb := t1.Add(time.Hour)
	for _, tc := range []struct {
		name     string
		cs       []api.ContainerStatus
		fallback *time.Time
		want     time.Time
	}{
		{"the latest of the exits", []api.ContainerStatus{{FinishedAt: &t2}, {FinishedAt: &t1}, {}}, &fb, t2},
		{"none exited: the fallback", []api.ContainerStatus{{}, {}}, &fb, fb},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := lastExit(tc.cs, tc.fallback); !got.Equal(tc.want) {
				t.Errorf("lastExit = %s, want %s", got, tc.want)
			}
		})
	}
	// Neither: now.
	before := time.Now()
	if got := lastExit(nil, nil); got.Before(before) || got.After(time.Now()) {
		t.Errorf("lastExit(nil, nil) = %s, want now", got)
	}
}

// TestHandleExit: what an exit does to the container's status and to its
// restart, by restart policy and the runner's state. No containerd: the
// exits are the messages waitTask sends.
func TestHandleExit(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	exitAt := t0.Add(time.Minute)
	for _, tc := range []struct {
		name        string
		policy      api.RestartPolicy
		stopping    bool // the runner is stopping the instance
		stopReq     bool // the record asks for a stop
		init        bool
		generation  int // the exit's; the container is at 1
		code        int
		wantState   api.ContainerState
		wantReason  string
		wantRestart bool
		wantEvent   string // reason of the last event
	}{
		{name: "a stale exit is ignored", policy: api.RestartAlways, generation: 0, code: 1,
			wantState: api.ContainerRunning, wantEvent: ""},
		{name: "Always restarts a clean exit", policy: api.RestartAlways, generation: 1, code: 0,
			wantState: api.ContainerTerminated, wantReason: "Completed", wantRestart: true, wantEvent: "BackOff"},
		{name: "OnFailure restarts a failure", policy: api.RestartOnFailure, generation: 1, code: 2,
			wantState: api.ContainerTerminated, wantReason: "Error", wantRestart: true, wantEvent: "BackOff"},
		{name: "OnFailure leaves a clean exit", policy: api.RestartOnFailure, generation: 1, code: 0,
			wantState: api.ContainerTerminated, wantReason: "Completed", wantEvent: "Exited"},
		{name: "Never leaves a failure", policy: api.RestartNever, generation: 1, code: 1,
			wantState: api.ContainerTerminated, wantReason: "Error", wantEvent: "Exited"},
		{name: "a kill with no OOM kill counted is an error", policy: api.RestartNever, generation: 1, code: 137,
			wantState: api.ContainerTerminated, wantReason: "Error", wantEvent: "Exited"},
		{name: "no restart while stopping", policy: api.RestartAlways, stopping: true, generation: 1, code: 143,
			wantState: api.ContainerTerminated, wantReason: "Stopped", wantEvent: "Exited"},
		{name: "no restart once a stop is asked", policy: api.RestartAlways, stopReq: true, generation: 1, code: 1,
			wantState: api.ContainerTerminated, wantReason: "Error", wantEvent: "Exited"},
		{name: "a failed init container under Never", policy: api.RestartNever, init: true, generation: 1, code: 1,
			wantState: api.ContainerTerminated, wantReason: "Error", wantEvent: "InitFailed"},
		{name: "a failed init container restarts under OnFailure", policy: api.RestartOnFailure, init: true, generation: 1, code: 1,
			wantState: api.ContainerTerminated, wantReason: "Error", wantRestart: true, wantEvent: "BackOff"},
		{name: "a completed init container while stopping starts nothing", policy: api.RestartAlways, init: true, stopping: true, generation: 1, code: 0,
			wantState: api.ContainerTerminated, wantReason: "Stopped", wantEvent: "Exited"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			inst := &api.Instance{Name: "web", Tenant: "t1", UID: "u1", StopRequested: tc.stopReq,
				Spec: api.InstanceSpec{RestartPolicy: tc.policy}}
			r := newRunner(New(Config{CgroupRoot: "kanga-test-none"}), inst)
			r.stopping = tc.stopping
			c := &ctr{spec: api.ContainerSpec{Name: "main"}, init: tc.init, generation: 1, status: api.ContainerStatus{
				Name: "main", State: api.ContainerRunning, StartedAt: &t0, PID: 42, Ready: true}}
			if tc.init {
				r.inits = []*ctr{c}
			} else {
				r.ctrs = []*ctr{c}
			}
			if err := r.handleExit(context.Background(), exit{container: "main", generation: tc.generation, code: tc.code, at: exitAt}); err != nil {
				t.Fatal(err)
			}
			if c.status.State != tc.wantState {
				t.Errorf("state = %s, want %s", c.status.State, tc.wantState)
			}
			if tc.wantState == api.ContainerRunning {
				if c.status.PID != 42 || len(r.events) != 0 {
					t.Errorf("a stale exit changed the container: %+v, events %+v", c.status, r.events)
				}
				return
			}
			if c.status.Reason != tc.wantReason || c.status.ExitCode == nil || *c.status.ExitCode != tc.code ||
				c.status.FinishedAt == nil || !c.status.FinishedAt.Equal(exitAt) || c.status.PID != 0 || c.status.Ready {
				t.Errorf("status = %+v (reason %q), want %s, code %d, finished at %s, no pid, not ready", c.status, c.status.Reason, tc.wantReason, tc.code, exitAt)
			}
			if got := !c.restartAt.IsZero(); got != tc.wantRestart {
				t.Errorf("restart scheduled = %v, want %v", got, tc.wantRestart)
			}
			if tc.wantRestart && c.backoff != restartBackoff.min {
				t.Errorf("backoff = %s, want the first %s", c.backoff, restartBackoff.min)
			}
			if len(r.events) == 0 || r.events[len(r.events)-1].Reason != tc.wantEvent {
				t.Errorf("events = %+v, want the last %s", r.events, tc.wantEvent)
			}
		})
	}
}

// fakeWaitTask is a fake containerd.Task that answers only Wait, with
// the channels (or errors) in waits, one per call.
type fakeWaitTask struct {
	containerd.Task
	mu    sync.Mutex
	waits []fakeWait
	calls int
}

type fakeWait struct {
	ch  <-chan containerd.ExitStatus
	err error
}

func (f *fakeWaitTask) Wait(context.Context) (<-chan containerd.ExitStatus, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	w := f.waits[min(f.calls, len(f.waits)-1)]
	f.calls++
	return w.ch, w.err
}

func exitChan(code uint32, at time.Time, err error) <-chan containerd.ExitStatus {
	ch := make(chan containerd.ExitStatus, 1)
	ch <- *containerd.NewExitStatus(code, at, err)
	return ch
}

// TestWaitTask: waitTask forwards a task's exit to the runner's loop
// with the container's name and generation; a wait that containerd
// loses (it was restarted) is set up again, and a task that is gone by
// then counts as exited with 255.
func TestWaitTask(t *testing.T) {
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name     string
		first    <-chan containerd.ExitStatus
		again    []fakeWait
		wantCode int
		wantAt   bool // the exit carries at
		waits    int  // Wait calls after the first
	}{
		{name: "an exit", first: exitChan(3, at, nil), wantCode: 3, wantAt: true},
		{name: "a lost wait, set up again", first: exitChan(0, time.Time{}, errors.New("containerd went away")),
			again: []fakeWait{{ch: exitChan(7, at, nil)}}, wantCode: 7, wantAt: true, waits: 1},
		{name: "a task gone meanwhile", first: exitChan(0, time.Time{}, errors.New("containerd went away")),
			again: []fakeWait{{err: cerrdefs.ErrNotFound}}, wantCode: 255, waits: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRunner(New(Config{}), &api.Instance{UID: "u1", Name: "web", Tenant: "t1"})
			task := &fakeWaitTask{waits: tc.again}
			if len(task.waits) == 0 {
				task.waits = []fakeWait{{err: errors.New("unexpected Wait")}}
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan struct{})
			go func() {
				defer close(done)
				r.waitTask(ctx, "main", 4, task, tc.first)
			}()
			ex := <-r.exits
			<-done
			if ex.container != "main" || ex.generation != 4 || ex.code != tc.wantCode {
				t.Errorf("exit = %+v, want main, generation 4, code %d", ex, tc.wantCode)
			}
			if tc.wantAt && !ex.at.Equal(at) {
				t.Errorf("exit at %s, want %s", ex.at, at)
			}
			if task.calls != tc.waits {
				t.Errorf("%d waits set up again, want %d", task.calls, tc.waits)
			}
		})
	}
}

// TestWaitTaskEndsWithContext: a runner that stops (the agent is
// stopping) stops waiting, and reports no exit: the task runs on for the
// next agent to adopt.
func TestWaitTaskEndsWithContext(t *testing.T) {
	r := newRunner(New(Config{}), &api.Instance{UID: "u1", Name: "web", Tenant: "t1"})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	r.waitTask(ctx, "main", 1, &fakeWaitTask{}, make(chan containerd.ExitStatus))
	select {
	case ex := <-r.exits:
		t.Errorf("exit %+v reported after the context ended", ex)
	default:
	}
}
