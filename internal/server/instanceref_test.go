package server

import (
	"net/http"
	"testing"
	"time"

	"github.com/kanga-run/kanga/api"
)

// TestInstanceRef checks that an instance's routes take a name, a UID or
// a unique UID prefix, as docker's container references do.
func TestInstanceRef(t *testing.T) {
	// The fake host never confirms a teardown: the delete below answers
	// 202 once the wait runs out. Long enough for the wait for an
	// instance already terminal to read it on a loaded machine (1 ms
	// was not: 504 about one run in four at load 7).
	e := newEnv(t, 2*time.Second)
	// UIDs are random: give the instances known ones, two sharing "abc1",
	// and one whose name is itself a UID prefix of another instance.
	for name, uid := range map[string]string{"one": "abc1000000000001", "two": "abc1000000000002", "abc2": "ffff000000000000"} {
		e.mustCreate(t, e.a, name)
		if _, err := e.store.UpdateInstance(e.a.ctx, name, func(in *api.Instance) error {
			in.UID = uid
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	e.mustCreate(t, e.a, "three")
	if _, err := e.store.UpdateInstance(e.a.ctx, "three", func(in *api.Instance) error {
		in.UID = "abc2000000000003"
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		ref      string
		token    string
		want     string // name of the instance found
		status   int
		code     string
		messages []string
	}{
		{ref: "one", want: "one"},
		{ref: "abc1000000000002", want: "two"},
		{ref: "abc1000000000001", want: "one"},
		{ref: "abc10000000000011", status: http.StatusNotFound, code: "NotFound"},
		{ref: "ffff", want: "abc2"},
		// A name wins over a UID prefix, as in docker.
		{ref: "abc2", want: "abc2"},
		{ref: "abc20", want: "three"},
		{ref: "abc1", status: http.StatusBadRequest, code: "InvalidArgument",
			messages: []string{`"abc1" is ambiguous`, "one (abc1000000000001)", "two (abc1000000000002)"}},
		{ref: "abc", status: http.StatusBadRequest, code: "InvalidArgument", messages: []string{"one (", "two (", "three ("}},
		{ref: "0123", status: http.StatusNotFound, code: "NotFound"},
		// Another tenant's UIDs are not visible.
		{ref: "abc1000000000001", token: e.b.token, status: http.StatusNotFound, code: "NotFound"},
	}
	for _, tt := range tests {
		token := tt.token
		if token == "" {
			token = e.a.token
		}
		r := e.do(t, "GET", "/v1/instances/"+tt.ref, token, "")
		if tt.status != 0 {
			wantError(t, r, tt.status, tt.code, tt.messages...)
			continue
		}
		wantStatus(t, r, http.StatusOK)
		var got api.Instance
		decode(t, r, &got)
		if got.Name != tt.want {
			t.Errorf("GET %s found %s, want %s", tt.ref, got.Name, tt.want)
		}
	}
	// Every instance route resolves the same way.
	e.setPhase(t, e.a, "three", api.PhaseSucceeded)
	wantStatus(t, e.do(t, "GET", "/v1/instances/abc20/wait?condition=terminal", e.a.token, ""), http.StatusOK)
	wantStatus(t, e.do(t, "DELETE", "/v1/instances/abc2000", e.a.token, ""), http.StatusAccepted)
	if !e.stored(t, e.a, "three").DeletionRequested {
		t.Error("DELETE by UID prefix did not ask for the deletion")
	}
}
