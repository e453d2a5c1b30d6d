package image_test

import (
	"testing"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/internal/agent/containerdrt/containerdrttest"
)

// drained reports whether the service signalled a change, and consumes it.
func drained(e env) bool {
	select {
	case <-e.svc.Changed():
		return true
	default:
		return false
	}
}

// HostImages lists every tenant's images, hot ones first; imports,
// removals and an image's first start (not the later ones) signal a
// change.
func TestHostImagesAndChanges(t *testing.T) {
	e := newEnv(t)
	if drained(e) {
		t.Fatal("a new service signals a change")
	}
	oci := containerdrttest.BusyboxArchive(t, containerdrttest.OCI, ociRef)
	docker := containerdrttest.BusyboxArchive(t, containerdrttest.Docker, dockerRef)
	e.importArchive(t, "a", oci)
	e.importArchive(t, "b", oci)
	e.importArchive(t, "b", docker)
	if !drained(e) {
		t.Fatal("imports did not signal a change")
	}
	imgs, err := e.svc.HostImages(e.ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	key := func(i api.HostImage) string { return i.Tenant + "/" + i.Name }
	var got []string
	for _, i := range imgs {
		got = append(got, key(i))
		if i.Hot || i.Starts != 0 || i.Digest == "" {
			t.Fatalf("before any start: %+v", i)
		}
	}
	want := []string{"a/" + ociRef, "b/" + dockerRef, "b/" + ociRef}
	if len(got) != 3 || got[0] != want[0] || !(got[1] == want[1] && got[2] == want[2] || got[1] == want[2] && got[2] == want[1]) {
		t.Fatalf("HostImages = %v, want %v (tenant then name)", got, want)
	}

	// b starts from ociRef: the first start signals and makes it hot and
	// first in the list; the second start does not signal.
	if _, err := e.svc.Resolve(e.ctx, "b", ociRef); err != nil {
		t.Fatal(err)
	}
	if !drained(e) {
		t.Fatal("an image's first start did not signal a change")
	}
	if _, err := e.svc.Resolve(e.ctx, "b", ociRef); err != nil {
		t.Fatal(err)
	}
	if drained(e) {
		t.Fatal("a second start of a hot image signalled a change")
	}
	imgs, err = e.svc.HostImages(e.ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if key(imgs[0]) != "b/"+ociRef || !imgs[0].Hot || imgs[0].Starts != 2 || imgs[0].LastUsedAt == nil {
		t.Fatalf("hot image not first or not marked: %+v", imgs)
	}
	if capped, err := e.svc.HostImages(e.ctx, 1); err != nil || len(capped) != 1 || key(capped[0]) != "b/"+ociRef {
		t.Fatalf("HostImages(max 1) = %+v, %v; want the hot image only", capped, err)
	}

	if err := e.svc.Remove(e.ctx, "a", ociRef); err != nil {
		t.Fatal(err)
	}
	if !drained(e) {
		t.Fatal("a removal did not signal a change")
	}
	imgs, _ = e.svc.HostImages(e.ctx, 0)
	for _, i := range imgs {
		if key(i) == "a/"+ociRef {
			t.Fatalf("a's removed image still listed: %+v", imgs)
		}
	}
	if len(imgs) != 2 {
		t.Fatalf("after a's removal: %+v, want b's two", imgs)
	}
}
