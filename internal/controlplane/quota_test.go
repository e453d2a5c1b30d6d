package controlplane_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/internal/controlplane"
	"github.com/kanga-run/kanga/internal/store"
)

// An instance whose removal was asked for while its host was lost is
// deleted by the leader (nobody else is left to); its charge leaves the
// tenant's quota usage with it.
func TestLostHostDeleteReleasesQuota(t *testing.T) {
	e := newEnv(t)
	e.addHost("a", 4, nil)
	e.runCP("cp1")
	e.create("web", "1", api.RestartNever)
	e.wait("web", "placed", placed)
	if used, err := e.st.TenantUsage(t.Context(), "t1"); err != nil || used.Instances != 1 || used.MilliCPU != 1000 {
		t.Fatalf("usage after the create: %+v, %v", used, err)
	}
	if _, err := e.st.UpdateInstance(e.ctx, "web", func(i *api.Instance) error {
		i.DeletionRequested, i.StopRequested = true, true
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	e.killHost("a")
	ctx, cancel := context.WithTimeout(e.ctx, 30*time.Second)
	defer cancel()
	if err := e.st.WaitInstanceGone(ctx, "web"); err != nil {
		t.Fatalf("the leader did not delete the instance of the lost host: %v", err)
	}
	if used, err := e.st.TenantUsage(t.Context(), "t1"); err != nil || used != (api.QuotaAmounts{}) {
		t.Fatalf("usage after the leader's delete: %+v, %v; want none", used, err)
	}
}

// countingStore counts the leader's usage reconciles.
type countingStore struct {
	*store.Store
	reconciles atomic.Int32
}

func (c *countingStore) ReconcileAllUsage(ctx context.Context) ([]string, error) {
	c.reconciles.Add(1)
	return c.Store.ReconcileAllUsage(ctx)
}

// The leader recomputes the quota usage when it takes over and then
// periodically.
func TestLeaderReconcilesUsage(t *testing.T) {
	e := newEnv(t)
	e.addHost("a", 4, nil)
	cs := &countingStore{Store: e.st}
	cp := controlplane.New(controlplane.Config{Store: cs, ID: "cp", Logger: quiet(), LeaderTTL: time.Second,
		UsageReconcile: 100 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = cp.Run(ctx) }()
	defer func() { cancel(); <-done }()
	deadline := time.Now().Add(30 * time.Second)
	for cs.reconciles.Load() < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("the leader reconciled the usage %d times in 30 s", cs.reconciles.Load())
		}
		time.Sleep(50 * time.Millisecond)
	}
}
