package server

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
	"github.com/kanga-run/kanga/internal/hostcontract"
)

// kill sends a signal to the running containers of an instance, as docker
// kill does: SIGKILL unless ?signal= names another. It does not stop the
// instance: its restart policy applies to the containers' exits.
func (s *Server) kill(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	q := r.URL.Query()
	sig, err := parseSignal(q.Get("signal"))
	if err != nil {
		return err
	}
	container := q.Get("container")
	inst, k, err := runningOn[hostcontract.Killer](s, r, "signal containers", func(inst *api.Instance) error {
		if container != "" && !hasContainer(inst, container) {
			return fmt.Errorf("container: instance %q has no container %q: %w", inst.Name, container, errdefs.ErrInvalidArgument)
		}
		return nil
	})
	if err != nil {
		return err
	}
	setAuditDetail(ctx, fmt.Sprintf("signal=%s container=%s", unix.SignalName(sig), container))
	if err := k.Kill(ctx, inst, container, sig); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func hasContainer(inst *api.Instance, name string) bool {
	for _, c := range inst.Spec.Containers {
		if c.Name == name {
			return true
		}
	}
	return false
}

// parseSignal takes a signal as docker kill does: a name with or without
// SIG (any case) or a number; empty is SIGKILL.
func parseSignal(s string) (syscall.Signal, error) {
	if s == "" {
		return syscall.SIGKILL, nil
	}
	if n, err := strconv.Atoi(s); err == nil {
		// Linux's are 1-31 and the real-time ones glibc leaves to
		// programs, 34-64.
		if n < 1 || n > 64 || n < 34 && unix.SignalName(syscall.Signal(n)) == "" {
			return 0, fmt.Errorf("signal: %d is not a signal number: %w", n, errdefs.ErrInvalidArgument)
		}
		return syscall.Signal(n), nil
	}
	name := strings.ToUpper(s)
	if !strings.HasPrefix(name, "SIG") {
		name = "SIG" + name
	}
	if sig := unix.SignalNum(name); sig != 0 {
		return sig, nil
	}
	return 0, fmt.Errorf("signal: %q is not a signal name or number (e.g. KILL, SIGTERM, 15): %w", s, errdefs.ErrInvalidArgument)
}
