package server

import (
	"fmt"
	"net/http"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
	"github.com/kanga-run/kanga/internal/hostcontract"
)

// top lists the processes of a running instance's containers, as docker
// top does; the host reads them from its /proc.
func (s *Server) top(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	inst, err := s.store.GetInstance(ctx, r.PathValue("name"))
	if err != nil {
		return err
	}
	if inst.Status.Phase != api.PhaseRunning {
		return fmt.Errorf("instance %q is %s, not Running: %w", inst.Name, inst.Status.Phase, errdefs.ErrConflict)
	}
	host, err := s.hostOf(inst)
	if err != nil {
		return err
	}
	pl, ok := host.(hostcontract.ProcessLister)
	if !ok {
		return fmt.Errorf("the host of instance %q cannot list processes: %w", inst.Name, errdefs.ErrNotImplemented)
	}
	procs, err := pl.Top(ctx, inst)
	if err != nil {
		return err
	}
	if procs == nil {
		procs = []api.Process{}
	}
	writeJSON(w, http.StatusOK, api.ProcessList{Items: procs})
	return nil
}
