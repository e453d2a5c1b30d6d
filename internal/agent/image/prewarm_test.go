package image_test

import (
	"os/exec"
	"testing"

	"github.com/kanga-run/kanga/internal/agent/containerdrt/containerdrttest"
)

// TestPrewarm: a prewarm pulls the image only when the tenant does not
// have it, leaves it unpacked and resolved, and is not a start.
func TestPrewarm(t *testing.T) {
	for _, bin := range []string{"docker-registry", "skopeo"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("%s not installed", bin)
		}
	}
	e := newEnv(t)
	registry := startRegistry(t)
	ref := registry + "/busybox:prewarm"
	archive := containerdrttest.BusyboxArchive(t, containerdrttest.OCI, ociRef)
	push := exec.CommandContext(e.ctx, "skopeo", "copy", "--quiet", "--dest-tls-verify=false", "oci-archive:"+archive, "docker://"+ref)
	if out, err := push.CombinedOutput(); err != nil {
		t.Fatalf("skopeo copy: %v\n%s", err, out)
	}
	if err := e.svc.AllowInsecureRegistries([]string{registry}); err != nil {
		t.Fatal(err)
	}

	// Imported: nothing to pull.
	e.importArchive(t, "acme", archive)
	res, pulled, err := e.svc.Prewarm(e.ctx, "acme", ociRef)
	if err != nil || pulled {
		t.Fatalf("Prewarm of an imported image = pulled %v, %v; want not pulled", pulled, err)
	}
	if res.Name != ociRef || res.ChainID == "" || res.Snapshotter != "overlayfs" {
		t.Fatalf("Prewarm resolved %+v", res)
	}
	cimg, err := e.svc.Get(e.ctx, "acme", ociRef)
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := cimg.IsUnpacked(e.ctx, "overlayfs"); err != nil || !ok {
		t.Fatalf("prewarmed image unpacked = %v, %v", ok, err)
	}

	// Not the tenant's yet: pulled once, then found.
	for i, wantPulled := range []bool{true, false} {
		res, pulled, err := e.svc.Prewarm(e.ctx, "acme", ref)
		if err != nil || pulled != wantPulled {
			t.Fatalf("Prewarm #%d of %s = pulled %v, %v; want pulled %v", i+1, ref, pulled, err, wantPulled)
		}
		if res.Name != ref || res.Digest == "" {
			t.Fatalf("Prewarm #%d resolved %+v", i+1, res)
		}
	}

	// Prewarming is not using: no image counts as started.
	if hot := e.svc.Hot("acme"); len(hot) != 0 {
		t.Fatalf("Hot after prewarms = %+v, want none", hot)
	}
}
