package agent

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
	"github.com/kanga-run/kanga/internal/model"
)

// TestNextDeadline: the loop's timer is set for the earliest of what the
// runner waits for, and for nothing when it waits for nothing.
func TestNextDeadline(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	for _, tc := range []struct {
		name     string
		killAt   time.Time
		deadline time.Time
		ctrs     []*ctr
		inits    []*ctr
		want     time.Time
	}{
		{name: "nothing pending", ctrs: []*ctr{{}, {}}},
		{name: "the instance's deadline", deadline: at(50), ctrs: []*ctr{{}}, want: at(50)},
		{name: "a kill before the deadline", killAt: at(10), deadline: at(50), want: at(10)},
		{name: "a restart before the kill", killAt: at(10), ctrs: []*ctr{{restartAt: at(30)}, {restartAt: at(5)}}, want: at(5)},
		{name: "a container's own kill", deadline: at(50), ctrs: []*ctr{{killAt: at(7)}, {restartAt: at(8)}}, want: at(7)},
		{name: "an init container's restart counts", deadline: at(50), inits: []*ctr{{init: true, restartAt: at(3)}}, ctrs: []*ctr{{restartAt: at(4)}}, want: at(3)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &runner{killAt: tc.killAt, deadline: tc.deadline, ctrs: tc.ctrs, inits: tc.inits}
			if got := r.nextDeadline(); !got.Equal(tc.want) {
				t.Errorf("nextDeadline = %s, want %s", got, tc.want)
			}
		})
	}
}

// parsed is res parsed, for tests that write resources as a tenant does.
func parsed(t testing.TB, res api.Resources) model.Resources {
	t.Helper()
	r, err := model.ParseResources(res)
	if err != nil {
		t.Fatalf("resources %+v: %v", res, err)
	}
	return r
}

// TestNewRunnerParsesResources: a runner parses its instance's resources
// once, when it is made; an error names each field that does not parse,
// and what parsed is kept.
func TestNewRunnerParsesResources(t *testing.T) {
	for _, tc := range []struct {
		name   string
		res    api.Resources
		want   model.Resources
		errs   []string // fields the error names
		shared bool
	}{
		{name: "none", want: model.Resources{}, shared: true},
		{name: "shared", res: api.Resources{CPU: "500m", Memory: "64Mi", LogSize: "1Mi", LogFiles: 2, IngressBandwidth: "1M"},
			want: model.Resources{MilliCPU: 500, Memory: 64 << 20, LogSize: 1 << 20, LogFiles: 2, IngressBPS: 1e6}, shared: true},
		{name: "dedicated", res: api.Resources{CPU: "2", CPUPolicy: model.CPUPolicyDedicated}, want: model.Resources{MilliCPU: 2000, DedicatedCores: 2}},
		{name: "bad fields", res: api.Resources{CPU: "lots", Memory: "64Mi", DiskWriteBPS: "fast"},
			want: model.Resources{Memory: 64 << 20}, errs: []string{"spec.resources.cpu", "spec.resources.diskWriteBps"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRunner(New(Config{}), &api.Instance{UID: "u", Name: "i", Tenant: "t", Spec: api.InstanceSpec{Resources: tc.res}})
			if r.res != tc.want {
				t.Errorf("res = %+v, want %+v", r.res, tc.want)
			}
			if r.shared() != tc.shared {
				t.Errorf("shared = %v, want %v", r.shared(), tc.shared)
			}
			if len(tc.errs) == 0 {
				if r.resErr != nil {
					t.Fatalf("resErr = %v", r.resErr)
				}
				return
			}
			if !errors.Is(r.resErr, errdefs.ErrInvalidArgument) {
				t.Fatalf("resErr = %v, want an InvalidArgument", r.resErr)
			}
			for _, f := range tc.errs {
				if !strings.Contains(r.resErr.Error(), f+":") {
					t.Errorf("resErr %q does not name %s", r.resErr, f)
				}
			}
		})
	}
}

// TestRunFailsOnResourcesThatDoNotParse: an instance whose resources do
// not parse fails before anything is made for it, with the fields named
// in its status; the API refuses such specs, so only a record written
// around it gets here.
func TestRunFailsOnResourcesThatDoNotParse(t *testing.T) {
	inst := api.Instance{Name: "web", Tenant: "t1", UID: "u1",
		Spec: api.InstanceSpec{RestartPolicy: api.RestartAlways, Resources: api.Resources{Memory: "a lot"},
			Containers: []api.ContainerSpec{{Name: "main", Image: "img"}}},
		Status: api.InstanceStatus{Phase: api.PhasePending, Host: "h"}}
	st := &memStore{inst: inst}
	// No containerd, network or cgroups: the runner must not reach them.
	a := New(Config{Store: st, HostName: "h"})
	r := newRunner(a, &inst)
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // waitForDelete returns at once
	r.run(ctx)
	got, writes := st.state()
	if writes != 1 {
		t.Fatalf("%d status writes, want 1", writes)
	}
	if got.Status.Phase != api.PhaseFailed || got.Status.Reason != reasonConfigError || !strings.Contains(got.Status.Message, "spec.resources.memory") {
		t.Errorf("status = %s %q %q; want Failed, %s, naming spec.resources.memory", got.Status.Phase, got.Status.Reason, got.Status.Message, reasonConfigError)
	}
	if len(got.Status.Containers) != 1 || got.Status.Containers[0].State != api.ContainerTerminated {
		t.Errorf("containers = %+v, want main terminated", got.Status.Containers)
	}
}
