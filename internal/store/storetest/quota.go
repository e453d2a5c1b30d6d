package storetest

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
	"github.com/kanga-run/kanga/internal/model"
	"github.com/kanga-run/kanga/internal/store"
)

func limits(instances int64) api.QuotaAmounts {
	l := model.NoLimits
	l.Instances = instances
	return l
}

// testQuotaRace: 30 creates racing a quota of 10 instances end with
// exactly 10 stored and 20 refused with a PermissionDenied that names the
// quota; the usage record counts the 10.
func testQuotaRace(t *testing.T, s *store.Store) {
	ctx, tn := newTenant(t)
	const n, quota = 30, 10
	var (
		wg      sync.WaitGroup
		start   = make(chan struct{})
		errs    = make([]error, n)
		created int
	)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			errs[i] = s.CreateInstance(ctx, newInstance(tn, fmt.Sprintf("i%02d", i)), store.WithQuota(limits(quota)))
		}()
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		switch {
		case err == nil:
			created++
		case errors.Is(err, errdefs.ErrPermissionDenied) && strings.Contains(err.Error(), fmt.Sprintf("tenant %s: quota instances 10/10 in use", tn)):
		default:
			t.Errorf("create %d: %v; want success or a refusal naming the quota", i, err)
		}
	}
	if created != quota {
		t.Fatalf("%d of %d racing creates succeeded under a quota of %d", created, n, quota)
	}
	list, err := s.ListInstances(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != quota {
		t.Fatalf("%d instances stored, want %d", len(list), quota)
	}
	used, err := s.TenantUsage(ctx, tn)
	if err != nil || used.Instances != quota {
		t.Fatalf("TenantUsage = %+v, %v; want %d instances", used, err, quota)
	}
	// Deleting one frees its place, and only one.
	if err := s.DeleteInstance(ctx, list[0].Name); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateInstance(ctx, newInstance(tn, "again"), store.WithQuota(limits(quota))); err != nil {
		t.Fatalf("create after a delete freed a place: %v", err)
	}
	err = s.CreateInstance(ctx, newInstance(tn, "over"), store.WithQuota(limits(quota)))
	wantErr(t, "create over the quota", err, errdefs.ErrPermissionDenied)
	// A taken name is reported as such even at the quota.
	wantErr(t, "create of a taken name", s.CreateInstance(ctx, newInstance(tn, "again"), store.WithQuota(limits(quota))), errdefs.ErrAlreadyExists)
}

// testQuotaUsage: creates and deletes of every kind (the tenant's own, a
// leader's fenced delete) keep the usage record equal to the sum of the
// instances' charges, and a reconcile finds nothing to correct; a record
// missing (instances stored before quotas) is computed on first use.
func testQuotaUsage(t *testing.T, s *store.Store) {
	ctx, tn := newTenant(t)
	big := newInstance(tn, "big")
	big.Spec.Resources = api.Resources{CPU: "1.5", Memory: "1Gi"}
	big.Spec.Ports = []api.PortMapping{{HostPort: 8080, ContainerPort: 80}}
	mustCreate(t, ctx, s, big)
	mustCreate(t, ctx, s, newInstance(tn, "small"))
	capped := newInstance(tn, "capped")
	capped.Spec.Resources = api.Resources{CPULimit: "1", Memory: "256Mi"}
	mustCreate(t, ctx, s, capped)
	want := api.QuotaAmounts{Instances: 3, MilliCPU: 1500, MemoryBytes: 1<<30 + 256<<20, Ports: 1}
	if used, err := s.TenantUsage(ctx, tn); err != nil || used != want {
		t.Fatalf("usage after creates = %+v, %v; want %+v", used, err, want)
	}
	cpuQuota := model.NoLimits
	cpuQuota.MilliCPU = 2000
	one := newInstance(tn, "one")
	one.Spec.Resources.CPU = "1"
	err := s.CreateInstance(ctx, one, store.WithQuota(cpuQuota))
	if !errors.Is(err, errdefs.ErrPermissionDenied) || !strings.Contains(err.Error(), "quota cpu 1.5/2 in use, this instance asks for 1") {
		t.Fatalf("cpu over quota: %v", err)
	}
	if err := s.DeleteInstance(ctx, "big"); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateInstance(ctx, one, store.WithQuota(cpuQuota)); err != nil {
		t.Fatalf("cpu within quota after a delete: %v", err)
	}
	// A leader's fenced delete releases the charge too.
	l, err := s.Campaign(ctx, "storetest-"+tn, "me", 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Resign(ctx)
	versions, _, err := s.ListAllInstanceVersions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range versions {
		if v.Tenant == tn && v.Name == "one" {
			if err := s.DeleteInstanceIf(ctx, l, tn, "one", v.ModRevision+1); !errors.Is(err, errdefs.ErrConflict) {
				t.Fatalf("DeleteInstanceIf(stale revision) = %v, want a conflict", err)
			}
			if err := s.DeleteInstanceIf(ctx, l, tn, "one", v.ModRevision); err != nil {
				t.Fatalf("DeleteInstanceIf: %v", err)
			}
		}
	}
	want = api.QuotaAmounts{Instances: 2, MemoryBytes: 256 << 20}
	if used, err := s.TenantUsage(ctx, tn); err != nil || used != want {
		t.Fatalf("usage after deletes = %+v, %v; want %+v", used, err, want)
	}
	if _, changed, err := s.ReconcileUsage(ctx, tn); err != nil || changed {
		t.Fatalf("ReconcileUsage after exact accounting: changed=%v, %v", changed, err)
	}
	fixed, err := s.ReconcileAllUsage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fixed {
		if f == tn {
			t.Fatalf("ReconcileAllUsage corrected %s, whose record was exact", tn)
		}
	}
}
