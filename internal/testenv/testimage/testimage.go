// Package testimage builds the small container images Kanga's tests and demo
// run. No public registry is reachable from the test machines, so the images
// are made locally from Debian's statically linked busybox.
//
// The output is deterministic: every timestamp is fixed, every list sorted and
// the layer compressed with the standard library, so rebuilding from the same
// busybox binary yields byte-identical files. That lets callers cache the
// output by Fingerprint.
package testimage

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/kanga-run/kanga/internal/atomicfile"
)

// formatVersion is part of the Fingerprint. Bump it whenever a change here
// alters the bytes Build writes, so cached images get rebuilt.
const formatVersion = "kanga-testimage-v1"

// DefaultBusybox is where Debian's busybox-static installs its binary.
const DefaultBusybox = "/bin/busybox"

// AnnotationImageName is containerd's index annotation that names an image on
// import (images.AnnotationImageName); repeated here to keep this package free
// of the containerd module.
const AnnotationImageName = "io.containerd.image.name"

// Image is one test image: its reference and the OCI archive it is written to.
type Image struct {
	// Ref is the full image reference containerd names the image on import.
	Ref string
	// File is the OCI archive's file name inside the output directory.
	File string
	// Config is the image's runtime configuration.
	Config v1.Config
}

// path is the PATH every image sets: the Debian default, which includes /bin
// where the busybox applets live.
const path = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

var (
	// Busybox runs a shell by default.
	Busybox = Image{
		Ref:  "kanga.test/busybox:latest",
		File: "busybox.tar",
		Config: v1.Config{
			Env:        []string{path},
			Cmd:        []string{"sh"},
			WorkingDir: "/",
		},
	}
	// Httpd serves /var/www (index.html says "hello from kanga") on port 80.
	Httpd = Image{
		Ref:  "kanga.test/httpd:latest",
		File: "httpd.tar",
		Config: v1.Config{
			Env:          []string{path},
			Entrypoint:   []string{"httpd", "-f", "-v", "-p", "80", "-h", "/var/www"},
			ExposedPorts: map[string]struct{}{"80/tcp": {}},
			WorkingDir:   "/",
		},
	}
	// NoEntry has neither Entrypoint nor Cmd: running it without a command
	// must fail with a clear error.
	NoEntry = Image{
		Ref:  "kanga.test/noentry:latest",
		File: "noentry.tar",
		Config: v1.Config{
			Env:        []string{path},
			WorkingDir: "/",
		},
	}
)

// DockerArchiveFile is the docker-save style archive of Busybox, for testing
// the second import path.
const DockerArchiveFile = "busybox-docker.tar"

// IndexHTML is the content of /var/www/index.html in every image.
const IndexHTML = "hello from kanga\n"

// All returns every image Build writes as an OCI archive.
func All() []Image { return []Image{Busybox, Httpd, NoEntry} }

// epoch is the timestamp of every file and config in the images. It is fixed
// so rebuilds are byte-identical, and not the Unix epoch because some tools
// treat a zero time as "unset".
var epoch = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

// Options tune Build.
type Options struct {
	// Busybox is the path of a statically linked busybox binary; DefaultBusybox
	// if empty.
	Busybox string
}

func (o Options) busybox() string {
	if o.Busybox == "" {
		return DefaultBusybox
	}
	return o.Busybox
}

// Fingerprint is a digest of every input of Build: the busybox binary and the
// output format version. Equal fingerprints mean Build writes equal bytes.
func Fingerprint(opts Options) (string, error) {
	h := sha256.New()
	io.WriteString(h, formatVersion+"\n"+runtime.GOARCH+"\n")
	f, err := os.Open(opts.busybox())
	if err != nil {
		return "", fmt.Errorf("open busybox (install busybox-static): %w", err)
	}
	defer f.Close()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("read %s: %w", f.Name(), err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// FingerprintFile is written by Build, last, into the output directory; it
// holds the Fingerprint of the inputs the directory's images were built from.
const FingerprintFile = ".fingerprint"

// Build writes the OCI archive of every image in All and DockerArchiveFile
// into dir, creating dir if needed, then FingerprintFile. Each file is
// written to a temporary name and renamed into place, so a concurrent reader
// never sees a partial file.
func Build(ctx context.Context, dir string, opts Options) error {
	fingerprint, err := Fingerprint(opts)
	if err != nil {
		return err
	}
	layer, err := rootfsLayer(ctx, opts.busybox())
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create image directory: %w", err)
	}
	// A build that fails halfway must not leave a fingerprint vouching for a
	// mix of old and new files.
	if err := os.Remove(filepath.Join(dir, FingerprintFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove stale fingerprint: %w", err)
	}
	for _, spec := range All() {
		img, err := image(layer, spec.Config)
		if err != nil {
			return fmt.Errorf("build %s: %w", spec.Ref, err)
		}
		err = atomicfile.WriteFunc(filepath.Join(dir, spec.File), 0o644, func(w io.Writer) error {
			return WriteOCIArchive(w, img, spec.Ref)
		})
		if err != nil {
			return fmt.Errorf("write %s: %w", spec.Ref, err)
		}
		if spec.Ref != Busybox.Ref {
			continue
		}
		ref, err := name.NewTag(spec.Ref)
		if err != nil {
			return fmt.Errorf("parse %s: %w", spec.Ref, err)
		}
		err = atomicfile.WriteFunc(filepath.Join(dir, DockerArchiveFile), 0o644, func(w io.Writer) error {
			return tarball.Write(ref, img, w)
		})
		if err != nil {
			return fmt.Errorf("write docker archive of %s: %w", spec.Ref, err)
		}
	}
	return atomicfile.WriteFunc(filepath.Join(dir, FingerprintFile), 0o644, func(w io.Writer) error {
		_, err := io.WriteString(w, fingerprint)
		return err
	})
}

// UpToDate reports whether dir holds every file Build writes, built from the
// same inputs as opts would use now.
func UpToDate(dir string, opts Options) (bool, error) {
	want, err := Fingerprint(opts)
	if err != nil {
		return false, err
	}
	have, err := os.ReadFile(filepath.Join(dir, FingerprintFile))
	if err != nil || string(have) != want {
		return false, nil
	}
	files := []string{DockerArchiveFile}
	for _, img := range All() {
		files = append(files, img.File)
	}
	for _, f := range files {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			return false, nil
		}
	}
	return true, nil
}

func image(layer v1.Layer, cfg v1.Config) (v1.Image, error) {
	return layered(cfg, mutate.Addendum{
		Layer: layer,
		History: v1.History{
			Created:   v1.Time{Time: epoch},
			CreatedBy: "kanga testimage: busybox-static rootfs",
		},
	})
}

// Layered is the OCI image of layers, bottom first, with the runtime
// configuration cfg; its timestamps are fixed, as in every test image.
func Layered(cfg v1.Config, layers ...v1.Layer) (v1.Image, error) {
	adds := make([]mutate.Addendum, 0, len(layers))
	for _, l := range layers {
		adds = append(adds, mutate.Addendum{
			Layer:   l,
			History: v1.History{Created: v1.Time{Time: epoch}, CreatedBy: "kanga testimage"},
		})
	}
	return layered(cfg, adds...)
}

func layered(cfg v1.Config, adds ...mutate.Addendum) (v1.Image, error) {
	base := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	base = mutate.ConfigMediaType(base, types.OCIConfigJSON)
	img, err := mutate.Append(base, adds...)
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.Architecture = runtime.GOARCH
	cf.OS = "linux"
	cf.Created = v1.Time{Time: epoch}
	cf.Config = *cfg.DeepCopy()
	return mutate.ConfigFile(img, cf)
}

// BusyboxLayer is the layer every test image is made of (see
// rootfsLayer), for images that add their own layers on top of it.
func BusyboxLayer(ctx context.Context, busybox string) (v1.Layer, error) {
	if busybox == "" {
		busybox = DefaultBusybox
	}
	return rootfsLayer(ctx, busybox)
}

// File is one entry of a layer FilesLayer builds: a regular file with
// Data, a directory when Dir is set, or a symlink to Link.
type File struct {
	Name string
	Mode int64
	Data []byte
	Dir  bool
	Link string
}

// FilesLayer is a layer holding files, in order, owned by root, with the
// fixed timestamp of every test image.
func FilesLayer(files []File) (v1.Layer, error) {
	var raw bytes.Buffer
	tw := tar.NewWriter(&raw)
	for _, f := range files {
		h := &tar.Header{Typeflag: tar.TypeReg, Name: f.Name, Mode: f.Mode, Size: int64(len(f.Data)), ModTime: epoch}
		switch {
		case f.Dir:
			h = &tar.Header{Typeflag: tar.TypeDir, Name: f.Name + "/", Mode: f.Mode, ModTime: epoch}
		case f.Link != "":
			h = &tar.Header{Typeflag: tar.TypeSymlink, Name: f.Name, Linkname: f.Link, Mode: 0o777, ModTime: epoch}
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, fmt.Errorf("layer entry %s: %w", f.Name, err)
		}
		if h.Typeflag == tar.TypeReg {
			if _, err := tw.Write(f.Data); err != nil {
				return nil, fmt.Errorf("layer entry %s: %w", f.Name, err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return gzipLayer(raw.Bytes())
}

// rootfsLayer builds the one layer all images share: /bin/busybox with a
// symlink per applet, a minimal /etc and a web root.
func rootfsLayer(ctx context.Context, busybox string) (v1.Layer, error) {
	bin, err := os.ReadFile(busybox)
	if err != nil {
		return nil, fmt.Errorf("read busybox (install busybox-static): %w", err)
	}
	applets, err := listApplets(ctx, busybox)
	if err != nil {
		return nil, err
	}

	var raw bytes.Buffer
	tw := tar.NewWriter(&raw)
	dir := func(name string, mode int64) error {
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: mode, ModTime: epoch})
	}
	file := func(name string, mode int64, data []byte) error {
		err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(data)), ModTime: epoch})
		if err != nil {
			return err
		}
		_, err = tw.Write(data)
		return err
	}
	symlink := func(name, target string) error {
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: target, Mode: 0o777, ModTime: epoch})
	}

	steps := []func() error{
		func() error { return dir("bin", 0o755) },
		func() error { return file("bin/busybox", 0o755, bin) },
		func() error {
			for _, a := range applets {
				if err := symlink("bin/"+a, "busybox"); err != nil {
					return err
				}
			}
			return nil
		},
		// Mount points the runtime fills; present so read-only rootfs works.
		func() error { return dir("dev", 0o755) },
		func() error { return dir("etc", 0o755) },
		func() error {
			return file("etc/group", 0o644, []byte("root:x:0:\nnogroup:x:65534:\n"))
		},
		func() error {
			return file("etc/passwd", 0o644, []byte(
				"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"))
		},
		func() error { return dir("proc", 0o755) },
		func() error { return dir("root", 0o700) },
		func() error { return dir("sys", 0o755) },
		func() error { return dir("tmp", 0o1777) },
		func() error { return dir("var", 0o755) },
		func() error { return dir("var/www", 0o755) },
		func() error { return file("var/www/index.html", 0o644, []byte(IndexHTML)) },
		tw.Close,
	}
	for _, step := range steps {
		if err := step(); err != nil {
			return nil, fmt.Errorf("build rootfs layer: %w", err)
		}
	}

	return gzipLayer(raw.Bytes())
}

// gzipLayer is the layer of the uncompressed tar raw.
func gzipLayer(raw []byte) (v1.Layer, error) {
	// Compress here with a fixed header and level rather than letting ggcr do
	// it, so the blob (and thus every digest) is reproducible.
	var gz bytes.Buffer
	zw, err := gzip.NewWriterLevel(&gz, gzip.BestCompression)
	if err != nil {
		return nil, err
	}
	if _, err := zw.Write(raw); err != nil {
		return nil, fmt.Errorf("compress rootfs layer: %w", err)
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("compress rootfs layer: %w", err)
	}
	blob := gz.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(blob)), nil
	}, tarball.WithMediaType(types.OCILayer))
}

// listApplets asks the busybox binary which applets it has, so the image
// matches whatever busybox-static version is installed.
func listApplets(ctx context.Context, busybox string) ([]string, error) {
	out, err := exec.CommandContext(ctx, busybox, "--list").Output()
	if err != nil {
		return nil, fmt.Errorf("list busybox applets of %s: %w", busybox, err)
	}
	var applets []string
	for a := range strings.FieldsSeq(string(out)) {
		// The binary itself is bin/busybox; anything with a slash would escape bin/.
		if a == "busybox" || strings.Contains(a, "/") {
			continue
		}
		applets = append(applets, a)
	}
	slices.Sort(applets)
	applets = slices.Compact(applets)
	if !slices.Contains(applets, "sh") {
		return nil, fmt.Errorf("busybox %s has no sh applet; is it busybox-static?", busybox)
	}
	return applets, nil
}

// WriteOCIArchive writes img as a tar of an OCI image layout whose index.json
// names it ref with both the OCI ref.name and containerd's image name
// annotations, so containerd's Import, ctr and skopeo's oci-archive transport
// all find it under that name. Tar headers carry a fixed time and no owners,
// so the archive depends only on img and ref.
func WriteOCIArchive(w io.Writer, img v1.Image, ref string) error {
	manifest, err := img.RawManifest()
	if err != nil {
		return err
	}
	mdigest, err := img.Digest()
	if err != nil {
		return err
	}
	mt, err := img.MediaType()
	if err != nil {
		return err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return err
	}
	config, err := img.RawConfigFile()
	if err != nil {
		return err
	}
	cdigest, err := img.ConfigName()
	if err != nil {
		return err
	}
	layers, err := img.Layers()
	if err != nil {
		return err
	}

	index := v1.IndexManifest{
		SchemaVersion: 2,
		MediaType:     types.OCIImageIndex,
		Manifests: []v1.Descriptor{{
			MediaType: mt,
			Digest:    mdigest,
			Size:      int64(len(manifest)),
			Platform:  &v1.Platform{Architecture: cf.Architecture, OS: cf.OS},
			Annotations: map[string]string{
				AnnotationImageName:                 ref,
				"org.opencontainers.image.ref.name": ref,
			},
		}},
	}
	indexJSON, err := json.Marshal(index)
	if err != nil {
		return err
	}

	tw := tar.NewWriter(w)
	entry := func(name string, r io.Reader, size int64) error {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: size, ModTime: epoch}); err != nil {
			return err
		}
		_, err := io.Copy(tw, r)
		return err
	}
	blob := func(h v1.Hash, data []byte) error {
		return entry("blobs/"+h.Algorithm+"/"+h.Hex, bytes.NewReader(data), int64(len(data)))
	}
	for _, d := range []string{"blobs/", "blobs/sha256/"} {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d, Mode: 0o755, ModTime: epoch}); err != nil {
			return err
		}
	}
	const ociLayout = `{"imageLayoutVersion":"1.0.0"}`
	if err := entry("oci-layout", strings.NewReader(ociLayout), int64(len(ociLayout))); err != nil {
		return err
	}
	if err := entry("index.json", bytes.NewReader(indexJSON), int64(len(indexJSON))); err != nil {
		return err
	}
	if err := blob(mdigest, manifest); err != nil {
		return err
	}
	if err := blob(cdigest, config); err != nil {
		return err
	}
	for _, l := range layers {
		if err := writeLayerBlob(tw, l); err != nil {
			return err
		}
	}
	return tw.Close()
}

func writeLayerBlob(tw *tar.Writer, l v1.Layer) error {
	h, err := l.Digest()
	if err != nil {
		return err
	}
	size, err := l.Size()
	if err != nil {
		return err
	}
	rc, err := l.Compressed()
	if err != nil {
		return err
	}
	defer rc.Close()
	hdr := &tar.Header{Typeflag: tar.TypeReg, Name: "blobs/" + h.Algorithm + "/" + h.Hex, Mode: 0o644, Size: size, ModTime: epoch}
	if err := tw.WriteHeader(hdr); err != nil {
		return err
	}
	_, err = io.Copy(tw, rc)
	return err
}

// WithConfig writes the image of the OCI archive at src (as WriteOCIArchive
// writes it) to dst with its config changed by edit and named ref: a
// variant of a test image (a STOPSIGNAL, another user) without a rebuild,
// or with a nil edit the same image under another name (for a test that
// must run an image by a name it does not choose: an upstream suite's
// "foo").
func WithConfig(dst io.Writer, src, ref string, edit func(*v1.Config)) error {
	dir, err := os.MkdirTemp("", "kanga-testimage-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		p := filepath.Join(dir, filepath.Clean("/"+h.Name))
		if h.Typeflag == tar.TypeDir {
			if err := os.MkdirAll(p, 0o755); err != nil {
				return err
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		out, err := os.Create(p)
		if err != nil {
			return err
		}
		_, err = io.Copy(out, tr)
		out.Close()
		if err != nil {
			return err
		}
	}
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		return err
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return err
	}
	if len(im.Manifests) == 0 {
		return fmt.Errorf("%s: no image", src)
	}
	img, err := idx.Image(im.Manifests[0].Digest)
	if err != nil {
		return err
	}
	if edit == nil {
		return WriteOCIArchive(dst, img, ref)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return err
	}
	cf = cf.DeepCopy()
	edit(&cf.Config)
	changed, err := mutate.ConfigFile(img, cf)
	if err != nil {
		return err
	}
	return WriteOCIArchive(dst, changed, ref)
}
