package server

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
	"github.com/kanga-run/kanga/internal/model"
	"github.com/kanga-run/kanga/internal/tenant"
)

// getTenantNetwork returns a tenant's network policy (an empty one for
// the default); a tenant reads its own, administrators any.
func (s *Server) getTenantNetwork(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	name := r.PathValue("name")
	self, err := tenant.Name(ctx)
	if err != nil {
		return err
	}
	if name != self && !isAdmin(ctx) {
		// Other tenants' names are not revealed.
		return fmt.Errorf("tenant %q not found: %w", name, errdefs.ErrNotFound)
	}
	p := api.TenantNetworkPolicy{}
	t, err := s.store.GetTenant(ctx, name)
	switch {
	case errors.Is(err, errdefs.ErrNotFound) && name == self:
	case err != nil:
		return err
	case t.Network != nil:
		p = *t.Network
	}
	writeJSON(w, http.StatusOK, p)
	return nil
}

// putTenantNetwork replaces a tenant's network policy (administrators
// only); an empty body object restores the default. Every host applies
// it to the tenant's running instances within about a second.
func (s *Server) putTenantNetwork(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	if err := requireAdmin(ctx); err != nil {
		return err
	}
	name := r.PathValue("name")
	if err := tenant.Validate(name); err != nil {
		return err
	}
	var req api.TenantNetworkPolicy
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	p, err := model.NormalizeTenantNetwork("network", &req)
	if err != nil {
		return err
	}
	t, err := s.store.UpdateTenant(ctx, name, func(t *api.Tenant) error {
		t.Network = p
		return nil
	})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, t)
	return nil
}
