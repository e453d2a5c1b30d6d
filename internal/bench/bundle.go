package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/containerd/containerd/archive"
	"github.com/containerd/containerd/archive/compression"
	"github.com/containerd/containerd/containers"
	"github.com/containerd/containerd/content"
	"github.com/containerd/containerd/images"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/oci"
	"github.com/containerd/platforms"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/kanga-run/kanga/errdefs"
)

// benchCgroupParent is the cgroup under which the raw runtime's containers
// live, apart from Kanga's and containerd's.
const benchCgroupParent = "/kanga-bench"

// UnpackImage applies the layers of the image whose manifest (or index)
// target names, read from provider, into dir. It is the raw runtime's
// rootfs: plain files, no snapshot and no mount to leave behind.
func UnpackImage(ctx context.Context, provider content.Provider, target ocispec.Descriptor, dir string) error {
	manifest, err := images.Manifest(ctx, provider, target, platforms.Default())
	if err != nil {
		return fmt.Errorf("reading the image manifest: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, layer := range manifest.Layers {
		if err := applyLayer(ctx, provider, layer, dir); err != nil {
			return fmt.Errorf("layer %s: %w", layer.Digest, err)
		}
	}
	return nil
}

// makeMountPoints creates the directories the default spec mounts on: the
// runtime cannot create them in a read-only rootfs.
func makeMountPoints(rootfs string) error {
	for _, d := range []string{"proc", "dev", "sys", "run", "tmp"} {
		if err := os.MkdirAll(filepath.Join(rootfs, d), 0o755); err != nil {
			return err
		}
	}
	return nil
}

func applyLayer(ctx context.Context, provider content.Provider, desc ocispec.Descriptor, dir string) error {
	ra, err := provider.ReaderAt(ctx, desc)
	if err != nil {
		return err
	}
	defer ra.Close()
	rd, err := compression.DecompressStream(content.NewReader(ra))
	if err != nil {
		return err
	}
	defer rd.Close()
	_, err = archive.Apply(ctx, dir, rd)
	return err
}

// BundleSpec returns containerd's default OCI spec for a container with
// the read-only rootfs at rootfs (an absolute path, so that many small
// bundles share one rootfs), changed by opts (the image's config: PATH,
// working dir, user), running args. The cgroup is set per container by
// WriteBundle.
func BundleSpec(ctx context.Context, rootfs string, args []string, opts ...oci.SpecOpts) (*specs.Spec, error) {
	if !filepath.IsAbs(rootfs) {
		return nil, fmt.Errorf("rootfs %q must be an absolute path: %w", rootfs, errdefs.ErrInvalidArgument)
	}
	if len(args) == 0 {
		return nil, fmt.Errorf("no process args: %w", errdefs.ErrInvalidArgument)
	}
	// Image options read content from the namespace in ctx. Otherwise the
	// namespace only shapes the default cgroup path, replaced later.
	if _, ok := namespaces.Namespace(ctx); !ok {
		ctx = namespaces.WithNamespace(ctx, Namespace)
	}
	all := []oci.SpecOpts{oci.WithRootFSPath(rootfs), oci.WithRootFSReadonly()}
	all = append(all, opts...)
	all = append(all, oci.WithProcessArgs(args...))
	s, err := oci.GenerateSpec(ctx, nil, &containers.Container{ID: "bench"}, all...)
	if err != nil {
		return nil, fmt.Errorf("generating the OCI spec: %w", err)
	}
	return s, nil
}

// WriteBundle writes dir/config.json: spec with the container's own cgroup
// under benchCgroupParent. Containers sharing one cgroup would be killed
// together on delete, so each gets its own config.
func WriteBundle(dir string, spec *specs.Spec, id string) error {
	s := *spec
	linux := *spec.Linux
	linux.CgroupsPath = benchCgroupParent + "/" + id
	s.Linux = &linux
	b, err := json.Marshal(&s)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "config.json"), b, 0o600)
}
