package testimage

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

func requireBusybox(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(DefaultBusybox); err != nil {
		t.Skipf("requires %s (install busybox-static): %v", DefaultBusybox, err)
	}
}

func build(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := Build(context.Background(), dir, Options{}); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestBuildIsDeterministic(t *testing.T) {
	requireBusybox(t)
	a, b := build(t), build(t)
	files := []string{DockerArchiveFile}
	for _, img := range All() {
		files = append(files, img.File)
	}
	for _, f := range files {
		x, err := os.ReadFile(filepath.Join(a, f))
		if err != nil {
			t.Fatal(err)
		}
		y, err := os.ReadFile(filepath.Join(b, f))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(x, y) {
			t.Errorf("%s differs between two builds", f)
		}
	}
}

// readTar returns the regular files of a tar, by name.
func readTar(t *testing.T, r io.Reader) (files map[string][]byte, links map[string]string) {
	t.Helper()
	files, links = map[string][]byte{}, map[string]string{}
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return files, links
		}
		if err != nil {
			t.Fatal(err)
		}
		switch hdr.Typeflag {
		case tar.TypeReg:
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			files[hdr.Name] = b
		case tar.TypeSymlink:
			links[hdr.Name] = hdr.Linkname
		}
	}
}

func TestOCIArchive(t *testing.T) {
	requireBusybox(t)
	dir := build(t)

	for _, img := range All() {
		t.Run(img.Ref, func(t *testing.T) {
			f, err := os.Open(filepath.Join(dir, img.File))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			files, _ := readTar(t, f)

			if got := string(files["oci-layout"]); got != `{"imageLayoutVersion":"1.0.0"}` {
				t.Errorf("oci-layout = %q", got)
			}
			var index v1.IndexManifest
			if err := json.Unmarshal(files["index.json"], &index); err != nil {
				t.Fatalf("index.json: %v", err)
			}
			if len(index.Manifests) != 1 {
				t.Fatalf("index has %d manifests, want 1", len(index.Manifests))
			}
			desc := index.Manifests[0]
			for _, key := range []string{AnnotationImageName, "org.opencontainers.image.ref.name"} {
				if got := desc.Annotations[key]; got != img.Ref {
					t.Errorf("annotation %s = %q, want %q", key, got, img.Ref)
				}
			}
			blob := func(h v1.Hash) []byte {
				t.Helper()
				b, ok := files["blobs/sha256/"+h.Hex]
				if !ok {
					t.Fatalf("blob %s missing", h)
				}
				if got, _, _ := v1.SHA256(bytes.NewReader(b)); got != h {
					t.Fatalf("blob %s has digest %s", h, got)
				}
				return b
			}

			var m v1.Manifest
			if err := json.Unmarshal(blob(desc.Digest), &m); err != nil {
				t.Fatal(err)
			}
			if m.MediaType != types.OCIManifestSchema1 || len(m.Layers) != 1 {
				t.Fatalf("manifest: media type %s, %d layers", m.MediaType, len(m.Layers))
			}
			var cf v1.ConfigFile
			if err := json.Unmarshal(blob(m.Config.Digest), &cf); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(cf.Config.Entrypoint, img.Config.Entrypoint) || !slices.Equal(cf.Config.Cmd, img.Config.Cmd) {
				t.Errorf("config entrypoint %q cmd %q, want %q %q",
					cf.Config.Entrypoint, cf.Config.Cmd, img.Config.Entrypoint, img.Config.Cmd)
			}

			zr, err := gzip.NewReader(bytes.NewReader(blob(m.Layers[0].Digest)))
			if err != nil {
				t.Fatal(err)
			}
			rootfs, links := readTar(t, zr)
			if got := string(rootfs["var/www/index.html"]); got != IndexHTML {
				t.Errorf("index.html = %q", got)
			}
			if _, ok := rootfs["bin/busybox"]; !ok {
				t.Error("bin/busybox missing")
			}
			for _, applet := range []string{"sh", "httpd", "sleep", "wget", "nc", "cat"} {
				if links["bin/"+applet] != "busybox" {
					t.Errorf("bin/%s -> %q, want busybox", applet, links["bin/"+applet])
				}
			}
			if _, ok := rootfs["etc/passwd"]; !ok {
				t.Error("etc/passwd missing")
			}
		})
	}
}

func TestNoEntryHasNoCommand(t *testing.T) {
	if len(NoEntry.Config.Entrypoint) != 0 || len(NoEntry.Config.Cmd) != 0 {
		t.Fatalf("NoEntry must have neither entrypoint nor cmd: %+v", NoEntry.Config)
	}
}

func TestFingerprintTracksBusybox(t *testing.T) {
	requireBusybox(t)
	dir := t.TempDir()
	other := filepath.Join(dir, "busybox")
	if err := os.WriteFile(other, []byte("not busybox"), 0o755); err != nil {
		t.Fatal(err)
	}
	a, err := Fingerprint(Options{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := Fingerprint(Options{Busybox: other})
	if err != nil {
		t.Fatal(err)
	}
	if a == b {
		t.Fatal("fingerprint ignores the busybox binary")
	}
	if _, err := Fingerprint(Options{Busybox: filepath.Join(dir, "missing")}); err == nil {
		t.Fatal("fingerprint of a missing busybox succeeded")
	}
}

func TestUpToDate(t *testing.T) {
	requireBusybox(t)
	dir := t.TempDir()
	if ok, err := UpToDate(dir, Options{}); err != nil || ok {
		t.Fatalf("empty dir: UpToDate = %v, %v; want false, nil", ok, err)
	}
	if err := Build(context.Background(), dir, Options{}); err != nil {
		t.Fatal(err)
	}
	if ok, err := UpToDate(dir, Options{}); err != nil || !ok {
		t.Fatalf("after Build: UpToDate = %v, %v; want true, nil", ok, err)
	}
	if err := os.Remove(filepath.Join(dir, Httpd.File)); err != nil {
		t.Fatal(err)
	}
	if ok, err := UpToDate(dir, Options{}); err != nil || ok {
		t.Fatalf("file removed: UpToDate = %v, %v; want false, nil", ok, err)
	}
}
