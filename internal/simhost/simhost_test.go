package simhost_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
	"github.com/kanga-run/kanga/internal/hostcontract"
	"github.com/kanga-run/kanga/internal/simhost"
	"github.com/kanga-run/kanga/internal/store"
	"github.com/kanga-run/kanga/internal/tenant"
)

// TestOnStore: the simulated host registers with its capacity and becomes
// Ready; an instance placed on it goes Creating, then Running; one placed
// elsewhere is left alone; one whose deletion was requested is removed.
func TestOnStore(t *testing.T) {
	st, err := store.Open(t.Context(), store.Config{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx, cancel := context.WithCancel(t.Context())
	var (
		mu     sync.Mutex
		phases []api.Phase
	)
	h, err := simhost.OnStore(ctx, st, simhost.Config{Name: "sim-a", CPUs: 4, Memory: 8 << 30,
		Observe: func(ev hostcontract.InstanceEvent) {
			mu.Lock()
			defer mu.Unlock()
			if !ev.Deleted && ev.Name == "mine" {
				phases = append(phases, ev.Instance.Status.Phase)
			}
		}}, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); <-h.Done() }()
	rec, err := st.GetHost(ctx, "sim-a")
	if err != nil || rec.Capacity.CPUs != 4 || len(rec.RuntimeClasses) == 0 {
		t.Fatalf("registered host = %+v, %v", rec, err)
	}

	tctx := tenant.WithName(ctx, tenant.Default)
	place := func(name, host string) {
		t.Helper()
		in := &api.Instance{Name: name, Tenant: tenant.Default, UID: "uid-" + name,
			Status: api.InstanceStatus{Phase: api.PhasePending, Host: host}}
		if err := st.CreateInstance(tctx, in); err != nil {
			t.Fatal(err)
		}
	}
	place("other", "sim-b")
	place("mine", "sim-a")
	waitFor(t, st, tctx, "mine to run", func() bool {
		in, err := st.GetInstance(tctx, "mine")
		return err == nil && in.Status.Phase == api.PhaseRunning
	})
	if h.Running() != 1 {
		t.Errorf("Running() = %d, want 1", h.Running())
	}
	mu.Lock()
	// The host's own watch may not have shown it Running yet.
	if len(phases) < 2 || phases[0] != api.PhasePending || phases[1] != api.PhaseCreating {
		t.Errorf("phases the host saw = %v, want Pending, then its Creating", phases)
	}
	mu.Unlock()
	if in, err := st.GetInstance(tctx, "other"); err != nil || in.Status.Phase != api.PhasePending {
		t.Errorf("the instance of another host = %+v, %v; want it left Pending", in, err)
	}

	if _, err := st.UpdateInstance(tctx, "mine", func(in *api.Instance) error { in.DeletionRequested = true; return nil }); err != nil {
		t.Fatal(err)
	}
	waitFor(t, st, tctx, "mine to be removed", func() bool {
		_, err := st.GetInstance(tctx, "mine")
		return errors.Is(err, errdefs.ErrNotFound)
	})
}

// waitFor checks cond after each change to the instances (the first
// events are the instances there are, "other" among them) until it holds.
func waitFor(t *testing.T, st *store.Store, ctx context.Context, what string, cond func() bool) {
	t.Helper()
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for range st.WatchAllInstances(wctx, 0) {
		if cond() {
			return
		}
	}
	t.Fatalf("waiting for %s: %v", what, wctx.Err())
}
