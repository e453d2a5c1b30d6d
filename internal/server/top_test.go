package server

import (
	"errors"
	"net/http"
	"reflect"
	"testing"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
)

func TestTop(t *testing.T) {
	e := newEnv(t, 0)
	e.mustCreate(t, e.a, "tp")
	// Only a Running instance has processes to list.
	wantError(t, e.do(t, "GET", "/v1/instances/tp/top", e.a.token, ""), http.StatusConflict, "Conflict", `instance "tp" is`, "not Running")
	e.setPhase(t, e.a, "tp", api.PhaseRunning)
	// Another tenant's instance does not exist for the caller.
	wantError(t, e.do(t, "GET", "/v1/instances/tp/top", e.b.token, ""), http.StatusNotFound, "NotFound")
	wantError(t, e.do(t, "GET", "/v1/instances/nosuch/top", e.a.token, ""), http.StatusNotFound, "NotFound", `instance "nosuch" not found`)
	r := e.do(t, "GET", "/v1/instances/tp/top", e.a.token, "")
	wantStatus(t, r, http.StatusOK)
	var list api.ProcessList
	decode(t, r, &list)
	inst := e.stored(t, e.a, "tp")
	want := []api.Process{{Container: inst.Spec.Containers[0].Name, PID: 1, State: "S", Command: []string{"/bin/" + inst.Spec.Containers[0].Name}}}
	if !reflect.DeepEqual(list.Items, want) {
		t.Errorf("top = %+v, want %+v", list.Items, want)
	}
	procs, err := e.client(e.a).Top(t.Context(), "tp")
	if err != nil || !reflect.DeepEqual(procs, want) {
		t.Errorf("SDK Top = %+v, %v", procs, err)
	}
	if _, err := e.client(e.b).Top(t.Context(), "tp"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("SDK Top of another tenant's instance = %v, want NotFound", err)
	}
}
