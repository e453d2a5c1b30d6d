package netview

import (
	"context"
	"io"
	"log/slog"
	"maps"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/internal/hostcontract"
	"github.com/kanga-run/kanga/internal/store"
	"github.com/kanga-run/kanga/internal/tenant"
)

// TestViewFollowsTheStore runs the view on a real (embedded) etcd store:
// the first update is the full state, later ones what changed: a new
// address, one released, one claimed by two tenants at once (then known
// by neither), a policy and a host's subnet.
func TestViewFollowsTheStore(t *testing.T) {
	dir, err := os.MkdirTemp("", "kanga-netview-test-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	st, err := store.Open(ctx, store.Config{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for _, n := range []string{"a", "b"} {
		if err := st.EnsureTenant(ctx, &api.Tenant{Name: n}); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.RegisterHost(ctx, &api.Host{Name: "h1", Subnet: "10.9.1.0/24"}); err != nil {
		t.Fatal(err)
	}
	put := func(ten, name, ip string, phase api.Phase) {
		t.Helper()
		tctx := tenant.WithName(ctx, ten)
		in := &api.Instance{Name: name, Tenant: ten, UID: name + "-uid", Status: api.InstanceStatus{Phase: phase, Host: "h1", IP: ip}}
		if err := st.CreateInstance(tctx, in); err == nil {
			return
		}
		if _, err := st.UpdateInstance(tctx, name, func(i *api.Instance) error { i.Status = in.Status; return nil }); err != nil {
			t.Fatal(err)
		}
	}
	put("a", "a1", "10.9.1.2", api.PhaseRunning)
	put("b", "b1", "10.9.1.3", api.PhaseRunning)
	put("b", "done", "10.9.1.4", api.PhaseSucceeded) // terminal: its address is free

	v := New(st, slog.New(slog.NewTextHandler(io.Discard, nil)))
	go v.Run(ctx)
	updates := v.Subscribe(ctx)
	next := func(what string) hostcontract.NetUpdate {
		t.Helper()
		select {
		case u := <-updates:
			return u
		case <-time.After(20 * time.Second):
			t.Fatalf("no update: %s", what)
		}
		return hostcontract.NetUpdate{}
	}
	var addrs map[string]string
	u := next("the full state")
	addrs = hostcontract.ApplyNetUpdate(addrs, u)
	if !u.Reset || !maps.Equal(addrs, map[string]string{"10.9.1.2": "a", "10.9.1.3": "b"}) || !slices.Equal(u.Subnets, []string{"10.9.1.0/24"}) {
		t.Fatalf("first update %+v", u)
	}

	put("a", "a2", "10.9.1.5", api.PhaseRunning)
	u = next("a new address")
	if u.Reset || !maps.Equal(u.Set, map[string]string{"10.9.1.5": "a"}) || len(u.Del) != 0 {
		t.Fatalf("after a2 started: %+v", u)
	}
	// b1's address handed to a3 while b1's record is still there.
	put("a", "a3", "10.9.1.3", api.PhaseRunning)
	u = next("a disputed address")
	if !slices.Equal(u.Del, []string{"10.9.1.3"}) {
		t.Fatalf("an address claimed by two tenants: %+v", u)
	}
	if err := st.DeleteInstance(tenant.WithName(ctx, "b"), "b1"); err != nil {
		t.Fatal(err)
	}
	u = next("the dispute settled")
	if !maps.Equal(u.Set, map[string]string{"10.9.1.3": "a"}) {
		t.Fatalf("after b1 went: %+v", u)
	}
	if _, err := st.UpdateTenant(ctx, "a", func(t *api.Tenant) error {
		t.Network = &api.TenantNetworkPolicy{IngressFrom: []string{"b"}}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	u = next("a policy")
	if len(u.Tenants) != 1 || u.Tenants[0].Name != "a" || !slices.Equal(u.Tenants[0].Network.IngressFrom, []string{"b"}) || len(u.Set)+len(u.Del) != 0 {
		t.Fatalf("after a's policy: %+v", u)
	}
	if err := st.RegisterHost(ctx, &api.Host{Name: "h2", Subnet: "10.9.2.0/24"}); err != nil {
		t.Fatal(err)
	}
	u = next("a second host")
	if !slices.Equal(u.Subnets, []string{"10.9.1.0/24", "10.9.2.0/24"}) {
		t.Fatalf("after h2 registered: %+v", u)
	}
	// A second subscriber starts from the full state.
	u2 := <-v.Subscribe(ctx)
	if !u2.Reset || !maps.Equal(u2.Set, map[string]string{"10.9.1.2": "a", "10.9.1.3": "a", "10.9.1.5": "a"}) {
		t.Fatalf("a late subscriber's first update: %+v", u2)
	}
}
