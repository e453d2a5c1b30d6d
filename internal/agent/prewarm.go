package agent

import (
	"context"
	"errors"
	"fmt"

	"github.com/containerd/containerd/containers"
	cerrdefs "github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/oci"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
	"github.com/kanga-run/kanga/internal/agent/image"
	"github.com/kanga-run/kanga/internal/server"
)

var _ server.ImagePrewarmer = (*Agent)(nil)

// PrewarmImage makes the tenant's image ready for a burst of starts on
// this host: pulled if the tenant does not have it yet (an imported image
// must be there already), unpacked, its layers and config resolved into
// the per-digest caches, and the spec its config makes remembered (which
// needs a look into its /etc/group), so that the first start of the burst
// costs what the others do; and the warm pool fills to its maximum for a
// while (pool.Expect), so the burst finds network sandboxes ready. pulled
// tells whether it was fetched now.
func (a *Agent) PrewarmImage(ctx context.Context, ref string) (api.Image, bool, error) {
	t, err := tenantOf(ctx)
	if err != nil {
		return api.Image{}, false, err
	}
	ctx = a.ns(ctx)
	pulled := false
	if _, err := a.cfg.Images.Get(ctx, t, ref); errors.Is(err, errdefs.ErrNotFound) {
		if _, err := a.cfg.Images.Pull(ctx, t, ref, nil); err != nil {
			return api.Image{}, false, err
		}
		pulled = true
	} else if err != nil {
		return api.Image{}, false, err
	}
	if err := a.cfg.Images.Unpack(ctx, t, ref); err != nil {
		return api.Image{}, false, err
	}
	res, err := a.cfg.Images.Warm(ctx, t, ref)
	if err != nil {
		return api.Image{}, false, err
	}
	if err := a.warmSpec(ctx, res); err != nil {
		return api.Image{}, false, fmt.Errorf("prewarm %s: %w", res.Name, err)
	}
	// A prewarm announces a burst: have network sandboxes ready for it.
	if a.cfg.Pool != nil {
		a.cfg.Pool.Expect()
	}
	if a.warm != nil {
		a.warm.Expect(t, res.Name)
	}
	imgs, err := a.ListImages(ctx)
	if err != nil {
		return api.Image{}, false, err
	}
	for _, img := range imgs {
		if img.Name == res.Name {
			return img, pulled, nil
		}
	}
	return api.Image{}, false, fmt.Errorf("image %s was removed while it was prewarmed: %w", res.Name, errdefs.ErrNotFound)
}

// warmSpec fills the spec cache for the image: a throwaway read-only view
// of its layers stands in for a container's snapshot.
func (a *Agent) warmSpec(ctx context.Context, res image.Resolved) error {
	key := "prewarm-" + res.Digest.Encoded()
	sn := a.cfg.Client.SnapshotService(res.Snapshotter)
	if _, err := sn.View(ctx, key, res.ChainID); err != nil && !cerrdefs.IsAlreadyExists(err) {
		return fmt.Errorf("viewing the image's layers: %w", err)
	}
	defer func() {
		if err := sn.Remove(context.WithoutCancel(ctx), key); err != nil && !cerrdefs.IsNotFound(err) {
			a.log.Warn("removing the prewarm view failed", "snapshot", key, "err", err)
		}
	}()
	c := &containers.Container{ID: key, Snapshotter: res.Snapshotter, SnapshotKey: key}
	_, err := oci.GenerateSpec(ctx, a.cfg.Client, c, a.imageSpecs.withImageConfig(res))
	return err
}

// HotImages lists the images this host started containers from since the
// agent started, for every tenant, the most recently used first: what a
// scheduler should know for image locality. It is not for tenants (they
// see their own use in ListImages).
func (a *Agent) HotImages() []image.HotImage { return a.cfg.Images.Hot("") }
