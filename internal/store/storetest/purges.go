package storetest

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/internal/store"
)

// testPurges: deleting a tenant records a purge for every host; each host
// lists it until it acknowledges it; a Ready host that has not blocks the
// tenant's name (TenantPurgePending); once every registered host has, the
// purge is gone; a later purge of the same thing is a new generation that
// an old acknowledgement does not cover.
func testPurges(t *testing.T, s *store.Store) {
	ctx := t.Context()
	h1, h2 := newHostName(t), newHostName(t)
	for _, h := range []string{h1, h2} {
		if err := s.RegisterHost(ctx, newHost(h)); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.DeleteHost(context.WithoutCancel(ctx), h) })
	}
	name := "purged-" + newHostName(t)[len("st-host-"):]
	if err := s.CreateTenant(ctx, &api.Tenant{Name: name}, "tok-"+name); err != nil {
		t.Fatal(err)
	}
	img := store.Purge{Tenant: name, Image: "kanga.test/app:v1", At: time.Now()}
	recorded, err := s.RecordPurge(ctx, img)
	if err != nil || recorded.Generation == 0 {
		t.Fatalf("RecordPurge = %+v, %v", recorded, err)
	}
	if err := s.DeleteTenant(ctx, name); err != nil {
		t.Fatal(err)
	}
	mine := func(host string) []store.Purge {
		t.Helper()
		all, err := s.Purges(ctx, host)
		if err != nil {
			t.Fatalf("Purges(%s): %v", host, err)
		}
		var out []store.Purge
		for _, p := range all {
			if p.Tenant == name {
				out = append(out, p)
			}
		}
		return out
	}
	ps := mine(h1)
	if len(ps) != 2 || ps[0].Image != img.Image || ps[1].Image != "" || ps[1].Generation <= ps[0].Generation {
		t.Fatalf("h1's purges = %+v, want the image's, then the tenant's, in order", ps)
	}

	// h1 Ready and not done: the name is blocked.
	kctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() { _ = s.KeepHostAlive(kctx, h1, 5*time.Second) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		pending, err := s.TenantPurgePending(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if slices.Contains(pending, h1) {
			if slices.Contains(pending, h2) {
				t.Fatalf("pending = %v: h2 is not Ready and must not block", pending)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("TenantPurgePending = %v, want %s (Ready, not done)", pending, h1)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, p := range ps {
		if err := s.AckPurge(ctx, h1, p); err != nil {
			t.Fatal(err)
		}
	}
	if got := mine(h1); len(got) != 0 {
		t.Fatalf("h1's purges after its acks = %+v, want none", got)
	}
	if pending, err := s.TenantPurgePending(ctx, name); err != nil || slices.Contains(pending, h1) {
		t.Fatalf("TenantPurgePending after h1's ack = %v, %v", pending, err)
	}
	if got := mine(h2); len(got) != 2 {
		t.Fatalf("h2's purges = %+v, want both still", got)
	}

	// A newer removal of the same image: h1's old ack does not cover it.
	again, err := s.RecordPurge(ctx, img)
	if err != nil {
		t.Fatal(err)
	}
	if got := mine(h1); len(got) != 1 || got[0].Generation != again.Generation {
		t.Fatalf("h1's purges after a newer one = %+v, want only generation %d", got, again.Generation)
	}

	// Once every registered host is done, the purges are collected.
	hosts, err := s.ListHosts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range hosts {
		all, err := s.Purges(ctx, h.Name)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range all {
			if p.Tenant == name {
				if err := s.AckPurge(ctx, h.Name, p); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	fresh := newHostName(t) // a host that joins later has nothing to do
	if got, err := s.Purges(ctx, fresh); err != nil || slices.ContainsFunc(got, func(p store.Purge) bool { return p.Tenant == name }) {
		t.Fatalf("a new host's purges = %+v, %v; want none of %s (collected)", got, err, name)
	}
}
