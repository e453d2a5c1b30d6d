package server

import (
	"net/http"
	"reflect"
	"syscall"
	"testing"

	"github.com/kanga-run/kanga/api"
)

func TestParseSignal(t *testing.T) {
	tests := []struct {
		in   string
		want syscall.Signal
		ok   bool
	}{
		{"", syscall.SIGKILL, true},
		{"KILL", syscall.SIGKILL, true},
		{"SIGTERM", syscall.SIGTERM, true},
		{"hup", syscall.SIGHUP, true},
		{"sigusr1", syscall.SIGUSR1, true},
		{"9", syscall.SIGKILL, true},
		{"15", syscall.SIGTERM, true},
		{"34", 34, true},
		{"64", 64, true},
		{"0", 0, false},
		{"-9", 0, false},
		{"32", 0, false},
		{"65", 0, false},
		{"SIGNOPE", 0, false},
		{"SIG", 0, false},
		{"KILL ", 0, false},
	}
	for _, tt := range tests {
		got, err := parseSignal(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("parseSignal(%q) = %d, %v; want %d (ok %v)", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

func TestKill(t *testing.T) {
	e := newEnv(t, 0)
	e.mustCreate(t, e.a, "k")
	// Only a Running instance's containers can be signalled.
	wantError(t, e.do(t, "POST", "/v1/instances/k/kill", e.a.token, ""), http.StatusConflict, "Conflict", "not Running")
	e.setPhase(t, e.a, "k", api.PhaseRunning)
	for _, tt := range []struct{ query, msg string }{
		{"?signal=NOPE", "signal:"},
		{"?signal=0", "signal:"},
		{"?container=other", "container:"},
	} {
		wantError(t, e.do(t, "POST", "/v1/instances/k/kill"+tt.query, e.a.token, ""), http.StatusBadRequest, "InvalidArgument", tt.msg)
	}
	wantError(t, e.do(t, "POST", "/v1/instances/k/kill", e.b.token, ""), http.StatusNotFound, "NotFound")
	wantStatus(t, e.do(t, "POST", "/v1/instances/k/kill", e.a.token, ""), http.StatusNoContent)
	wantStatus(t, e.do(t, "POST", "/v1/instances/k/kill?signal=hup&container=main", e.a.token, ""), http.StatusNoContent)
	e.host.mu.Lock()
	got := append([]string(nil), e.host.kills...)
	e.host.mu.Unlock()
	if want := []string{"k//9", "k/main/1"}; !reflect.DeepEqual(got, want) {
		t.Errorf("kills %q, want %q", got, want)
	}
}
