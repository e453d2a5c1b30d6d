package image_test

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/containerd/content"
	"github.com/containerd/containerd/images"
	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/kanga-run/kanga/errdefs"
	"github.com/kanga-run/kanga/internal/agent/image"
	"github.com/kanga-run/kanga/internal/agent/runtime"
	"github.com/kanga-run/kanga/internal/agent/runtime/runtimetest"
)

func TestRecordName(t *testing.T) {
	tests := []struct {
		rec          string
		tenant, name string
		ok           bool
	}{
		{image.RecordName("acme", ociRef), "acme", ociRef, true},
		{"acme@kanga.test/app@sha256:" + strings.Repeat("a", 64), "acme", "kanga.test/app@sha256:" + strings.Repeat("a", 64), true},
		{"a.b_c-d@docker.io/library/busybox:latest", "a.b_c-d", "docker.io/library/busybox:latest", true},
		// Records from before per-tenant records: plain references.
		{ociRef, "", "", false},
		{"kanga.test/app@sha256:" + strings.Repeat("a", 64), "", "", false},
		// Not normalized, or no valid tenant.
		{"acme@busybox", "", "", false},
		{"@" + ociRef, "", "", false},
		{"ac/me@" + ociRef, "", "", false},
		{"acme@", "", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.rec, func(t *testing.T) {
			tenant, name, ok := image.ParseRecordName(tt.rec)
			if tenant != tt.tenant || name != tt.name || ok != tt.ok {
				t.Fatalf("ParseRecordName(%q) = %q, %q, %v; want %q, %q, %v", tt.rec, tenant, name, ok, tt.tenant, tt.name, tt.ok)
			}
		})
	}
}

// TestMigrate: a shared record from before per-tenant records (one per
// name, a label per tenant) becomes one record per tenant on the same
// content, which a container still starts from; records that are not
// Kanga's stay as they are; a second run has nothing to do.
func TestMigrate(t *testing.T) {
	e := newEnv(t)
	imgs, _ := e.importArchive(t, "a", runtimetest.BusyboxArchive(t, runtimetest.OCI, ociRef))
	cur, err := e.d.Client().ImageService().Get(e.ctx, image.RecordName("a", ociRef))
	if err != nil {
		t.Fatal(err)
	}
	// Rewrite the state as the agent before per-tenant records left it.
	is := e.d.Client().ImageService()
	if err := is.Delete(e.ctx, cur.Name); err != nil {
		t.Fatal(err)
	}
	legacy := images.Image{Name: ociRef, Target: cur.Target, Labels: map[string]string{
		"kanga.dev/tenant.a": "1", "kanga.dev/tenant.b": "1", "other.label": "kept",
	}}
	if _, err := is.Create(e.ctx, legacy); err != nil {
		t.Fatal(err)
	}
	foreign := images.Image{Name: "kanga.test/not-kanga:v1", Target: cur.Target}
	if _, err := is.Create(e.ctx, foreign); err != nil {
		t.Fatal(err)
	}
	for _, tenant := range []string{"a", "b"} {
		if _, err := e.svc.Get(e.ctx, tenant, ociRef); !errors.Is(err, errdefs.ErrNotFound) {
			t.Fatalf("Get(%s) before the migration: %v; the old record should not resolve", tenant, err)
		}
	}

	n, err := e.svc.Migrate(e.ctx)
	if err != nil || n != 1 {
		t.Fatalf("Migrate = %d, %v; want 1 record migrated", n, err)
	}
	for _, tenant := range []string{"a", "b"} {
		img, err := e.svc.Get(e.ctx, tenant, ociRef)
		if err != nil || img.Target().Digest.String() != imgs[0].Digest {
			t.Fatalf("Get(%s) after the migration = %v, %v; want digest %s", tenant, img, err, imgs[0].Digest)
		}
		if got := img.Labels()["other.label"]; got != "kept" {
			t.Errorf("label other.label on %s's record = %q, want it kept", tenant, got)
		}
	}
	if _, err := is.Get(e.ctx, ociRef); err == nil {
		t.Error("the shared record is still there")
	}
	if _, err := is.Get(e.ctx, foreign.Name); err != nil {
		t.Errorf("a record without tenant labels was touched: %v", err)
	}
	if n, err := e.svc.Migrate(e.ctx); err != nil || n != 0 {
		t.Fatalf("second Migrate = %d, %v; want nothing to do", n, err)
	}

	// Each tenant's record stands alone now: b's removal leaves a's.
	if err := e.svc.Remove(e.ctx, "b", ociRef); err != nil {
		t.Fatal(err)
	}
	class, ok := runtime.Classes(filepath.Dir(e.d.Address()))[runtime.DefaultClass]
	if !ok {
		t.Skip("runc not installed")
	}
	img, err := e.svc.Get(e.ctx, "a", ociRef)
	if err != nil {
		t.Fatal(err)
	}
	_, exit := runtimetest.StartTask(e.ctx, t, e.d.Client(), img, class, "run-migrated", "sh", "-c", "exit 4")
	if s := <-exit; s.ExitCode() != 4 {
		t.Fatalf("container from the migrated record exit = %d, %v; want 4", s.ExitCode(), s.Error())
	}
}

// TestByDigest: name@digest finds the tenant's own record of that
// content, never another tenant's.
func TestByDigest(t *testing.T) {
	e := newEnv(t)
	oci := runtimetest.BusyboxArchive(t, runtimetest.OCI, ociRef)
	imgs, _ := e.importArchive(t, "a", oci)
	byDigest := "kanga.test/busybox@" + imgs[0].Digest

	if img, err := e.svc.Get(e.ctx, "a", byDigest); err != nil || img.Target().Digest.String() != imgs[0].Digest {
		t.Fatalf("Get(a, %s) = %v, %v", byDigest, img, err)
	}
	if _, err := e.svc.Config(e.ctx, "a", byDigest); err != nil {
		t.Fatalf("Config(a, %s): %v", byDigest, err)
	}
	if _, err := e.svc.Get(e.ctx, "a", "kanga.test/other@"+imgs[0].Digest); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("Get(a) of the digest in another repository: %v, want ErrNotFound", err)
	}
	if _, err := e.svc.Get(e.ctx, "b", byDigest); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("Get(b, %s) of a's content: %v, want ErrNotFound", byDigest, err)
	}
	if _, err := e.svc.Resolve(e.ctx, "b", byDigest); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("Resolve(b, %s) of a's content: %v, want ErrNotFound", byDigest, err)
	}

	// Once b has the content under the name too, b finds it by digest.
	e.importArchive(t, "b", oci)
	if _, err := e.svc.Get(e.ctx, "b", byDigest); err != nil {
		t.Fatalf("Get(b, %s) after b imported it: %v", byDigest, err)
	}
}

// TestImportNeedsItsBlobs: an archive that names another tenant's
// content by digest without carrying it gets no record of it.
func TestImportNeedsItsBlobs(t *testing.T) {
	e := newEnv(t)
	imgs, _ := e.importArchive(t, "a", runtimetest.BusyboxArchive(t, runtimetest.OCI, ociRef))
	cs := e.d.Client().ContentStore()
	rec, err := e.d.Client().ImageService().Get(e.ctx, image.RecordName("a", ociRef))
	if err != nil {
		t.Fatal(err)
	}
	manifest, err := content.ReadBlob(e.ctx, cs, rec.Target)
	if err != nil {
		t.Fatal(err)
	}
	target := rec.Target
	target.Annotations = map[string]string{ocispec.AnnotationRefName: "kanga.test/stolen:v1"}

	for _, tc := range []struct {
		name  string
		blobs map[digest.Digest][]byte
	}{
		{"index only", nil},
		{"manifest without layers", map[digest.Digest][]byte{target.Digest: manifest}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := writeLayout(t, target, tc.blobs)
			f, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			_, err = e.svc.Import(e.ctx, "b", f, nil)
			if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), "does not hold") {
				t.Fatalf("Import of an archive naming a's content = %v, want InvalidArgument saying it does not hold a blob", err)
			}
			if list, err := e.svc.List(e.ctx, "b"); err != nil || len(list) != 0 {
				t.Fatalf("List(b) = %v, %v; want nothing", names(list), err)
			}
		})
	}

	// a itself may re-import a smaller archive of its own content.
	f, err := os.Open(writeLayout(t, target, nil))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if got, err := e.svc.Import(e.ctx, "a", f, nil); err != nil || len(got) != 1 || got[0].Digest != imgs[0].Digest {
		t.Fatalf("Import by a of an index naming its own content = %+v, %v", got, err)
	}
}

// writeLayout writes an OCI layout tarball whose index names target and
// which holds only blobs.
func writeLayout(t *testing.T, target ocispec.Descriptor, blobs map[digest.Digest][]byte) string {
	t.Helper()
	idx, err := json.Marshal(ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{target}})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	add := func(name string, p []byte) {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Size: int64(len(p)), Mode: 0o644}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(p); err != nil {
			t.Fatal(err)
		}
	}
	add(ocispec.ImageLayoutFile, []byte(`{"imageLayoutVersion":"1.0.0"}`))
	add("index.json", idx)
	for d, p := range blobs {
		add("blobs/"+d.Algorithm().String()+"/"+d.Encoded(), p)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "layout.tar")
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestPullNeedsTheRegistrysBlobs: a registry that serves another tenant's
// manifest, but not its layers, gets the puller no record of it.
// fakeRegistry stands in for a registry a hostile tenant runs.
func TestPullNeedsTheRegistrysBlobs(t *testing.T) {
	e := newEnv(t)
	e.importArchive(t, "a", runtimetest.BusyboxArchive(t, runtimetest.OCI, ociRef))
	rec, err := e.d.Client().ImageService().Get(e.ctx, image.RecordName("a", ociRef))
	if err != nil {
		t.Fatal(err)
	}
	manifest, err := content.ReadBlob(e.ctx, e.d.Client().ContentStore(), rec.Target)
	if err != nil {
		t.Fatal(err)
	}
	reg := fakeRegistry(t, rec.Target, manifest)
	if err := e.svc.AllowInsecureRegistries([]string{reg}); err != nil {
		t.Fatal(err)
	}
	for _, ref := range []string{reg + "/stolen:v1", reg + "/stolen@" + rec.Target.Digest.String()} {
		if _, err := e.svc.Pull(e.ctx, "b", ref, nil); err == nil {
			t.Fatalf("Pull(b, %s) from a registry without the layers succeeded", ref)
		} else {
			t.Logf("Pull(b, %s): %v", ref, err)
		}
		if list, err := e.svc.List(e.ctx, "b"); err != nil || len(list) != 0 {
			t.Fatalf("List(b) after the pull = %v, %v; want nothing", names(list), err)
		}
	}
}

// fakeRegistry serves one manifest (by any tag and by its digest) and no
// blobs on a loopback port, and returns its host:port.
func fakeRegistry(t *testing.T, desc ocispec.Descriptor, manifest []byte) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/v2/":
			w.WriteHeader(http.StatusOK)
		case strings.Contains(r.URL.Path, "/manifests/"):
			w.Header().Set("Content-Type", desc.MediaType)
			w.Header().Set("Docker-Content-Digest", desc.Digest.String())
			w.Header().Set("Content-Length", fmt.Sprint(len(manifest)))
			if r.Method != http.MethodHead {
				_, _ = w.Write(manifest)
			}
		default:
			http.NotFound(w, r)
		}
	})}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	return l.Addr().String()
}
