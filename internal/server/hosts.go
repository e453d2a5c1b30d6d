package server

import (
	"context"
	"fmt"
	"net/http"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
	"github.com/kanga-run/kanga/internal/controlplane"
)

// HostStore is the host registry the host endpoints use.
type HostStore interface {
	ListHosts(ctx context.Context) ([]api.Host, error)
	GetHost(ctx context.Context, name string) (*api.Host, error)
	UpdateHost(ctx context.Context, name string, fn func(*api.Host) error) (*api.Host, error)
	ListAllInstances(ctx context.Context) ([]api.Instance, int64, error)
}

// requireOperator admits only administrators: hosts are the platform's,
// not a tenant's, and their names and load are not a tenant's business.
func requireOperator(ctx context.Context) error {
	if !hasScope(ctx, api.ScopeHostsRead) && !hasScope(ctx, api.ScopeHostsWrite) {
		return fmt.Errorf("managing hosts needs an administrator's token (the one kanga up writes): %w", errdefs.ErrPermissionDenied)
	}
	return nil
}

func (s *Server) listHosts(w http.ResponseWriter, r *http.Request) error {
	if err := requireOperator(r.Context()); err != nil {
		return err
	}
	hosts, err := s.store.ListHosts(r.Context())
	if err != nil {
		return err
	}
	if hosts == nil {
		hosts = []api.Host{}
	}
	writeJSON(w, http.StatusOK, api.HostList{Items: hosts})
	return nil
}

func (s *Server) getHost(w http.ResponseWriter, r *http.Request) error {
	if err := requireOperator(r.Context()); err != nil {
		return err
	}
	h, err := s.store.GetHost(r.Context(), r.PathValue("name"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, h)
	return nil
}

func (s *Server) setCordon(w http.ResponseWriter, r *http.Request, cordoned bool) error {
	if err := requireOperator(r.Context()); err != nil {
		return err
	}
	h, err := s.store.UpdateHost(r.Context(), r.PathValue("name"), func(h *api.Host) error {
		h.Cordoned = cordoned
		return nil
	})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, h)
	return nil
}

func (s *Server) cordonHost(w http.ResponseWriter, r *http.Request) error {
	return s.setCordon(w, r, true)
}

func (s *Server) uncordonHost(w http.ResponseWriter, r *http.Request) error {
	return s.setCordon(w, r, false)
}

func (s *Server) drainHost(w http.ResponseWriter, r *http.Request) error {
	if err := requireOperator(r.Context()); err != nil {
		return err
	}
	rep, err := controlplane.Drain(r.Context(), s.store, r.PathValue("name"), s.now())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, rep)
	return nil
}
