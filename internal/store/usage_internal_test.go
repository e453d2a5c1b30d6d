package store

import (
	"testing"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/internal/tenant"
)

// TestUsageRepair: a usage record that disagrees with the instances (left
// by a version without quotas, or edited by hand) is corrected by
// ReconcileUsage; one that is missing is computed on first use, so that
// instances stored before quotas count.
func TestUsageRepair(t *testing.T) {
	s := openInternal(t)
	ctx := tenant.WithName(t.Context(), "t")
	for _, name := range []string{"a", "b"} {
		inst := &api.Instance{Name: name, Tenant: "t", Spec: api.InstanceSpec{Resources: api.Resources{CPU: "1"}}}
		if err := s.CreateInstance(ctx, inst); err != nil {
			t.Fatal(err)
		}
	}
	want := api.QuotaAmounts{Instances: 2, MilliCPU: 2000}

	if _, err := s.client.Put(ctx, usageKey("t"), `{"instances":7,"milliCpu":1}`); err != nil {
		t.Fatal(err)
	}
	got, changed, err := s.ReconcileUsage(ctx, "t")
	if err != nil || !changed || got != want {
		t.Fatalf("ReconcileUsage of a wrong record = %+v, changed=%v, %v; want %+v corrected", got, changed, err, want)
	}
	if used, err := s.TenantUsage(ctx, "t"); err != nil || used != want {
		t.Fatalf("TenantUsage after the repair = %+v, %v", used, err)
	}

	if _, err := s.client.Delete(ctx, usageKey("t")); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteInstance(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	want = api.QuotaAmounts{Instances: 1, MilliCPU: 1000}
	if used, err := s.TenantUsage(ctx, "t"); err != nil || used != want {
		t.Fatalf("usage rebuilt from the instances = %+v, %v; want %+v", used, err, want)
	}
}

// TestUsageGuessStale: a store's remembered usage goes stale when another
// store (another API server replica) removes an instance; a create that
// the stale record would refuse reads again and is admitted.
func TestUsageGuessStale(t *testing.T) {
	dir := t.TempDir()
	a, err := Open(t.Context(), Config{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := Open(t.Context(), Config{Endpoints: []string{"unix://" + dir + "/etcd.sock"}})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ctx := tenant.WithName(t.Context(), "t")
	limits := api.QuotaAmounts{Instances: 2, MilliCPU: -1, MemoryBytes: -1, Ports: -1, Volumes: -1, Devices: -1}
	for _, name := range []string{"x", "y"} {
		if err := a.CreateInstance(ctx, &api.Instance{Name: name, Tenant: "t"}, WithQuota(limits)); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.DeleteInstance(ctx, "x"); err != nil {
		t.Fatal(err)
	}
	if err := a.CreateInstance(ctx, &api.Instance{Name: "z", Tenant: "t"}, WithQuota(limits)); err != nil {
		t.Fatalf("create after another store freed a place: %v", err)
	}
	if err := a.CreateInstance(ctx, &api.Instance{Name: "w", Tenant: "t"}, WithQuota(limits)); err == nil {
		t.Fatal("a third instance was admitted under a quota of 2")
	}
}
