package image_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
	"github.com/kanga-run/kanga/internal/agent/image"
	"github.com/kanga-run/kanga/internal/agent/runtime"
	"github.com/kanga-run/kanga/internal/agent/runtime/runtimetest"
)

const (
	ociRef    = "kanga.test/busybox:latest"
	dockerRef = "kanga.test/busybox:docker"
)

func TestNormalize(t *testing.T) {
	tests := []struct {
		ref     string
		want    string
		wantErr error
	}{
		{"busybox", "docker.io/library/busybox:latest", nil},
		{"kanga.test/busybox", "kanga.test/busybox:latest", nil},
		{"kanga.test/busybox:latest", "kanga.test/busybox:latest", nil},
		{"127.0.0.1:5000/busybox:v1", "127.0.0.1:5000/busybox:v1", nil},
		{"localhost:5000/a/b", "localhost:5000/a/b:latest", nil},
		{"", "", errdefs.ErrInvalidArgument},
		{"  ", "", errdefs.ErrInvalidArgument},
		{"UPPER/case", "", errdefs.ErrInvalidArgument},
		{"bad ref", "", errdefs.ErrInvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.ref, func(t *testing.T) {
			got, err := image.Normalize(tt.ref)
			if !errors.Is(err, tt.wantErr) || (tt.wantErr != nil && err == nil) {
				t.Fatalf("Normalize(%q) error = %v, want %v", tt.ref, err, tt.wantErr)
			}
			if got != tt.want {
				t.Fatalf("Normalize(%q) = %q, want %q", tt.ref, got, tt.want)
			}
		})
	}
}

type env struct {
	d   *runtime.Daemon
	svc *image.Service
	ctx context.Context
}

func newEnv(t *testing.T) env {
	d := runtimetest.StartDaemon(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return env{d: d, svc: image.New(d.Client(), "overlayfs"), ctx: ctx}
}

func (e env) importArchive(t *testing.T, tenant, path string) ([]api.Image, []api.Progress) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var progress []api.Progress
	imgs, err := e.svc.Import(e.ctx, tenant, f, func(p api.Progress) { progress = append(progress, p) })
	if err != nil {
		t.Fatalf("Import(%s) for %s: %v", filepath.Base(path), tenant, err)
	}
	return imgs, progress
}

func names(imgs []api.Image) []string {
	var n []string
	for _, i := range imgs {
		n = append(n, i.Name)
	}
	return n
}

func TestImportListGetConfig(t *testing.T) {
	e := newEnv(t)
	oci := runtimetest.BusyboxArchive(t, runtimetest.OCI, ociRef)
	docker := runtimetest.BusyboxArchive(t, runtimetest.Docker, dockerRef)

	for _, tc := range []struct{ path, want string }{{oci, ociRef}, {docker, dockerRef}} {
		imgs, progress := e.importArchive(t, "acme", tc.path)
		if len(imgs) != 1 || imgs[0].Name != tc.want || !strings.HasPrefix(imgs[0].Digest, "sha256:") || imgs[0].Size == 0 {
			t.Fatalf("Import(%s) = %+v, want one image %s with digest and size", filepath.Base(tc.path), imgs, tc.want)
		}
		st, _ := os.Stat(tc.path)
		var read int64
		for _, p := range progress {
			if p.Status == "reading archive" {
				read = p.Current
			}
		}
		if read != st.Size() {
			t.Errorf("progress reported %d bytes read, archive has %d", read, st.Size())
		}
	}

	list, err := e.svc.List(e.ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	if got := names(list); !slices.Equal(got, []string{dockerRef, ociRef}) {
		t.Fatalf("List(acme) = %v", got)
	}

	// Any spelling of the name finds the record.
	for _, ref := range []string{"kanga.test/busybox", "kanga.test/busybox:latest"} {
		img, err := e.svc.Get(e.ctx, "acme", ref)
		if err != nil {
			t.Fatalf("Get(%q): %v", ref, err)
		}
		unpacked, err := img.IsUnpacked(e.ctx, "overlayfs")
		if err != nil || !unpacked {
			t.Fatalf("image %s unpacked = %v, %v; want unpacked at import", ref, unpacked, err)
		}
	}

	cfg, err := e.svc.Config(e.ctx, "acme", dockerRef)
	if err != nil {
		t.Fatal(err)
	}
	want := image.Config{Entrypoint: []string{"/bin/busybox"}, Cmd: []string{"sh"}, Env: []string{"PATH=/bin", "KANGA_TEST=1"}, WorkingDir: "/tmp"}
	if fmt.Sprint(cfg) != fmt.Sprint(want) {
		t.Fatalf("Config = %+v, want %+v", cfg, want)
	}

	// The image runs: the default class, spec from the image config.
	class, ok := runtime.Classes(filepath.Dir(e.d.Address()))[runtime.DefaultClass]
	if !ok {
		t.Skip("runc not installed")
	}
	img, err := e.svc.Get(e.ctx, "acme", ociRef)
	if err != nil {
		t.Fatal(err)
	}
	_, exit := runtimetest.StartTask(e.ctx, t, e.d.Client(), img, class, "run-imported", "sh", "-c", `[ "$(pwd)" = /tmp ] && exit 3`)
	if s := <-exit; s.ExitCode() != 3 {
		t.Fatalf("container exit = %d, %v; want 3", s.ExitCode(), s.Error())
	}
}

func TestTenantScoping(t *testing.T) {
	e := newEnv(t)
	oci := runtimetest.BusyboxArchive(t, runtimetest.OCI, ociRef)
	e.importArchive(t, "a", oci)

	if list, err := e.svc.List(e.ctx, "b"); err != nil || len(list) != 0 {
		t.Fatalf("List(b) = %v, %v; want nothing", names(list), err)
	}
	if _, err := e.svc.Get(e.ctx, "b", ociRef); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("Get by other tenant: %v, want ErrNotFound", err)
	}
	if _, err := e.svc.Config(e.ctx, "b", ociRef); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("Config by other tenant: %v, want ErrNotFound", err)
	}

	// Same content: shared, both see it; removal is per tenant.
	e.importArchive(t, "b", oci)
	for _, tenant := range []string{"a", "b"} {
		if _, err := e.svc.Get(e.ctx, tenant, ociRef); err != nil {
			t.Fatalf("Get(%s) after both imported: %v", tenant, err)
		}
	}
	if err := e.svc.Remove(e.ctx, "a", ociRef); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Get(e.ctx, "a", ociRef); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("Get(a) after a removed it: %v", err)
	}
	if _, err := e.svc.Get(e.ctx, "b", ociRef); err != nil {
		t.Fatalf("Get(b) after a removed it: %v", err)
	}

	// Different content under the same name: each tenant keeps its own.
	aImgs, _ := e.importArchive(t, "a", oci)
	other := runtimetest.BusyboxArchive(t, runtimetest.Docker, ociRef)
	bImgs, _ := e.importArchive(t, "b", other)
	if aImgs[0].Digest == bImgs[0].Digest {
		t.Fatalf("the two archives have the same content %s; the test needs different content", aImgs[0].Digest)
	}
	for tenant, want := range map[string]string{"a": aImgs[0].Digest, "b": bImgs[0].Digest} {
		img, err := e.svc.Get(e.ctx, tenant, ociRef)
		if err != nil || img.Target().Digest.String() != want {
			t.Fatalf("Get(%s) after both imported %s = %v, %v; want digest %s", tenant, ociRef, img, err, want)
		}
	}

	// b's removal leaves a's record of the name.
	if err := e.svc.Remove(e.ctx, "b", ociRef); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.Remove(e.ctx, "b", ociRef); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("second Remove: %v, want ErrNotFound", err)
	}
	if img, err := e.svc.Get(e.ctx, "a", ociRef); err != nil || img.Target().Digest.String() != aImgs[0].Digest {
		t.Fatalf("Get(a) after b removed its image of the name = %v, %v; want a's digest %s", img, err, aImgs[0].Digest)
	}
	if _, err := e.d.Client().GetImage(e.ctx, image.RecordName("b", ociRef)); err == nil {
		t.Fatal("b's record kept after b removed it")
	}
	if err := e.svc.Remove(e.ctx, "a", ociRef); err != nil {
		t.Fatal(err)
	}
	if recs, err := e.d.Client().ListImages(e.ctx); err != nil || len(recs) != 0 {
		t.Fatalf("records left after both removed theirs: %v, %v", recs, err)
	}
}

// TestRemoveTenant: a deleted tenant's records go; an image another
// tenant shares keeps its record and content for that tenant.
func TestRemoveTenant(t *testing.T) {
	e := newEnv(t)
	oci := runtimetest.BusyboxArchive(t, runtimetest.OCI, ociRef)
	docker := runtimetest.BusyboxArchive(t, runtimetest.Docker, dockerRef)
	e.importArchive(t, "a", oci)
	e.importArchive(t, "a", docker)
	shared, _ := e.importArchive(t, "b", oci)

	removed, err := e.svc.RemoveTenant(e.ctx, "a")
	slices.Sort(removed)
	if err != nil || !slices.Equal(removed, []string{dockerRef, ociRef}) {
		t.Fatalf("RemoveTenant(a) = %v, %v; want both of a's images", removed, err)
	}
	if list, err := e.svc.List(e.ctx, "a"); err != nil || len(list) != 0 {
		t.Fatalf("List(a) after RemoveTenant = %v, %v; want nothing", names(list), err)
	}
	if _, err := e.d.Client().GetImage(e.ctx, image.RecordName("a", dockerRef)); err == nil {
		t.Fatalf("a's record of %s kept", dockerRef)
	}
	img, err := e.svc.Get(e.ctx, "b", ociRef)
	if err != nil || img.Target().Digest.String() != shared[0].Digest {
		t.Fatalf("Get(b) after a's removal = %v, %v; want b's image intact", img, err)
	}
	if _, err := e.d.Client().ContentStore().Info(e.ctx, img.Target().Digest); err != nil {
		t.Fatalf("shared content gone: %v", err)
	}
	if removed, err := e.svc.RemoveTenant(e.ctx, "a"); err != nil || len(removed) != 0 {
		t.Fatalf("second RemoveTenant(a) = %v, %v; want nothing to do", removed, err)
	}
}

func TestErrors(t *testing.T) {
	e := newEnv(t)
	tests := []struct {
		name    string
		call    func() error
		wantErr error
	}{
		{"unknown image", func() error { _, err := e.svc.Get(e.ctx, "a", "kanga.test/nope:v1"); return err }, errdefs.ErrNotFound},
		{"empty ref", func() error { _, err := e.svc.Get(e.ctx, "a", ""); return err }, errdefs.ErrInvalidArgument},
		{"uppercase ref", func() error { _, err := e.svc.Config(e.ctx, "a", "UPPER/case"); return err }, errdefs.ErrInvalidArgument},
		{"empty tenant", func() error { _, err := e.svc.List(e.ctx, ""); return err }, errdefs.ErrInvalidArgument},
		{"tenant with quote", func() error { _, err := e.svc.List(e.ctx, `a"b`); return err }, errdefs.ErrInvalidArgument},
		{"sparse archive entry", func() error {
			f, err := os.Open("testdata/sparse-bomb.tar")
			if err != nil {
				return err
			}
			defer f.Close()
			_, err = e.svc.Import(e.ctx, "a", f, nil)
			if err != nil && !strings.Contains(err.Error(), "sparse") {
				return fmt.Errorf("the refusal does not say why: %w", err)
			}
			return err
		}, errdefs.ErrInvalidArgument},
		{"garbage archive", func() error {
			_, err := e.svc.Import(e.ctx, "a", strings.NewReader("not a tar"), nil)
			return err
		}, errdefs.ErrInvalidArgument},
		{"archive naming only a tag", func() error {
			path := filepath.Join(t.TempDir(), "tag-only.tar")
			runtimetest.WriteOCIArchive(t, path, runtimetest.BusyboxImage(t, true), "latest")
			f, err := os.Open(path)
			if err != nil {
				return err
			}
			defer f.Close()
			_, err = e.svc.Import(e.ctx, "a", f, nil)
			return err
		}, errdefs.ErrInvalidArgument},
		{"pull from nowhere", func() error {
			_, err := e.svc.Pull(e.ctx, "a", "127.0.0.1:1/nothing:v1", nil)
			return err
		}, errdefs.ErrUnavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("error = %v, want %v", err, tt.wantErr)
			}
			t.Logf("message: %v", err)
		})
	}
	_, err := e.svc.Get(e.ctx, "a", "kanga.test/nope:v1")
	if !strings.Contains(err.Error(), "kanga image import") || !strings.Contains(err.Error(), "kanga image pull") {
		t.Fatalf("not-found message does not say what to do: %v", err)
	}
}

func TestPull(t *testing.T) {
	for _, bin := range []string{"docker-registry", "skopeo"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("%s not installed", bin)
		}
	}
	e := newEnv(t)
	registry := startRegistry(t)
	ref := registry + "/busybox:v1"
	archive := runtimetest.BusyboxArchive(t, runtimetest.OCI, ociRef)
	push := exec.CommandContext(e.ctx, "skopeo", "copy", "--quiet", "--dest-tls-verify=false", "oci-archive:"+archive, "docker://"+ref)
	if out, err := push.CombinedOutput(); err != nil {
		t.Fatalf("skopeo copy: %v\n%s", err, out)
	}

	// A loopback registry is off limits until the operator allows it.
	if _, err := e.svc.Pull(e.ctx, "acme", ref, nil); !errors.Is(err, errdefs.ErrUnavailable) || !strings.Contains(err.Error(), "--insecure-registry") {
		t.Fatalf("Pull from a loopback registry nobody allowed: %v, want Unavailable naming --insecure-registry", err)
	}
	if err := e.svc.AllowInsecureRegistries([]string{registry}); err != nil {
		t.Fatal(err)
	}
	var progress []api.Progress
	img, err := e.svc.Pull(e.ctx, "acme", ref, func(p api.Progress) { progress = append(progress, p) })
	if err != nil {
		t.Fatalf("Pull: %v", err)
	}
	if img.Name != ref || img.Size == 0 {
		t.Fatalf("Pull = %+v", img)
	}
	if len(progress) == 0 || progress[len(progress)-1].Status != "pulled "+ref {
		t.Fatalf("progress = %+v", progress)
	}
	cimg, err := e.svc.Get(e.ctx, "acme", ref)
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := cimg.IsUnpacked(e.ctx, "overlayfs"); err != nil || !ok {
		t.Fatalf("pulled image unpacked = %v, %v", ok, err)
	}
	cfg, err := e.svc.Config(e.ctx, "acme", ref)
	if err != nil || !slices.Equal(cfg.Entrypoint, []string{"/bin/busybox"}) {
		t.Fatalf("Config = %+v, %v", cfg, err)
	}

	// A second tenant pulls the same image: both keep it.
	if _, err := e.svc.Pull(e.ctx, "other", ref, nil); err != nil {
		t.Fatalf("Pull by second tenant: %v", err)
	}
	for _, tenant := range []string{"acme", "other"} {
		list, err := e.svc.List(e.ctx, tenant)
		if err != nil || !slices.Equal(names(list), []string{ref}) {
			t.Fatalf("List(%s) = %v, %v", tenant, names(list), err)
		}
	}

	// Only the tenants' records: no record under the bare name.
	recs, err := e.d.Client().ImageService().List(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range recs {
		got = append(got, r.Name)
	}
	slices.Sort(got)
	if want := []string{image.RecordName("acme", ref), image.RecordName("other", ref)}; !slices.Equal(got, want) {
		t.Fatalf("image records after two pulls = %v, want %v", got, want)
	}

	if _, err := e.svc.Pull(e.ctx, "acme", registry+"/busybox:missing", nil); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("Pull of a missing tag: %v, want ErrNotFound", err)
	}
}

// startRegistry runs Debian's docker-registry on a free loopback port with
// storage in a temp dir and returns its host:port.
func startRegistry(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	dir := t.TempDir()
	config := filepath.Join(dir, "config.yml")
	yml := fmt.Sprintf("version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: %s\n", filepath.Join(dir, "data"), addr)
	if err := os.WriteFile(config, []byte(yml), 0o644); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	cmd := exec.Command("docker-registry", "serve", config)
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/v2/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return addr
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("registry on %s did not come up: %v\n%s", addr, err, logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}
