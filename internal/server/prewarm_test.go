package server

import (
	"slices"
	"testing"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/internal/controlplane"
)

func TestPrewarmOrder(t *testing.T) {
	busybox := api.HostImage{Tenant: "t1", Name: "kanga.test/busybox:latest", Digest: "sha256:aa"}
	ready := api.HostStatus{Phase: api.HostReady}
	host := func(name string, mut func(*api.Host)) api.Host {
		h := api.Host{Name: name, Status: ready}
		if mut != nil {
			mut(&h)
		}
		return h
	}
	holds := func(h *api.Host) { h.Images = []api.HostImage{busybox} }
	tests := []struct {
		name    string
		records []api.Host
		tenant  string
		want    []string
	}{
		{"no reports: name order", []api.Host{host("a", nil), host("b", nil), host("c", nil)}, "t1",
			[]string{"a", "b", "c"}},
		{"holders first", []api.Host{host("a", nil), host("b", holds), host("c", holds)}, "t1",
			[]string{"b", "c", "a"}},
		{"another tenant's copy does not count", []api.Host{host("a", nil), host("b", holds), host("c", nil)}, "t2",
			[]string{"a", "b", "c"}},
		{"cordoned and NotReady last, even holding it", []api.Host{
			host("a", func(h *api.Host) { holds(h); h.Cordoned = true }),
			host("b", func(h *api.Host) { holds(h); h.Status = api.HostStatus{Phase: api.HostNotReady} }),
			host("c", nil)}, "t1",
			[]string{"c", "a", "b"}},
		{"unregistered last", []api.Host{host("b", nil), host("c", nil)}, "t1",
			[]string{"b", "c", "a"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			names := []string{"a", "b", "c"}
			order := prewarmOrder(names, tt.records, controlplane.ImageKey(tt.tenant, "kanga.test/busybox"))
			var got []string
			for _, i := range order {
				got = append(got, names[i])
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("order %v, want %v", got, tt.want)
			}
		})
	}
}
