package server

import (
	"net/http"
)

func (s *Server) stats(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	inst, err := s.store.GetInstance(ctx, r.PathValue("name"))
	if err != nil {
		return err
	}
	host, err := s.hostOf(inst)
	if err != nil {
		return err
	}
	st, err := host.Stats(ctx, inst)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, st)
	return nil
}

func (s *Server) sla(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	inst, err := s.store.GetInstance(ctx, r.PathValue("name"))
	if err != nil {
		return err
	}
	host, err := s.hostOf(inst)
	if err != nil {
		return err
	}
	rep, err := host.SLA(ctx, inst)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, rep)
	return nil
}
