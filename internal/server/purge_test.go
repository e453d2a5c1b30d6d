package server

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"testing"

	"github.com/kanga-run/kanga/errdefs"
)

func imagePath(ref string) string { return "/v1/images/" + url.PathEscape(ref) }

// TestRemoveImage: image rm acts in the caller's tenant, refuses while an
// instance of the tenant uses the image (409 naming it) unless forced,
// and says NotFound for an image no host has.
func TestRemoveImage(t *testing.T) {
	e := newEnv(t, 0)
	e.mustCreate(t, e.a, "user")

	r := e.do(t, "DELETE", imagePath("kanga.test/busybox"), e.a.token, "")
	wantError(t, r, http.StatusConflict, "Conflict", imgBusybox, `"user"`, "kanga image rm -f")
	if err := e.client(e.a).RemoveImage(t.Context(), "kanga.test/busybox", false); !errors.Is(err, errdefs.ErrConflict) {
		t.Errorf("SDK RemoveImage of an image in use = %v, want Conflict", err)
	}
	if got := e.host.removals(); len(got) != 0 {
		t.Fatalf("refused removal reached the host: %v", got)
	}

	// Tenant b has no instance using it: its removal is its own.
	r = e.do(t, "DELETE", imagePath(imgBusybox), e.b.token, "")
	wantStatus(t, r, http.StatusNoContent)
	// Forced, a's goes too.
	r = e.do(t, "DELETE", imagePath(imgBusybox)+"?force=true", e.a.token, "")
	wantStatus(t, r, http.StatusNoContent)
	want := []string{e.b.name + "/" + imgBusybox, e.a.name + "/" + imgBusybox}
	if got := e.host.removals(); !slices.Equal(got, want) {
		t.Errorf("host removals = %v, want %v", got, want)
	}

	r = e.do(t, "DELETE", imagePath("kanga.test/never:v1"), e.a.token, "")
	wantError(t, r, http.StatusNotFound, "NotFound", "kanga.test/never:v1")
	r = e.do(t, "DELETE", imagePath("UPPER/case"), e.a.token, "")
	wantError(t, r, http.StatusBadRequest, "InvalidArgument", "lowercase")
	r = e.do(t, "DELETE", imagePath(imgBusybox)+"?force=maybe", e.a.token, "")
	wantError(t, r, http.StatusBadRequest, "InvalidArgument", "force")
}

// TestTenantDeletionPurgesHosts is finding 6 at the API: deleting a
// tenant has its host drop what it kept of it; while a Ready host has not
// (it failed), the name cannot be taken again, and once it has, the new
// tenant of that name starts empty.
func TestTenantDeletionPurgesHosts(t *testing.T) {
	e, admin := adminEnv(t)
	name := "gone-" + randomHex(t, 3)
	create := func() response {
		return e.do(t, "POST", "/v1/tenants", admin, fmt.Sprintf(`{"name":%q}`, name))
	}
	wantStatus(t, create(), http.StatusCreated)
	wantStatus(t, e.do(t, "DELETE", "/v1/tenants/"+name, admin, ""), http.StatusNoContent)
	if got := e.host.removals(); !slices.Equal(got, []string{name + "/*"}) {
		t.Fatalf("host removals after tenant rm = %v, want %s/*", got, name)
	}
	wantStatus(t, create(), http.StatusCreated)

	// The host fails to purge: the tenant is deleted, its name blocked.
	e.host.failRemovals(fmt.Errorf("containerd is restarting: %w", errdefs.ErrUnavailable))
	wantStatus(t, e.do(t, "DELETE", "/v1/tenants/"+name, admin, ""), http.StatusNoContent)
	wantError(t, create(), http.StatusConflict, "FailedPrecondition", name, "fake-host", "try again")
	// The host recovers: the next create carries the purge out first.
	e.host.failRemovals(nil)
	wantStatus(t, create(), http.StatusCreated)
	if got := e.host.removals(); !slices.Equal(got, []string{name + "/*", name + "/*"}) {
		t.Errorf("host removals = %v, want the tenant purged twice", got)
	}
	ps, err := e.store.Purges(t.Context(), "fake-host")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range ps {
		if p.Tenant == name {
			t.Errorf("purge %+v still pending for fake-host", p)
		}
	}
}
