package hostlink

import (
	"errors"
	"testing"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
)

// A host's image report reaches its record in the store; an oversized one
// is refused with the store's reason; a host that is not registered gets
// not-found.
func TestReportImages(t *testing.T) {
	st, c := realCluster(t)
	// Joined first: the shared join token takes only names never used.
	l := NewLink(c.url, "h1", c.join(t, "h1"), nil)
	if err := st.RegisterHost(t.Context(), &api.Host{Name: "h1", RuntimeClasses: []string{"runc"}}); err != nil {
		t.Fatal(err)
	}
	want := []api.HostImage{{Tenant: "default", Name: "kanga.test/busybox:latest", Digest: "sha256:aa", Starts: 2, Hot: true}}
	if err := l.ReportImages(t.Context(), want); err != nil {
		t.Fatalf("ReportImages: %v", err)
	}
	h, err := st.GetHost(t.Context(), "h1")
	if err != nil {
		t.Fatal(err)
	}
	if len(h.Images) != 1 || h.Images[0].Name != want[0].Name || h.Images[0].Starts != 2 || !h.Images[0].Hot {
		t.Fatalf("host record images = %+v, want %+v", h.Images, want)
	}

	tooMany := make([]api.HostImage, api.MaxHostImages+1)
	for i := range tooMany {
		tooMany[i] = api.HostImage{Tenant: "default", Name: "n", Digest: "d"}
	}
	if err := l.ReportImages(t.Context(), tooMany); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Fatalf("ReportImages(%d images) = %v, want invalid argument", len(tooMany), err)
	}
	if err := l.ReportImages(t.Context(), nil); err != nil {
		t.Fatalf("ReportImages(none): %v", err)
	}
	if h, _ := st.GetHost(t.Context(), "h1"); len(h.Images) != 0 {
		t.Fatalf("images after an empty report = %+v", h.Images)
	}

	l2 := NewLink(c.url, "h2", c.join(t, "h2"), nil)
	if err := l2.ReportImages(t.Context(), want); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("ReportImages of an unregistered host = %v, want not found", err)
	}
}
