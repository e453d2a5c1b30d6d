package testenv

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/kanga-run/kanga/internal/testenv/testimage"
)

func TestImages(t *testing.T) {
	dir := Images(t)
	if again := Images(t); again != dir {
		t.Fatalf("Images returned %q, then %q", dir, again)
	}
	for _, img := range testimage.All() {
		if _, err := os.Stat(ImagePath(t, img)); err != nil {
			t.Errorf("%s: %v", img.Ref, err)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, testimage.DockerArchiveFile)); err != nil {
		t.Error(err)
	}
}

// indexDescriptor reads the manifest descriptor from an OCI archive's index.json.
func indexDescriptor(t *testing.T, archive string) v1.Descriptor {
	t.Helper()
	f, err := os.Open(archive)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			t.Fatalf("%s has no index.json", archive)
		}
		if err != nil {
			t.Fatal(err)
		}
		if hdr.Name != "index.json" {
			continue
		}
		var index v1.IndexManifest
		if err := json.NewDecoder(tr).Decode(&index); err != nil {
			t.Fatal(err)
		}
		return index.Manifests[0]
	}
}

func TestRegistryPush(t *testing.T) {
	archive := ImagePath(t, testimage.Httpd)
	addr := StartRegistry(t)
	ref := PushImage(t, addr, archive, "kanga/httpd:v1")
	if want := addr + "/kanga/httpd:v1"; ref != want {
		t.Errorf("PushImage returned %q, want %q", ref, want)
	}

	get := func(path string, accept types.MediaType) []byte {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, "http://"+addr+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if accept != "" {
			req.Header.Set("Accept", string(accept))
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %s: %s", path, resp.Status, body)
		}
		return body
	}

	// The registry must serve the manifest skopeo pushed, unchanged: same
	// digest as in the archive, so pulls by digest match imports.
	want := indexDescriptor(t, archive)
	raw := get("/v2/kanga/httpd/manifests/v1", types.OCIManifestSchema1)
	got, _, err := v1.SHA256(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	if got != want.Digest {
		t.Errorf("registry manifest digest %s, archive has %s", got, want.Digest)
	}

	var m v1.Manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	var cf v1.ConfigFile
	if err := json.Unmarshal(get("/v2/kanga/httpd/blobs/"+m.Config.Digest.String(), ""), &cf); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(cf.Config.Entrypoint, testimage.Httpd.Config.Entrypoint) {
		t.Errorf("pushed entrypoint %q, want %q", cf.Config.Entrypoint, testimage.Httpd.Config.Entrypoint)
	}

	var tags struct {
		Tags []string `json:"tags"`
	}
	if err := json.Unmarshal(get("/v2/kanga/httpd/tags/list", ""), &tags); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(tags.Tags, []string{"v1"}) {
		t.Errorf("tags = %q, want [v1]", tags.Tags)
	}
}

func TestDeclaresModule(t *testing.T) {
	tests := []struct {
		name  string
		gomod string
		want  bool
	}{
		{"kanga", "module github.com/kanga-run/kanga\n\ngo 1.26\n", true},
		{"other module", "module example.com/other\n", false},
		{"prefix only", "module github.com/kanga-run/kanga/sub\n", false},
		{"empty", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := declaresModule([]byte(tt.gomod)); got != tt.want {
				t.Errorf("declaresModule(%q) = %v, want %v", tt.gomod, got, tt.want)
			}
		})
	}
}
