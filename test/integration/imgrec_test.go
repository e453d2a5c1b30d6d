package integration

import (
	"archive/tar"
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/kanga-run/kanga/internal/testenv"
	"github.com/kanga-run/kanga/internal/testenv/testimage"
)

// TestTenantImageRecords: containerd keys image records by name, and
// tenants used to share one record per name. Two tenants import different
// content under one name: each runs its own; one's image rm leaves the
// other's; neither reaches the other's content by digest unless it holds
// it too. Then the host is taken back to a shared record from before
// per-tenant records and kanga up restarted: the record is migrated, the
// running instance keeps running and new instances start from the same
// content.
func TestTenantImageRecords(t *testing.T) {
	p := startPlatform(t)
	const ref = "kanga.test/imgrec:latest"
	archA, digestA := markedArchive(t, ref, "content of tenant a")
	archB, digestB := markedArchive(t, ref, "content of tenant b")
	if digestA == digestB {
		t.Fatal("the two images have the same digest; the test needs different content")
	}
	a := p.createTenant("imgrec-a")
	b := p.createTenant("imgrec-b")
	marker := func(tok, image string) result {
		return p.asTenant(tok, "run", "--rm", image, "cat", "/marker")
	}
	wantMarker := func(who, tok, image, want string) {
		t.Helper()
		if r := marker(tok, image); r.code != 0 || strings.TrimSpace(r.stdout) != want {
			t.Fatalf("%s: run %s cat /marker: exit %d, stdout %q, stderr %q; want %q", who, image, r.code, r.stdout, r.stderr, want)
		}
	}

	p.mustAs(a, "image", "import", archA)
	wantMarker("a before b imports", a, ref, "content of tenant a")
	p.mustAs(b, "image", "import", archB)
	wantMarker("a after b imported the same name", a, ref, "content of tenant a")
	wantMarker("b", b, ref, "content of tenant b")
	p.mustAs(a, "run", "-d", "--name", "imgrec-long", ref, "sleep", "3600")

	// b's image rm takes only b's record.
	p.mustAs(b, "image", "rm", ref)
	if r := marker(b, ref); r.code == 0 || !strings.Contains(r.stderr, "not found") {
		t.Fatalf("b ran %s after removing it: exit %d %q", ref, r.code, r.stderr)
	}
	wantMarker("a after b's image rm", a, ref, "content of tenant a")
	if out := p.mustAs(a, "image", "ls", "-q"); !strings.Contains(out, ref) {
		t.Fatalf("a's image ls after b's image rm:\n%s", out)
	}

	// By digest: a runs its own; b cannot run a's, nor see it listed,
	// until b imports the same content itself.
	byDigest := "kanga.test/imgrec@" + digestA
	wantMarker("a by digest", a, byDigest, "content of tenant a")
	if r := marker(b, byDigest); r.code == 0 || !strings.Contains(r.stderr, "not found") {
		t.Fatalf("b ran a's image by digest: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	if out := p.mustAs(b, "image", "ls"); strings.Contains(out, "imgrec") {
		t.Fatalf("b lists an image it does not have:\n%s", out)
	}
	p.mustAs(b, "image", "import", archA)
	wantMarker("b by digest after importing a's content", b, byDigest, "content of tenant a")
	p.mustAs(b, "image", "rm", ref)
	wantMarker("a after b removed the same content", a, ref, "content of tenant a")

	// The upgrade: a's record back to a shared record of the old form
	// (name only, a label per tenant), as the previous agent left it.
	recA := "imgrec-a@" + ref
	p.ctr("images", "tag", recA, ref)
	p.ctr("images", "label", ref, "kanga.dev/tenant=", "kanga.dev/tenant.imgrec-a=1")
	p.ctr("images", "rm", recA)
	if r := marker(a, ref); r.code == 0 {
		t.Fatalf("a ran %s from an old-form record before the migration; the setup is wrong", ref)
	}
	p.stop()
	p.start()
	out := p.ctr("images", "ls")
	if !strings.Contains(out, "\n"+recA+" ") || strings.Contains(out, "\n"+ref+" ") {
		t.Fatalf("image records after the upgrade:\n%s", out)
	}
	if r := p.asTenant(a, "exec", "imgrec-long", "cat", "/marker"); r.code != 0 || strings.TrimSpace(r.stdout) != "content of tenant a" {
		t.Fatalf("the instance running across the upgrade: exit %d %q %q", r.code, r.stdout, r.stderr)
	}
	wantMarker("a after the upgrade", a, ref, "content of tenant a")
	wantMarker("a by digest after the upgrade", a, byDigest, "content of tenant a")
	if r := marker(b, ref); r.code == 0 {
		t.Fatalf("b ran %s after the upgrade without having it: %q", ref, r.stdout)
	}
}

// markedArchive writes the test busybox image plus a /marker file holding
// text as an OCI archive naming ref, and returns its path and manifest
// digest.
func markedArchive(t *testing.T, ref, text string) (string, string) {
	t.Helper()
	img, err := tarball.ImageFromPath(filepath.Join(testenv.Images(t), testimage.DockerArchiveFile), nil)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Name: "marker", Mode: 0o644, Size: int64(len(text) + 1), Typeflag: tar.TypeReg}); err != nil {
		t.Fatal(err)
	}
	if _, err := tw.Write([]byte(text + "\n")); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	layerBytes := buf.Bytes()
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerBytes)), nil
	}, tarball.WithMediaType(types.DockerLayer))
	if err != nil {
		t.Fatal(err)
	}
	if img, err = mutate.AppendLayers(img, layer); err != nil {
		t.Fatal(err)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "image.tar")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := testimage.WriteOCIArchive(f, img, ref); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return path, d.String()
}
