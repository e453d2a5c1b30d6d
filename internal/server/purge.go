package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/kanga-run/kanga/errdefs"
	"github.com/kanga-run/kanga/internal/hostcontract"
	"github.com/kanga-run/kanga/internal/httpstream"
	"github.com/kanga-run/kanga/internal/model"
	"github.com/kanga-run/kanga/internal/store"
	"github.com/kanga-run/kanga/internal/tenant"
)

// PurgeStore keeps the purges hosts must carry out (see store.Purge): a
// host the API cannot reach when an image or a tenant goes carries it
// out before it registers again.
type PurgeStore interface {
	RecordPurge(ctx context.Context, p store.Purge) (store.Purge, error)
	Purges(ctx context.Context, host string) ([]store.Purge, error)
	AckPurge(ctx context.Context, host string, p store.Purge) error
	TenantPurgePending(ctx context.Context, tenant string) ([]string, error)
}

// settle carries out on h the purges it has not yet: before an image may
// arrive there for a tenant (import, pull, prewarm), so that a purge that
// reaches the host late cannot take away what came after it.
func (s *Server) settle(ctx context.Context, h hostcontract.Host) error {
	ps, err := s.store.Purges(ctx, h.Name())
	if err != nil || len(ps) == 0 {
		return err
	}
	rm, ok := h.(hostcontract.ImageRemover)
	if !ok {
		return nil
	}
	for _, p := range ps {
		if p.Image == "" {
			err = rm.RemoveTenant(ctx, p.Tenant)
		} else if err = rm.RemoveImage(tenant.WithName(ctx, p.Tenant), p.Image); errors.Is(err, errdefs.ErrNotFound) {
			err = nil
		}
		if err != nil {
			return fmt.Errorf("host %s has not yet removed what tenant %s kept there: %w", h.Name(), p.Tenant, err)
		}
		if err := s.store.AckPurge(ctx, h.Name(), p); err != nil {
			return err
		}
	}
	return nil
}

// purgeTenant has every connected host drop what it keeps of a deleted
// tenant now; a host not reached does before it registers again, or
// within a minute if it is connected (see agent.RunPurges).
func (s *Server) purgeTenant(ctx context.Context, name string) {
	for _, h := range s.hosts.All() {
		if err := s.settle(ctx, h); err != nil {
			s.log.Warn("a host did not remove a deleted tenant's images now; it will before it takes new work", "host", h.Name(), "tenant", name, "err", err)
		}
	}
}

// checkPurged refuses to re-create a tenant while a Ready host still
// holds what the tenant of that name had: a tenant created under a
// deleted one's name starts empty.
func (s *Server) checkPurged(ctx context.Context, name string) error {
	pending, err := s.store.TenantPurgePending(ctx, name)
	if err != nil || len(pending) == 0 {
		return err
	}
	for _, hn := range pending {
		if h, ok := s.hosts.Host(hn); ok {
			if err := s.settle(ctx, h); err != nil {
				s.log.Warn("a host did not remove a deleted tenant's images", "host", hn, "tenant", name, "err", err)
			}
		}
	}
	if pending, err = s.store.TenantPurgePending(ctx, name); err != nil || len(pending) == 0 {
		return err
	}
	return fmt.Errorf("tenant %q was deleted recently and host %s has not removed what it kept of it yet: try again in a minute: %w",
		name, strings.Join(pending, ", "), errdefs.ErrFailedPrecondition)
}

// removeImage serves DELETE /v1/images/{ref}: the tenant's image goes
// from every host. It is refused while an instance of the tenant that is
// not terminal uses it, unless force is set; then the instance keeps
// running (and restarting: its containers and writable layers stay), but
// no new instance can use the image until it is imported or pulled again.
func (s *Server) removeImage(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	t, err := tenant.Name(ctx)
	if err != nil {
		return err
	}
	ref := r.PathValue("ref")
	name, err := model.NormalizeImage(ref)
	if err != nil {
		return err
	}
	force, err := httpstream.BoolParam(r, "force")
	if err != nil {
		return err
	}
	if !force {
		if err := s.checkImageUnused(ctx, name); err != nil {
			return err
		}
	}
	hs, err := s.allHosts()
	if err != nil {
		return err
	}
	registered, err := s.store.ListHosts(ctx)
	if err != nil {
		return err
	}
	var (
		done     []string // hosts that have it no more
		found    bool
		firstErr error
	)
	for _, h := range hs {
		rm, ok := h.(hostcontract.ImageRemover)
		if !ok {
			continue
		}
		err := rm.RemoveImage(ctx, name)
		switch {
		case err == nil:
			found = true
			done = append(done, h.Name())
		case errors.Is(err, errdefs.ErrNotFound):
			done = append(done, h.Name())
		case firstErr == nil:
			firstErr = fmt.Errorf("host %s: %w", h.Name(), err)
		}
	}
	// Hosts that were not reached remove it before they register again.
	var missed bool
	for _, h := range registered {
		missed = missed || !slices.Contains(done, h.Name)
	}
	if missed {
		p, err := s.store.RecordPurge(ctx, store.Purge{Tenant: t, Image: name, At: s.now().UTC()})
		if err != nil {
			return err
		}
		for _, hn := range done {
			if err := s.store.AckPurge(ctx, hn, p); err != nil {
				return err
			}
		}
	}
	if firstErr != nil {
		return fmt.Errorf("removing image %s: %w (the other hosts removed it; repeat the request)", name, firstErr)
	}
	if !found && !missed {
		return fmt.Errorf("image %s not found: kanga image ls lists your images: %w", name, errdefs.ErrNotFound)
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// checkImageUnused refuses while an instance of the tenant that may still
// start a container from the image (any that is not terminal) uses it.
func (s *Server) checkImageUnused(ctx context.Context, name string) error {
	insts, err := s.store.ListInstances(ctx)
	if err != nil {
		return err
	}
	var users []string
	for _, inst := range insts {
		if inst.Status.Phase.Terminal() {
			continue
		}
		for _, c := range model.AllContainers(&inst.Spec) {
			if n, err := model.NormalizeImage(c.Spec.Image); err == nil && n == name {
				users = append(users, fmt.Sprintf("%q (%s)", inst.Name, inst.Status.Phase))
				break
			}
		}
	}
	if len(users) == 0 {
		return nil
	}
	more := ""
	if len(users) > 3 {
		more = fmt.Sprintf(" and %d more", len(users)-3)
		users = users[:3]
	}
	return fmt.Errorf("image %s is used by instance %s%s: remove the instance first, or remove the image anyway with kanga image rm -f (running instances keep running): %w",
		name, strings.Join(users, ", "), more, errdefs.ErrConflict)
}
