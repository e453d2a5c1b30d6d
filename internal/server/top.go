package server

import (
	"net/http"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/internal/hostcontract"
)

// top lists the processes of a running instance's containers, as docker
// top does; the host reads them from its /proc.
func (s *Server) top(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	inst, pl, err := runningOn[hostcontract.ProcessLister](s, r, "list processes", nil)
	if err != nil {
		return err
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
