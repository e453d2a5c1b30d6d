// Package storetest is the conformance suite of package store. Run it
// against every way of reaching etcd (embedded, external) so that they
// behave the same.
//
// The suite only touches tenants it invents (random names), so it can run
// against a shared external cluster.
package storetest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
	"github.com/kanga-run/kanga/internal/store"
	"github.com/kanga-run/kanga/internal/tenant"
)

// Run runs the suite. open returns a ready store and arranges its closing
// with t.Cleanup.
func Run(t *testing.T, open func(t *testing.T) *store.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s *store.Store)
	}{
		{"CreateGet", testCreateGet},
		{"CreateErrors", testCreateErrors},
		{"NoTenant", testNoTenant},
		{"List", testList},
		{"TenantIsolation", testTenantIsolation},
		{"UpdateConcurrent", testUpdateConcurrent},
		{"UpdateErrors", testUpdateErrors},
		{"Delete", testDelete},
		{"WaitInstance", testWaitInstance},
		{"WaitInstanceGone", testWaitInstanceGone},
		{"ListAllInstances", testListAllInstances},
		{"WatchAllInstances", testWatchAllInstances},
		{"WatchAllInstancesFromZero", testWatchAllInstancesFromZero},
		{"Tokens", testTokens},
		{"Tenants", testTenants},
		{"HostRegistry", testHostRegistry},
		{"HostImages", testHostImages},
		{"HostLease", testHostLease},
		{"HostsChangedSince", testHostsChangedSince},
		{"WatchInstance", testWatchInstance},
		{"FencedWrites", testFencedWrites},
		{"UnleasedFence", testUnleasedFence},
		{"HostCondition", testHostCondition},
		{"Purges", testPurges},
		{"QuotaRace", testQuotaRace},
		{"QuotaUsage", testQuotaUsage},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.fn(t, open(t))
		})
	}
}

// newTenant returns a context for a fresh tenant and its name.
func newTenant(t *testing.T) (context.Context, string) {
	t.Helper()
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	name := "st-" + hex.EncodeToString(b)
	return tenant.WithName(t.Context(), name), name
}

func newInstance(tenantName, name string) *api.Instance {
	return &api.Instance{
		Name:      name,
		Tenant:    tenantName,
		UID:       tenantName + "-" + name,
		CreatedAt: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC),
		Spec: api.InstanceSpec{
			Containers: []api.ContainerSpec{{Name: "main", Image: "busybox", Args: []string{"sleep", "1"}}},
		},
		Status: api.InstanceStatus{Phase: api.PhasePending},
	}
}

func mustCreate(t *testing.T, ctx context.Context, s *store.Store, inst *api.Instance) {
	t.Helper()
	if err := s.CreateInstance(ctx, inst); err != nil {
		t.Fatalf("CreateInstance(%s/%s): %v", inst.Tenant, inst.Name, err)
	}
}

func wantErr(t *testing.T, what string, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("%s: error = %v, want %v", what, err, want)
	}
}

func testCreateGet(t *testing.T, s *store.Store) {
	ctx, tn := newTenant(t)
	in := newInstance(tn, "web")
	in.Spec.Ports = []api.PortMapping{{HostPort: 8080, ContainerPort: 80}}
	mustCreate(t, ctx, s, in)

	got, err := s.GetInstance(ctx, "web")
	if err != nil {
		t.Fatalf("GetInstance: %v", err)
	}
	if got.UID != in.UID || got.Tenant != tn || !got.CreatedAt.Equal(in.CreatedAt) ||
		len(got.Spec.Ports) != 1 || got.Spec.Ports[0].HostPort != 8080 || got.Spec.Containers[0].Image != "busybox" {
		t.Fatalf("GetInstance = %+v, want %+v", got, in)
	}
	_, err = s.GetInstance(ctx, "nope")
	wantErr(t, "GetInstance(missing)", err, errdefs.ErrNotFound)
}

func testCreateErrors(t *testing.T, s *store.Store) {
	ctx, tn := newTenant(t)
	mustCreate(t, ctx, s, newInstance(tn, "web"))

	tests := []struct {
		name string
		inst *api.Instance
		want error
	}{
		{"duplicate", newInstance(tn, "web"), errdefs.ErrAlreadyExists},
		{"other tenant", newInstance("someone-else", "db"), errdefs.ErrPermissionDenied},
		{"empty tenant", newInstance("", "db"), errdefs.ErrPermissionDenied},
		{"empty name", newInstance(tn, ""), errdefs.ErrInvalidArgument},
		{"slash in name", newInstance(tn, "a/b"), errdefs.ErrInvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantErr(t, "CreateInstance", s.CreateInstance(ctx, tt.inst), tt.want)
		})
	}
	// The failed creates changed nothing.
	list, err := s.ListInstances(ctx)
	if err != nil || len(list) != 1 {
		t.Fatalf("ListInstances = %d items, %v; want 1", len(list), err)
	}
}

// testNoTenant checks that no tenant-scoped call falls back to some
// default when the context carries no tenant.
func testNoTenant(t *testing.T, s *store.Store) {
	ctx := t.Context()
	noop := func(*api.Instance) error { return nil }
	calls := []struct {
		name string
		call func() error
	}{
		{"CreateInstance", func() error { return s.CreateInstance(ctx, newInstance("", "web")) }},
		{"GetInstance", func() error { _, err := s.GetInstance(ctx, "web"); return err }},
		{"ListInstances", func() error { _, err := s.ListInstances(ctx); return err }},
		{"UpdateInstance", func() error { _, err := s.UpdateInstance(ctx, "web", noop); return err }},
		{"DeleteInstance", func() error { return s.DeleteInstance(ctx, "web") }},
		{"WaitInstance", func() error {
			_, err := s.WaitInstance(ctx, "web", func(*api.Instance) bool { return true })
			return err
		}},
		{"WaitInstanceGone", func() error { return s.WaitInstanceGone(ctx, "web") }},
	}
	for _, c := range calls {
		t.Run(c.name, func(t *testing.T) {
			wantErr(t, c.name, c.call(), errdefs.ErrFailedPrecondition)
		})
	}
}

func testList(t *testing.T, s *store.Store) {
	ctx, tn := newTenant(t)
	list, err := s.ListInstances(ctx)
	if err != nil || len(list) != 0 {
		t.Fatalf("ListInstances(empty tenant) = %v, %v; want nothing", list, err)
	}
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	// Created out of order; ties on CreatedAt sort by name.
	for _, c := range []struct {
		name string
		at   time.Duration
	}{{"c", 2 * time.Second}, {"b", time.Second}, {"a", 2 * time.Second}, {"z", 0}} {
		in := newInstance(tn, c.name)
		in.CreatedAt = base.Add(c.at)
		mustCreate(t, ctx, s, in)
	}
	list, err = s.ListInstances(ctx)
	if err != nil {
		t.Fatalf("ListInstances: %v", err)
	}
	var got []string
	for _, in := range list {
		got = append(got, in.Name)
	}
	if fmt.Sprint(got) != "[z b a c]" {
		t.Fatalf("ListInstances order = %v, want [z b a c]", got)
	}
}

func testTenantIsolation(t *testing.T, s *store.Store) {
	ctxA, a := newTenant(t)
	ctxB, b := newTenant(t)
	// A tenant whose name is a prefix of another's must not see it.
	ctxAB := tenant.WithName(t.Context(), a+"b")

	inA := newInstance(a, "web")
	inA.Spec.Containers[0].Image = "image-of-a"
	inB := newInstance(b, "web")
	inB.Spec.Containers[0].Image = "image-of-b"
	mustCreate(t, ctxA, s, inA)
	mustCreate(t, ctxB, s, inB) // same name, other tenant: no conflict

	for _, c := range []struct {
		ctx   context.Context
		image string
	}{{ctxA, "image-of-a"}, {ctxB, "image-of-b"}} {
		got, err := s.GetInstance(c.ctx, "web")
		if err != nil || got.Spec.Containers[0].Image != c.image {
			t.Fatalf("GetInstance = %+v, %v; want image %s", got, err, c.image)
		}
		list, err := s.ListInstances(c.ctx)
		if err != nil || len(list) != 1 || list[0].Spec.Containers[0].Image != c.image {
			t.Fatalf("ListInstances = %+v, %v; want only image %s", list, err, c.image)
		}
	}
	if list, err := s.ListInstances(ctxAB); err != nil || len(list) != 0 {
		t.Fatalf("ListInstances(%sb) = %+v, %v; want nothing", a, list, err)
	}
	if _, err := s.GetInstance(ctxAB, "web"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("GetInstance(%sb) error = %v, want not found", a, err)
	}

	// A updates and deletes its own "web"; B's stays as it was.
	if _, err := s.UpdateInstance(ctxA, "web", func(in *api.Instance) error {
		in.Status.Phase = api.PhaseRunning
		return nil
	}); err != nil {
		t.Fatalf("UpdateInstance(A): %v", err)
	}
	if got, err := s.GetInstance(ctxB, "web"); err != nil || got.Status.Phase != api.PhasePending {
		t.Fatalf("B's instance after A's update = %+v, %v; want Pending", got, err)
	}
	if err := s.DeleteInstance(ctxA, "web"); err != nil {
		t.Fatalf("DeleteInstance(A): %v", err)
	}
	if _, err := s.GetInstance(ctxB, "web"); err != nil {
		t.Fatalf("B's instance after A's delete: %v", err)
	}
	wantErr(t, "DeleteInstance(A again)", s.DeleteInstance(ctxA, "web"), errdefs.ErrNotFound)
	_, err := s.UpdateInstance(ctxA, "web", func(*api.Instance) error { return nil })
	wantErr(t, "UpdateInstance(A after delete)", err, errdefs.ErrNotFound)
}

// testUpdateConcurrent has several writers increment a counter in the same
// instance; optimistic concurrency must lose no increment.
func testUpdateConcurrent(t *testing.T, s *store.Store) {
	ctx, tn := newTenant(t)
	in := newInstance(tn, "counter")
	in.Status.Message = "0"
	mustCreate(t, ctx, s, in)

	const writers, increments = 8, 10
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range increments {
				_, err := s.UpdateInstance(ctx, "counter", func(in *api.Instance) error {
					n, err := strconv.Atoi(in.Status.Message)
					if err != nil {
						return err
					}
					in.Status.Message = strconv.Itoa(n + 1)
					return nil
				})
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("UpdateInstance: %v", err)
	}
	got, err := s.GetInstance(ctx, "counter")
	if err != nil {
		t.Fatalf("GetInstance: %v", err)
	}
	if want := strconv.Itoa(writers * increments); got.Status.Message != want {
		t.Fatalf("counter = %s, want %s: updates were lost", got.Status.Message, want)
	}
}

func testUpdateErrors(t *testing.T, s *store.Store) {
	ctx, tn := newTenant(t)
	mustCreate(t, ctx, s, newInstance(tn, "web"))

	errBoom := fmt.Errorf("boom: %w", errdefs.ErrFailedPrecondition)
	tests := []struct {
		name string
		inst string
		fn   func(*api.Instance) error
		want error
	}{
		{"fn error", "web", func(in *api.Instance) error { in.Status.Phase = api.PhaseFailed; return errBoom }, errBoom},
		{"rename", "web", func(in *api.Instance) error { in.Name = "other"; return nil }, errdefs.ErrInvalidArgument},
		{"change tenant", "web", func(in *api.Instance) error { in.Tenant = "other"; return nil }, errdefs.ErrInvalidArgument},
		{"missing", "nope", func(*api.Instance) error { return nil }, errdefs.ErrNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := s.UpdateInstance(ctx, tt.inst, tt.fn)
			wantErr(t, "UpdateInstance", err, tt.want)
		})
	}
	// None of the failed updates was stored.
	got, err := s.GetInstance(ctx, "web")
	if err != nil || got.Status.Phase != api.PhasePending || got.Name != "web" || got.Tenant != tn {
		t.Fatalf("after failed updates GetInstance = %+v, %v; want it unchanged", got, err)
	}

	// A successful update returns what it stored.
	upd, err := s.UpdateInstance(ctx, "web", func(in *api.Instance) error {
		in.StopRequested = true
		return nil
	})
	if err != nil || !upd.StopRequested {
		t.Fatalf("UpdateInstance = %+v, %v; want StopRequested", upd, err)
	}
}

func testDelete(t *testing.T, s *store.Store) {
	ctx, tn := newTenant(t)
	mustCreate(t, ctx, s, newInstance(tn, "web"))
	if err := s.DeleteInstance(ctx, "web"); err != nil {
		t.Fatalf("DeleteInstance: %v", err)
	}
	_, err := s.GetInstance(ctx, "web")
	wantErr(t, "GetInstance(deleted)", err, errdefs.ErrNotFound)
	wantErr(t, "DeleteInstance(deleted)", s.DeleteInstance(ctx, "web"), errdefs.ErrNotFound)
	// The name is free again.
	mustCreate(t, ctx, s, newInstance(tn, "web"))
}

func isRunning(in *api.Instance) bool { return in.Status.Phase == api.PhaseRunning }

// waitAsync runs WaitInstance in the background. The returned channel
// "checked" is closed after cond has seen the current version, so that the
// test changes the instance only once the wait is watching for it.
func waitAsync(ctx context.Context, s *store.Store, name string, cond func(*api.Instance) bool) (checked <-chan struct{}, result <-chan waitResult) {
	ch := make(chan struct{})
	res := make(chan waitResult, 1)
	var once sync.Once
	go func() {
		inst, err := s.WaitInstance(ctx, name, func(in *api.Instance) bool {
			defer once.Do(func() { close(ch) })
			return cond(in)
		})
		res <- waitResult{inst, err}
	}()
	return ch, res
}

type waitResult struct {
	inst *api.Instance
	err  error
}

func testWaitInstance(t *testing.T, s *store.Store) {
	ctx, tn := newTenant(t)
	mustCreate(t, ctx, s, newInstance(tn, "web"))

	t.Run("already true", func(t *testing.T) {
		got, err := s.WaitInstance(ctx, "web", func(*api.Instance) bool { return true })
		if err != nil || got.Name != "web" {
			t.Fatalf("WaitInstance = %+v, %v", got, err)
		}
	})

	t.Run("missing", func(t *testing.T) {
		_, err := s.WaitInstance(ctx, "nope", isRunning)
		wantErr(t, "WaitInstance", err, errdefs.ErrNotFound)
	})

	t.Run("met later", func(t *testing.T) {
		checked, result := waitAsync(ctx, s, "web", isRunning)
		<-checked
		// An update that does not satisfy cond, then one that does.
		for _, p := range []api.Phase{api.PhaseCreating, api.PhaseRunning} {
			if _, err := s.UpdateInstance(ctx, "web", func(in *api.Instance) error {
				in.Status.Phase = p
				return nil
			}); err != nil {
				t.Fatalf("UpdateInstance: %v", err)
			}
		}
		r := <-result
		if r.err != nil || r.inst.Status.Phase != api.PhaseRunning {
			t.Fatalf("WaitInstance = %+v, %v; want Running", r.inst, r.err)
		}
	})

	t.Run("deleted while waiting", func(t *testing.T) {
		mustCreate(t, ctx, s, newInstance(tn, "doomed"))
		checked, result := waitAsync(ctx, s, "doomed", isRunning)
		<-checked
		if err := s.DeleteInstance(ctx, "doomed"); err != nil {
			t.Fatalf("DeleteInstance: %v", err)
		}
		r := <-result
		wantErr(t, "WaitInstance", r.err, errdefs.ErrNotFound)
	})

	t.Run("canceled", func(t *testing.T) {
		cctx, cancel := context.WithCancel(ctx)
		checked, result := waitAsync(cctx, s, "web", func(*api.Instance) bool { return false })
		<-checked
		cancel()
		r := <-result
		wantErr(t, "WaitInstance", r.err, context.Canceled)
	})
}

func testWaitInstanceGone(t *testing.T, s *store.Store) {
	ctx, tn := newTenant(t)
	if err := s.WaitInstanceGone(ctx, "never-existed"); err != nil {
		t.Fatalf("WaitInstanceGone(missing) = %v, want nil", err)
	}

	mustCreate(t, ctx, s, newInstance(tn, "web"))
	done := make(chan error, 1)
	go func() { done <- s.WaitInstanceGone(ctx, "web") }()
	// An update is not a deletion; the wait goes on.
	if _, err := s.UpdateInstance(ctx, "web", func(in *api.Instance) error {
		in.DeletionRequested = true
		return nil
	}); err != nil {
		t.Fatalf("UpdateInstance: %v", err)
	}
	if err := s.DeleteInstance(ctx, "web"); err != nil {
		t.Fatalf("DeleteInstance: %v", err)
	}
	if err := <-done; err != nil {
		t.Fatalf("WaitInstanceGone = %v", err)
	}

	cctx, cancel := context.WithCancel(ctx)
	mustCreate(t, ctx, s, newInstance(tn, "stays"))
	cancel()
	wantErr(t, "WaitInstanceGone(canceled)", s.WaitInstanceGone(cctx, "stays"), context.Canceled)
}

func testListAllInstances(t *testing.T, s *store.Store) {
	ctxA, a := newTenant(t)
	ctxB, b := newTenant(t)
	mustCreate(t, ctxA, s, newInstance(a, "web"))
	mustCreate(t, ctxB, s, newInstance(b, "web"))
	mustCreate(t, ctxB, s, newInstance(b, "db"))

	// No tenant in the context: this is the agents' cross-tenant view.
	all, rev, err := s.ListAllInstances(t.Context())
	if err != nil {
		t.Fatalf("ListAllInstances: %v", err)
	}
	if rev <= 0 {
		t.Fatalf("ListAllInstances revision = %d, want > 0", rev)
	}
	got := map[string]bool{}
	for _, in := range all {
		if in.Tenant == a || in.Tenant == b {
			got[in.Tenant+"/"+in.Name] = true
		}
	}
	want := map[string]bool{a + "/web": true, b + "/web": true, b + "/db": true}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("ListAllInstances = %v, want %v", got, want)
	}
}

// collect reads events of the given tenants until n have arrived.
func collect(t *testing.T, ch <-chan store.InstanceEvent, tenants map[string]bool, n int) []store.InstanceEvent {
	t.Helper()
	var out []store.InstanceEvent
	for len(out) < n {
		ev, ok := <-ch
		if !ok {
			t.Fatalf("watch closed after %d events, want %d", len(out), n)
		}
		if tenants[ev.Tenant] {
			out = append(out, ev)
		}
	}
	return out
}

func describe(evs []store.InstanceEvent) []string {
	var out []string
	for _, ev := range evs {
		s := "put"
		if ev.Deleted {
			s = "delete"
		}
		phase := "-"
		if ev.Instance != nil {
			phase = string(ev.Instance.Status.Phase)
		}
		out = append(out, fmt.Sprintf("%s %s/%s %s", s, ev.Tenant, ev.Name, phase))
	}
	return out
}

func testWatchAllInstances(t *testing.T, s *store.Store) {
	ctxA, a := newTenant(t)
	ctxB, b := newTenant(t)
	mustCreate(t, ctxA, s, newInstance(a, "before")) // listed, not watched
	_, rev, err := s.ListAllInstances(t.Context())
	if err != nil {
		t.Fatalf("ListAllInstances: %v", err)
	}
	wctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	ch := s.WatchAllInstances(wctx, rev)

	mustCreate(t, ctxA, s, newInstance(a, "web"))
	mustCreate(t, ctxB, s, newInstance(b, "web"))
	if _, err := s.UpdateInstance(ctxA, "web", func(in *api.Instance) error {
		in.Status.Phase = api.PhaseRunning
		return nil
	}); err != nil {
		t.Fatalf("UpdateInstance: %v", err)
	}
	if err := s.DeleteInstance(ctxA, "web"); err != nil {
		t.Fatalf("DeleteInstance: %v", err)
	}
	if err := s.DeleteInstance(ctxA, "before"); err != nil {
		t.Fatalf("DeleteInstance: %v", err)
	}

	evs := collect(t, ch, map[string]bool{a: true, b: true}, 5)
	want := []string{
		"put " + a + "/web Pending",
		"put " + b + "/web Pending",
		"put " + a + "/web Running",
		"delete " + a + "/web Running", // a deletion carries the last version
		"delete " + a + "/before Pending",
	}
	if got := describe(evs); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("events:\n got %q\nwant %q", got, want)
	}
	for i := 1; i < len(evs); i++ {
		if evs[i].Revision <= evs[i-1].Revision {
			t.Fatalf("event revisions not increasing: %d then %d", evs[i-1].Revision, evs[i].Revision)
		}
	}

	// Resuming from the revision of the third event replays the rest.
	rctx, rcancel := context.WithCancel(t.Context())
	defer rcancel()
	again := collect(t, s.WatchAllInstances(rctx, evs[2].Revision), map[string]bool{a: true, b: true}, 2)
	if got := describe(again); fmt.Sprint(got) != fmt.Sprint(want[3:]) {
		t.Fatalf("resumed events:\n got %q\nwant %q", got, want[3:])
	}

	// The channel closes once the context ends.
	cancel()
	for range ch {
	}
}

func testWatchAllInstancesFromZero(t *testing.T, s *store.Store) {
	ctx, tn := newTenant(t)
	mustCreate(t, ctx, s, newInstance(tn, "existing"))
	wctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	ch := s.WatchAllInstances(wctx, 0)
	mustCreate(t, ctx, s, newInstance(tn, "new"))

	evs := collect(t, ch, map[string]bool{tn: true}, 2)
	want := []string{"put " + tn + "/existing Pending", "put " + tn + "/new Pending"}
	if got := describe(evs); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("events:\n got %q\nwant %q", got, want)
	}
	cancel()
	for range ch {
	}
}

func testTokens(t *testing.T, s *store.Store) {
	ctx := t.Context()
	_, a := newTenant(t)
	_, b := newTenant(t)
	tokA, tokB := "token-of-"+a, "token-of-"+b
	for tok, tn := range map[string]string{tokA: a, tokB: b} {
		if err := s.PutToken(ctx, tok, tn); err != nil {
			t.Fatalf("PutToken: %v", err)
		}
	}
	for tok, want := range map[string]string{tokA: a, tokB: b} {
		if got, err := s.LookupToken(ctx, tok); err != nil || got != want {
			t.Fatalf("LookupToken = %q, %v; want %q", got, err, want)
		}
	}

	tests := []struct {
		name  string
		token string
		want  error
	}{
		{"unknown", "token-of-nobody-" + a, errdefs.ErrUnauthenticated},
		{"empty", "", errdefs.ErrUnauthenticated},
		{"prefix of a token", tokA[:len(tokA)-1], errdefs.ErrUnauthenticated},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := s.LookupToken(ctx, tt.token)
			wantErr(t, "LookupToken", err, tt.want)
		})
	}

	wantErr(t, "PutToken(bad tenant)", s.PutToken(ctx, "x", "Not_A_Tenant"), errdefs.ErrInvalidArgument)
	wantErr(t, "PutToken(empty token)", s.PutToken(ctx, "", a), errdefs.ErrInvalidArgument)

	// Re-putting a token moves it; deleting revokes it.
	if err := s.PutToken(ctx, tokA, b); err != nil {
		t.Fatalf("PutToken: %v", err)
	}
	if got, err := s.LookupToken(ctx, tokA); err != nil || got != b {
		t.Fatalf("LookupToken after move = %q, %v; want %q", got, err, b)
	}
	if err := s.DeleteToken(ctx, tokA); err != nil {
		t.Fatalf("DeleteToken: %v", err)
	}
	_, err := s.LookupToken(ctx, tokA)
	wantErr(t, "LookupToken(revoked)", err, errdefs.ErrUnauthenticated)
	wantErr(t, "DeleteToken(revoked)", s.DeleteToken(ctx, tokA), errdefs.ErrNotFound)
}

func testTenants(t *testing.T, s *store.Store) {
	ctx, tn := newTenant(t)
	token := "first-token-of-" + tn
	if err := s.CreateTenant(ctx, &api.Tenant{Name: tn, DefaultRuntime: "crun"}, token); err != nil {
		t.Fatalf("CreateTenant: %v", err)
	}
	wantErr(t, "CreateTenant(again)", s.CreateTenant(ctx, &api.Tenant{Name: tn}, "other-"+token), errdefs.ErrAlreadyExists)
	wantErr(t, "CreateTenant(bad name)", s.CreateTenant(ctx, &api.Tenant{Name: "Bad_Name"}, "x"), errdefs.ErrInvalidArgument)

	p, err := s.LookupPrincipal(ctx, token)
	if err != nil || p.Tenant != tn || p.Admin {
		t.Fatalf("LookupPrincipal = %+v, %v; want tenant %s, not admin", p, err, tn)
	}
	// EnsureTenant leaves an existing tenant as it is.
	if err := s.EnsureTenant(ctx, &api.Tenant{Name: tn, DefaultRuntime: "runc"}); err != nil {
		t.Fatalf("EnsureTenant: %v", err)
	}
	got, err := s.GetTenant(ctx, tn)
	if err != nil || got.DefaultRuntime != "crun" {
		t.Fatalf("GetTenant = %+v, %v; want DefaultRuntime crun", got, err)
	}
	all, err := s.ListTenants(ctx)
	if err != nil {
		t.Fatalf("ListTenants: %v", err)
	}
	if !slices.ContainsFunc(all, func(x api.Tenant) bool { return x.Name == tn }) {
		t.Fatalf("ListTenants = %+v, want it to contain %s", all, tn)
	}

	// A tenant with instances cannot be deleted.
	mustCreate(t, ctx, s, newInstance(tn, "web"))
	wantErr(t, "DeleteTenant(with instances)", s.DeleteTenant(ctx, tn), errdefs.ErrFailedPrecondition)
	if err := s.DeleteInstance(ctx, "web"); err != nil {
		t.Fatalf("DeleteInstance: %v", err)
	}
	if err := s.DeleteTenant(ctx, tn); err != nil {
		t.Fatalf("DeleteTenant: %v", err)
	}
	_, err = s.GetTenant(ctx, tn)
	wantErr(t, "GetTenant(deleted)", err, errdefs.ErrNotFound)
	_, err = s.LookupToken(ctx, token)
	wantErr(t, "LookupToken(token of deleted tenant)", err, errdefs.ErrUnauthenticated)
	wantErr(t, "DeleteTenant(deleted)", s.DeleteTenant(ctx, tn), errdefs.ErrNotFound)

	admin := "admin-token-of-" + tn
	if err := s.PutAdminToken(ctx, admin, tenant.Default); err != nil {
		t.Fatalf("PutAdminToken: %v", err)
	}
	if p, err := s.LookupPrincipal(ctx, admin); err != nil || !p.Admin || p.Tenant != tenant.Default {
		t.Fatalf("LookupPrincipal(admin) = %+v, %v; want admin in %s", p, err, tenant.Default)
	}
	if err := s.DeleteToken(ctx, admin); err != nil {
		t.Fatalf("DeleteToken: %v", err)
	}
}
