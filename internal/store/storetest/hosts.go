package storetest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
	"github.com/kanga-run/kanga/internal/store"
)

// newHostName returns a host name no other run uses.
func newHostName(t *testing.T) string {
	t.Helper()
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return "st-host-" + hex.EncodeToString(b)
}

func newHost(name string) *api.Host {
	return &api.Host{
		Name:           name,
		Address:        "https://" + name + ":7443",
		Labels:         map[string]string{"zone": "a"},
		Capacity:       api.HostCapacity{CPUs: 4, MemoryBytes: 8 << 30, Pods: 110},
		RuntimeClasses: []string{"runc", "crun"},
	}
}

func mustGetHost(t *testing.T, s *store.Store, name string) *api.Host {
	t.Helper()
	h, err := s.GetHost(t.Context(), name)
	if err != nil {
		t.Fatalf("GetHost(%s): %v", name, err)
	}
	return h
}

func testHostRegistry(t *testing.T, s *store.Store) {
	ctx := t.Context()
	name := newHostName(t)
	if err := s.RegisterHost(ctx, newHost(name)); err != nil {
		t.Fatalf("RegisterHost: %v", err)
	}
	h := mustGetHost(t, s, name)
	if h.Capacity.CPUs != 4 || h.Labels["zone"] != "a" || h.Status.RegisteredAt.IsZero() {
		t.Fatalf("GetHost = %+v, want the registered record", h)
	}
	// Registered but holding no lease: NotReady.
	if h.Status.Phase != api.HostNotReady || h.Status.Reason != store.ReasonNoLease {
		t.Fatalf("phase without a lease = %q (%q), want NotReady (%s)", h.Status.Phase, h.Status.Reason, store.ReasonNoLease)
	}

	h, err := s.UpdateHost(ctx, name, func(h *api.Host) error { h.Cordoned = true; return nil })
	if err != nil || !h.Cordoned {
		t.Fatalf("UpdateHost(cordon) = %+v, %v", h, err)
	}
	// Registering again updates capacity and keeps the cordon.
	again := newHost(name)
	again.Capacity.CPUs = 8
	if err := s.RegisterHost(ctx, again); err != nil {
		t.Fatalf("RegisterHost(again): %v", err)
	}
	if h := mustGetHost(t, s, name); !h.Cordoned || h.Capacity.CPUs != 8 {
		t.Fatalf("after re-registering: %+v, want cordoned with 8 CPUs", h)
	}

	other := newHostName(t)
	if err := s.RegisterHost(ctx, newHost(other)); err != nil {
		t.Fatalf("RegisterHost: %v", err)
	}
	all, err := s.ListHosts(ctx)
	if err != nil {
		t.Fatalf("ListHosts: %v", err)
	}
	var found []string
	for _, h := range all {
		if h.Name == name || h.Name == other {
			found = append(found, h.Name)
		}
	}
	if len(found) != 2 {
		t.Fatalf("ListHosts has %v of %s and %s", found, name, other)
	}
	for i := 1; i < len(all); i++ {
		if all[i-1].Name >= all[i].Name {
			t.Fatalf("ListHosts not sorted by name: %s before %s", all[i-1].Name, all[i].Name)
		}
	}

	if err := s.DeleteHost(ctx, other); err != nil {
		t.Fatalf("DeleteHost: %v", err)
	}
	_, err = s.GetHost(ctx, other)
	wantErr(t, "GetHost(deleted)", err, errdefs.ErrNotFound)
	wantErr(t, "DeleteHost(deleted)", s.DeleteHost(ctx, other), errdefs.ErrNotFound)
	_, err = s.UpdateHost(ctx, other, func(*api.Host) error { return nil })
	wantErr(t, "UpdateHost(deleted)", err, errdefs.ErrNotFound)

	_, err = s.UpdateHost(ctx, name, func(h *api.Host) error { h.Name = "renamed"; return nil })
	wantErr(t, "UpdateHost(rename)", err, errdefs.ErrInvalidArgument)
	boom := errors.New("boom")
	_, err = s.UpdateHost(ctx, name, func(*api.Host) error { return boom })
	wantErr(t, "UpdateHost(fn fails)", err, boom)

	for _, bad := range []string{"", "a/b"} {
		wantErr(t, "RegisterHost("+bad+")", s.RegisterHost(ctx, newHost(bad)), errdefs.ErrInvalidArgument)
		_, err := s.GetHost(ctx, bad)
		wantErr(t, "GetHost("+bad+")", err, errdefs.ErrInvalidArgument)
	}
	wantErr(t, "KeepHostAlive(unregistered)", s.KeepHostAlive(ctx, newHostName(t), time.Second), errdefs.ErrFailedPrecondition)
}

// waitPhase reads host lists from ch until name has the given phase.
func waitPhase(t *testing.T, ch <-chan []api.Host, name, phase string) api.Host {
	t.Helper()
	for hosts := range ch {
		for _, h := range hosts {
			if h.Name == name && h.Status.Phase == phase {
				return h
			}
		}
	}
	t.Fatalf("host watch closed before %s became %s", name, phase)
	return api.Host{}
}

func testHostLease(t *testing.T, s *store.Store) {
	name := newHostName(t)
	if err := s.RegisterHost(t.Context(), newHost(name)); err != nil {
		t.Fatalf("RegisterHost: %v", err)
	}
	wctx, stopWatch := context.WithCancel(t.Context())
	defer stopWatch()
	hosts := s.WatchHosts(wctx)
	waitPhase(t, hosts, name, api.HostNotReady)

	const ttl = time.Second
	kctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- s.KeepHostAlive(kctx, name, ttl) }()
	h := waitPhase(t, hosts, name, api.HostReady)
	if h.Status.LastHeartbeat.IsZero() {
		t.Fatalf("Ready host without LastHeartbeat: %+v", h)
	}

	// A second keeper takes over before the first one's lease runs out
	// (a host reconnecting to another replica): the host stays Ready
	// past the first lease's end.
	k2ctx, cancel2 := context.WithCancel(t.Context())
	defer cancel2()
	done2 := make(chan error, 1)
	go func() { done2 <- s.KeepHostAlive(k2ctx, name, ttl) }()
	waitHeartbeatAfter(t, hosts, name, h.Status.LastHeartbeat)
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("KeepHostAlive after cancel = %v, want context.Canceled", err)
	}
	time.Sleep(3 * ttl) // the first lease has expired by now
	if h := mustGetHost(t, s, name); h.Status.Phase != api.HostReady {
		t.Fatalf("after the takeover and the first lease's end: phase %s, want Ready", h.Status.Phase)
	}

	// Without a keeper the lease expires and the host turns NotReady.
	cancel2()
	<-done2
	waitPhase(t, hosts, name, api.HostNotReady)

	// Deleting the host drops it from the list.
	if err := s.DeleteHost(t.Context(), name); err != nil {
		t.Fatalf("DeleteHost: %v", err)
	}
	for list := range hosts {
		gone := true
		for _, h := range list {
			if h.Name == name {
				gone = false
			}
		}
		if gone {
			break
		}
	}
	stopWatch()
	for range hosts {
	}
}

// waitHeartbeatAfter waits for a new lease of name (its heartbeat time
// moves past after).
func waitHeartbeatAfter(t *testing.T, ch <-chan []api.Host, name string, after time.Time) {
	t.Helper()
	for hosts := range ch {
		for _, h := range hosts {
			if h.Name == name && h.Status.LastHeartbeat.After(after) {
				return
			}
		}
	}
	t.Fatalf("host watch closed before %s renewed its lease", name)
}

func testHostsChangedSince(t *testing.T, s *store.Store) {
	ctx := t.Context()
	name := newHostName(t)
	if err := s.RegisterHost(ctx, newHost(name)); err != nil {
		t.Fatalf("RegisterHost: %v", err)
	}
	snap, err := s.ListHostSnapshot(ctx)
	if err != nil {
		t.Fatalf("ListHostSnapshot: %v", err)
	}
	if changed, err := s.HostsChangedSince(ctx, snap.Revision); err != nil || changed {
		t.Fatalf("HostsChangedSince(list revision) = %v, %v; want false", changed, err)
	}
	if _, err := s.UpdateHost(ctx, name, func(h *api.Host) error { h.Cordoned = true; return nil }); err != nil {
		t.Fatalf("UpdateHost: %v", err)
	}
	if changed, err := s.HostsChangedSince(ctx, snap.Revision); err != nil || !changed {
		t.Fatalf("HostsChangedSince after a cordon = %v, %v; want true", changed, err)
	}
}

// testWatchInstance: a watch that returned sees every later write of the
// instance, in order, and ends with its deletion.
func testWatchInstance(t *testing.T, s *store.Store) {
	ctx, tn := newTenant(t)
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch, err := s.WatchInstance(wctx, "web")
	if err != nil {
		t.Fatalf("WatchInstance: %v", err)
	}
	mustCreate(t, ctx, s, newInstance(tn, "web"))
	if _, err := s.UpdateInstance(ctx, "web", func(in *api.Instance) error {
		in.Status.Host = "h1"
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteInstance(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	var hosts []string
	for in := range ch {
		hosts = append(hosts, in.Status.Host)
	}
	if fmt.Sprint(hosts) != "[ h1]" {
		t.Fatalf("watched versions with hosts %q, want the create and the update", hosts)
	}
	_, err = s.WatchInstance(t.Context(), "web")
	wantErr(t, "WatchInstance without a tenant", err, errdefs.ErrFailedPrecondition)
}
