package agent

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/kanga-run/kanga/errdefs"
	"github.com/kanga-run/kanga/internal/agent/image"
	"github.com/kanga-run/kanga/internal/server"
	"github.com/kanga-run/kanga/internal/store"
	"github.com/kanga-run/kanga/internal/tenant"
)

var _ server.ImageRemover = (*Agent)(nil)

// RemoveImage implements server.ImageRemover: the caller's tenant loses
// ref on this host, with the warm containers kept for it. Content another
// tenant's record points at stays (see image.Service.Remove); a running
// instance keeps its container and writable layer.
func (a *Agent) RemoveImage(ctx context.Context, ref string) error {
	t, err := tenantOf(ctx)
	if err != nil {
		return err
	}
	name, err := image.Normalize(ref)
	if err != nil {
		return err
	}
	if err := a.cfg.Images.Remove(a.ns(ctx), t, name); err != nil {
		return err
	}
	if a.warm != nil {
		a.warm.Drop(a.ns(ctx), t, name)
	}
	return nil
}

// RemoveTenant implements server.ImageRemover: everything this host keeps
// of a deleted tenant goes: its image records (content others use stays),
// its warm containers and the network sandboxes recycled for it.
func (a *Agent) RemoveTenant(ctx context.Context, name string) error {
	if err := tenant.Validate(name); err != nil {
		return err
	}
	removed, err := a.cfg.Images.RemoveTenant(a.ns(ctx), name)
	if err != nil {
		return err
	}
	if a.warm != nil {
		a.warm.Drop(a.ns(ctx), name, "")
	}
	if a.cfg.Pool != nil {
		a.cfg.Pool.Forget(name)
	}
	a.log.Info("removed what this host kept of a deleted tenant", "tenant", name, "images", removed)
	return nil
}

// Purges is where the agent learns the purges the control plane recorded
// (see store.Purge) that its host has not carried out yet: the store
// itself in kanga up, the link in kanga agent.
type Purges interface {
	Purges(ctx context.Context) ([]store.Purge, error)
	AckPurge(ctx context.Context, p store.Purge) error
}

// ApplyPurges carries out the host's pending purges, oldest first, and
// acknowledges each. It stops at the first that fails.
func (a *Agent) ApplyPurges(ctx context.Context, src Purges) error {
	ps, err := src.Purges(ctx)
	if err != nil {
		return fmt.Errorf("listing purges: %w", err)
	}
	for _, p := range ps {
		if p.Image == "" {
			err = a.RemoveTenant(ctx, p.Tenant)
		} else if err = a.RemoveImage(tenant.WithName(ctx, p.Tenant), p.Image); errors.Is(err, errdefs.ErrNotFound) {
			err = nil // never here, or gone already
		}
		if err != nil {
			return fmt.Errorf("removing what the host keeps of tenant %s (image %q): %w", p.Tenant, p.Image, err)
		}
		if err := src.AckPurge(ctx, p); err != nil {
			return err
		}
	}
	return nil
}

// RunPurges applies pending purges every interval until ctx ends: a
// purge the control plane could not deliver at once (its call to this
// host failed) is carried out within an interval.
func (a *Agent) RunPurges(ctx context.Context, src Purges, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := a.ApplyPurges(ctx, src); err != nil && ctx.Err() == nil {
			a.log.Warn("carrying out the control plane's purges failed; retrying", "err", err, "retry_in", interval)
		}
	}
}
