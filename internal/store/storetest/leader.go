package storetest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
	"github.com/kanga-run/kanga/internal/store"
)

// testFencedWrites: the leader's writes succeed while it leads and the
// instance is unchanged, fail with a conflict otherwise, all or nothing in
// a batch, and fail as not-leader after it resigned.
func testFencedWrites(t *testing.T, s *store.Store) {
	ctx, tn := newTenant(t)
	mustCreate(t, ctx, s, newInstance(tn, "a"))
	mustCreate(t, ctx, s, newInstance(tn, "b"))
	versions, _, err := s.ListAllInstanceVersions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	rev := map[string]int64{}
	for _, v := range versions {
		if v.Tenant == tn {
			rev[v.Name] = v.ModRevision
		}
	}
	if rev["a"] == 0 || rev["b"] == 0 {
		t.Fatalf("ListAllInstanceVersions lacks the instances: %v", rev)
	}
	l, err := s.Campaign(ctx, "storetest-"+tn, "me", 2*time.Second)
	if err != nil {
		t.Fatalf("Campaign: %v", err)
	}
	placed := func(name, host string) *api.Instance {
		in := newInstance(tn, name)
		in.Status.Host = host
		return in
	}
	newRev, err := s.PutInstanceIf(ctx, l, placed("a", "h1"), rev["a"])
	if err != nil || newRev <= rev["a"] {
		t.Fatalf("PutInstanceIf = %d, %v", newRev, err)
	}
	_, err = s.PutInstanceIf(ctx, l, placed("a", "h2"), rev["a"])
	wantErr(t, "PutInstanceIf(stale revision)", err, errdefs.ErrConflict)

	// All or nothing: a is stale, so b is not written either.
	_, err = s.PutInstancesIf(ctx, l, []store.InstanceWrite{{Instance: placed("a", "h3"), ModRev: rev["a"]}, {Instance: placed("b", "h3"), ModRev: rev["b"]}})
	wantErr(t, "PutInstancesIf(one stale)", err, errdefs.ErrConflict)
	if got, _ := s.GetInstance(ctx, "b"); got.Status.Host != "" {
		t.Fatalf("a failed batch wrote b: host %q", got.Status.Host)
	}
	batchRev, err := s.PutInstancesIf(ctx, l, []store.InstanceWrite{{Instance: placed("a", "h3"), ModRev: newRev}, {Instance: placed("b", "h3"), ModRev: rev["b"]}})
	if err != nil {
		t.Fatalf("PutInstancesIf: %v", err)
	}
	for _, n := range []string{"a", "b"} {
		if got, _ := s.GetInstance(ctx, n); got.Status.Host != "h3" {
			t.Fatalf("after the batch %s is on %q, want h3", n, got.Status.Host)
		}
	}

	l.Resign(ctx)
	_, err = s.PutInstanceIf(ctx, l, placed("a", "h4"), batchRev)
	if !errors.Is(err, store.ErrNotLeader) {
		t.Fatalf("PutInstanceIf after resigning: %v, want ErrNotLeader", err)
	}
	err = s.DeleteInstanceIf(ctx, l, tn, "a", batchRev)
	if !store.IsNotLeader(err) {
		t.Fatalf("DeleteInstanceIf after resigning: %v, want ErrNotLeader", err)
	}
	if got, _ := s.GetInstance(ctx, "a"); got.Status.Host != "h3" {
		t.Fatalf("a deposed leader changed a: host %q", got.Status.Host)
	}
}

// testUnleasedFence: a write fenced on a host holding no lease fails with
// a conflict while the host holds one, and applies once it has none.
func testUnleasedFence(t *testing.T, s *store.Store) {
	ctx, tn := newTenant(t)
	host := "fence-" + tn
	if err := s.RegisterHost(ctx, &api.Host{Name: host}); err != nil {
		t.Fatal(err)
	}
	in := newInstance(tn, "a")
	in.Status.Host = host
	mustCreate(t, ctx, s, in)
	versions, _, err := s.ListAllInstanceVersions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var rev int64
	for _, v := range versions {
		if v.Tenant == tn && v.Name == "a" {
			rev = v.ModRevision
		}
	}
	l, err := s.Campaign(ctx, "storetest-"+tn, "me", 2*time.Second)
	if err != nil {
		t.Fatalf("Campaign: %v", err)
	}
	defer l.Resign(ctx)
	moved := newInstance(tn, "a")
	wctx, stopWatch := context.WithCancel(t.Context())
	defer stopWatch()
	hosts := s.WatchHosts(wctx)
	kctx, stop := context.WithCancel(ctx)
	kept := make(chan error, 1)
	go func() { kept <- s.KeepHostAlive(kctx, host, time.Second) }()
	waitPhase(t, hosts, host, api.HostReady)
	_, err = s.PutInstancesIf(ctx, l, []store.InstanceWrite{{Instance: moved, ModRev: rev, Unleased: host}})
	wantErr(t, "PutInstancesIf(fenced, host leased)", err, errdefs.ErrConflict)
	if cur, _ := s.GetInstance(ctx, "a"); cur.Status.Host != host {
		t.Fatalf("a fenced write moved a off its leased host: host %q", cur.Status.Host)
	}
	stop()
	<-kept
	waitPhase(t, hosts, host, api.HostNotReady)
	if _, err := s.PutInstancesIf(ctx, l, []store.InstanceWrite{{Instance: moved, ModRev: rev, Unleased: host}}); err != nil {
		t.Fatalf("PutInstancesIf(fenced, no lease): %v", err)
	}
}

// testHostCondition: a host's condition is stored, kept by the host's
// lease keeper, and cleared by an empty one.
func testHostCondition(t *testing.T, s *store.Store) {
	ctx, tn := newTenant(t)
	host := "cond-" + tn
	if err := s.RegisterHost(ctx, &api.Host{Name: host}); err != nil {
		t.Fatal(err)
	}
	if err := s.SetHostCondition(ctx, host, api.HostLeaseLapsed, "slow"); err != nil {
		t.Fatal(err)
	}
	// Unchanged: no write, no error.
	if err := s.SetHostCondition(ctx, host, api.HostLeaseLapsed, "slow"); err != nil {
		t.Fatal(err)
	}
	h, err := s.GetHost(ctx, host)
	if err != nil || h.Status.Condition != api.HostLeaseLapsed || h.Status.ConditionMessage != "slow" {
		t.Fatalf("host after SetHostCondition: %+v, %v", h, err)
	}
	if err := s.SetHostCondition(ctx, host, "", ""); err != nil {
		t.Fatal(err)
	}
	if h, _ := s.GetHost(ctx, host); h.Status.Condition != "" || h.Status.ConditionMessage != "" {
		t.Fatalf("condition not cleared: %+v", h.Status)
	}
	if err := s.SetHostCondition(ctx, "nope-"+tn, api.HostLost, ""); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("SetHostCondition(unknown host) = %v, want not found", err)
	}
}
