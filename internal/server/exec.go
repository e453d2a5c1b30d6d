package server

import (
	"fmt"
	"net/http"

	"github.com/kanga-run/kanga/internal/hostcontract"
	"github.com/kanga-run/kanga/internal/httpstream"
)

// exec upgrades the connection to the frame protocol of api/stream.go. All
// checks happen before the upgrade so that a bad request gets an ordinary
// JSON error with the right status.
func (s *Server) exec(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	e, err := httpstream.ParseExec(r)
	if err != nil {
		return err
	}
	inst, err := s.store.GetInstance(ctx, r.PathValue("name"))
	if err != nil {
		return err
	}
	container, err := httpstream.PickContainer(inst, e.Container)
	if err != nil {
		return err
	}
	if err := httpstream.CheckExec(inst, container); err != nil {
		return err
	}
	host, err := s.hostOf(inst)
	if err != nil {
		return err
	}
	setAuditDetail(ctx, fmt.Sprintf("container=%s program=%q tty=%t", container, e.Req.Cmd[0], e.Req.TTY))
	return httpstream.ServeExec(w, e, container, func(req hostcontract.ExecRequest) (int, error) {
		return host.Exec(ctx, inst, req)
	})
}
