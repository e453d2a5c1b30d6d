package server

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
	"github.com/kanga-run/kanga/internal/store"
	"github.com/kanga-run/kanga/internal/tenant"
)

// UsageStore sums the hosts' usage records (*store.Store).
type UsageStore interface {
	Usage(ctx context.Context, q store.UsageQuery) ([]api.UsageItem, error)
}

// defaultUsageWindow is the period of GET /v1/usage without since.
const defaultUsageWindow = 24 * time.Hour

func (s *Server) getUsage(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	if s.usage == nil {
		return fmt.Errorf("this server keeps no usage records: %w", errdefs.ErrNotImplemented)
	}
	own, err := tenant.Name(ctx)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	now := s.now().UTC()
	uq := store.UsageQuery{Tenant: q.Get("tenant"), Since: now.Add(-defaultUsageWindow), Until: now}
	switch {
	case isAdmin(ctx):
		// Any tenant's, or every tenant's without the parameter.
	case uq.Tenant == "" || uq.Tenant == own:
		uq.Tenant = own
	default:
		return fmt.Errorf("tenant %q: your token may read only tenant %s's usage: %w", uq.Tenant, own, errdefs.ErrPermissionDenied)
	}
	if uq.Tenant != "" {
		if err := tenant.Validate(uq.Tenant); err != nil {
			return fmt.Errorf("tenant: %w", err)
		}
	}
	if v := q.Get("since"); v != "" {
		if uq.Since, err = parseSince(v, now); err != nil {
			return err
		}
	}
	if v := q.Get("until"); v != "" {
		t, err := parseSince(v, now)
		if err != nil {
			return fmt.Errorf("until: %w", err)
		}
		uq.Until = t
	}
	if !uq.Until.After(uq.Since) {
		return fmt.Errorf("until %s is not after since %s: %w", uq.Until.Format(time.RFC3339), uq.Since.Format(time.RFC3339), errdefs.ErrInvalidArgument)
	}
	switch by := q.Get("by"); by {
	case "", "tenant":
	case "instance":
		uq.ByInstance = true
	default:
		return fmt.Errorf("by %q: tenant or instance: %w", by, errdefs.ErrInvalidArgument)
	}
	items, err := s.usage.Usage(ctx, uq)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, api.UsageReport{Since: uq.Since.UTC(), Until: uq.Until.UTC(), Items: items})
	return nil
}
