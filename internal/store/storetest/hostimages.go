package storetest

import (
	"testing"
	"time"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
	"github.com/kanga-run/kanga/internal/store"
)

// testHostImages: the images a host reports survive the round trip through
// etcd, at registration and through SetHostImages, and a list past the cap
// or naming no tenant is refused.
func testHostImages(t *testing.T, s *store.Store) {
	ctx := t.Context()
	name := newHostName(t)
	h := newHost(name)
	h.Images = []api.HostImage{{Tenant: "t1", Name: "kanga.test/busybox:latest", Digest: "sha256:aa"}}
	if err := s.RegisterHost(ctx, h); err != nil {
		t.Fatalf("RegisterHost: %v", err)
	}
	if got := mustGetHost(t, s, name).Images; len(got) != 1 || got[0] != h.Images[0] {
		t.Fatalf("images after RegisterHost = %+v, want %+v", got, h.Images)
	}

	used := time.Date(2026, 11, 26, 22, 0, 0, 0, time.UTC)
	want := []api.HostImage{
		{Tenant: "t2", Name: "kanga.test/hot:1", Digest: "sha256:bb", Starts: 7, Hot: true, LastUsedAt: &used},
		{Tenant: "t1", Name: "kanga.test/busybox:latest", Digest: "sha256:aa"},
	}
	if err := s.SetHostImages(ctx, name, want); err != nil {
		t.Fatalf("SetHostImages: %v", err)
	}
	got := mustGetHost(t, s, name).Images
	if len(got) != 2 || got[1] != want[1] || got[0].Tenant != "t2" || got[0].Starts != 7 || !got[0].Hot ||
		got[0].LastUsedAt == nil || !got[0].LastUsedAt.Equal(used) {
		t.Fatalf("images after SetHostImages = %+v, want %+v", got, want)
	}
	// The list shows in ListHosts too, which is what kanga host ls reads.
	all, err := s.ListHosts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, lh := range all {
		if lh.Name == name && len(lh.Images) != 2 {
			t.Fatalf("ListHosts: %s has images %+v, want 2", name, lh.Images)
		}
	}
	// Repeating the same list writes nothing.
	before, err := s.ListHostSnapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetHostImages(ctx, name, want); err != nil {
		t.Fatalf("SetHostImages(same): %v", err)
	}
	if changed, err := s.HostsChangedSince(ctx, before.Revision); err != nil || changed {
		t.Fatalf("HostsChangedSince after an unchanged SetHostImages = %v, %v; want false", changed, err)
	}
	// Clearing works.
	if err := s.SetHostImages(ctx, name, nil); err != nil {
		t.Fatalf("SetHostImages(nil): %v", err)
	}
	if got := mustGetHost(t, s, name).Images; len(got) != 0 {
		t.Fatalf("images after clearing = %+v", got)
	}

	tooMany := make([]api.HostImage, api.MaxHostImages+1)
	for i := range tooMany {
		tooMany[i] = api.HostImage{Tenant: "t", Name: "n", Digest: "d"}
	}
	wantErr(t, "SetHostImages(too many)", s.SetHostImages(ctx, name, tooMany), errdefs.ErrInvalidArgument)
	wantErr(t, "SetHostImages(no tenant)", s.SetHostImages(ctx, name, []api.HostImage{{Name: "x"}}), errdefs.ErrInvalidArgument)
	bad := newHost(name)
	bad.Images = tooMany
	wantErr(t, "RegisterHost(too many images)", s.RegisterHost(ctx, bad), errdefs.ErrInvalidArgument)
	wantErr(t, "SetHostImages(unregistered)", s.SetHostImages(ctx, newHostName(t), nil), errdefs.ErrNotFound)
}
