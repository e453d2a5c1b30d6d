package server

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/client"
	"github.com/kanga-run/kanga/internal/tenant"
)

// async runs a request in the background; the test plays the agent
// meanwhile.
func (e *testEnv) async(t *testing.T, method, path, token string) <-chan response {
	t.Helper()
	ch := make(chan response, 1)
	go func() { ch <- e.send(t.Context(), method, path, token) }()
	return ch
}

// send is a request without the testing.T: it may outlive the test. A
// transport error is returned as the response's err.
func (e *testEnv) send(ctx context.Context, method, path, token string) response {
	req, err := http.NewRequestWithContext(ctx, method, e.url+path, nil)
	if err != nil {
		return response{err: err}
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := e.hc.Do(req)
	if err != nil {
		return response{err: fmt.Errorf("%s %s: %w", method, path, err)}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return response{status: resp.StatusCode, header: resp.Header, body: body, err: err}
}

// waitStored blocks until the stored instance meets cond, as an agent's
// watch would see it.
func (e *testEnv) waitStored(t *testing.T, tn testTenant, name string, cond func(*api.Instance) bool) *api.Instance {
	t.Helper()
	inst, err := e.store.WaitInstance(tenant.WithName(t.Context(), tn.name), name, cond)
	if err != nil {
		t.Fatalf("store.WaitInstance(%s): %v", name, err)
	}
	return inst
}

func TestDeleteRefusedWhileRunning(t *testing.T) {
	e := newEnv(t, 0)
	for _, phase := range []api.Phase{api.PhaseRunning, api.PhaseCreating} {
		t.Run(string(phase), func(t *testing.T) {
			name := strings.ToLower(string(phase))
			e.mustCreate(t, e.a, name)
			e.setPhase(t, e.a, name, phase)
			for _, q := range []string{"", "?force=false"} {
				r := e.do(t, "DELETE", "/v1/instances/"+name+q, e.a.token, "")
				wantError(t, r, http.StatusConflict, "FailedPrecondition",
					string(phase), "kanga stop "+name, "kanga rm -f "+name)
			}
			if got := e.stored(t, e.a, name); got.DeletionRequested || got.StopRequested {
				t.Errorf("a refused delete changed the instance: %+v", got)
			}
		})
	}
	r := e.do(t, "DELETE", "/v1/instances/running?force=maybe", e.a.token, "")
	wantError(t, r, http.StatusBadRequest, "InvalidArgument", "force", "maybe")
}

func TestDeleteForceAccepted(t *testing.T) {
	// No agent removes the record: the server answers 202 once its short
	// wait ends.
	e := newEnv(t, 50*time.Millisecond)
	e.mustCreate(t, e.a, "web")
	e.setPhase(t, e.a, "web", api.PhaseRunning)

	r := e.do(t, "DELETE", "/v1/instances/web?force=true", e.a.token, "")
	wantStatus(t, r, http.StatusAccepted)
	var got api.Instance
	decode(t, r, &got)
	if !got.DeletionRequested || !got.StopRequested || got.Name != "web" {
		t.Errorf("202 body = %+v, want the instance with deletionRequested and stopRequested", got)
	}
	if st := e.stored(t, e.a, "web"); !st.DeletionRequested || !st.StopRequested {
		t.Errorf("stored = %+v, want the deletion recorded", st)
	}
	// Repeating the delete is fine while the host has not got to it.
	wantStatus(t, e.do(t, "DELETE", "/v1/instances/web", e.a.token, ""), http.StatusAccepted)
}

func TestDeleteCompletes(t *testing.T) {
	e := newEnv(t, 0)
	tests := []struct {
		name  string
		phase api.Phase
		stop  bool // StopRequested already set
		query string
	}{
		{"pending", api.PhasePending, false, ""},
		{"succeeded", api.PhaseSucceeded, false, ""},
		{"failed", api.PhaseFailed, false, ""},
		{"running and stopping", api.PhaseRunning, true, ""},
		{"running forced", api.PhaseRunning, false, "?force=true"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			name := strings.ReplaceAll(tt.name, " ", "-")
			e.mustCreate(t, e.a, name)
			if _, err := e.store.UpdateInstance(e.a.ctx, name, func(in *api.Instance) error {
				in.Status.Phase, in.StopRequested = tt.phase, tt.stop
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			done := e.async(t, "DELETE", "/v1/instances/"+name+tt.query, e.a.token)
			// The agent sees the request and removes the record.
			e.waitStored(t, e.a, name, func(in *api.Instance) bool { return in.DeletionRequested })
			if err := e.store.DeleteInstance(e.a.ctx, name); err != nil {
				t.Fatalf("DeleteInstance: %v", err)
			}
			r := <-done
			if r.status != http.StatusNoContent || len(r.body) != 0 {
				t.Fatalf("delete = %s, want 204 and no body", r)
			}
			wantStatus(t, e.do(t, "GET", "/v1/instances/"+name, e.a.token, ""), http.StatusNotFound)
		})
	}
}

func TestStop(t *testing.T) {
	e := newEnv(t, 0)
	e.mustCreate(t, e.a, "web")
	e.setPhase(t, e.a, "web", api.PhaseRunning)

	done := e.async(t, "POST", "/v1/instances/web/stop?timeout=3", e.a.token)
	seen := e.waitStored(t, e.a, "web", func(in *api.Instance) bool { return in.StopRequested })
	if seen.StopGraceSeconds == nil || *seen.StopGraceSeconds != 3 {
		t.Errorf("stopGraceSeconds = %v, want 3", seen.StopGraceSeconds)
	}
	if ev := seen.Status.Events[len(seen.Status.Events)-1]; ev.Reason != "Stopping" || !strings.Contains(ev.Message, "3s") {
		t.Errorf("last event = %+v, want Stopping with the grace period", ev)
	}
	// The agent stops the containers.
	e.setPhase(t, e.a, "web", api.PhaseSucceeded)
	r := <-done
	wantStatus(t, r, http.StatusOK)
	var got api.Instance
	decode(t, r, &got)
	if got.Status.Phase != api.PhaseSucceeded || !got.StopRequested {
		t.Errorf("stop answered %+v, want the terminal instance", got)
	}

	// Stopping a terminal instance answers at once and changes nothing.
	before := e.stored(t, e.a, "web")
	r = e.do(t, "POST", "/v1/instances/web/stop?timeout=1", e.a.token, "")
	wantStatus(t, r, http.StatusOK)
	if after := e.stored(t, e.a, "web"); !equalGrace(after.StopGraceSeconds, before.StopGraceSeconds) || len(after.Status.Events) != len(before.Status.Events) {
		t.Errorf("stop of a terminal instance changed it: %+v", after)
	}
}

func TestStopKeepsShortestGrace(t *testing.T) {
	e := newEnv(t, 0)
	e.mustCreate(t, e.a, "web")
	e.setPhase(t, e.a, "web", api.PhaseRunning)

	var pending []<-chan response
	for _, tt := range []struct {
		timeout string
		want    int
	}{{"5", 5}, {"10", 5}, {"2", 2}, {"", 2}, {"0", 0}, {"3", 0}} {
		events := len(e.stored(t, e.a, "web").Status.Events)
		pending = append(pending, e.async(t, "POST", "/v1/instances/web/stop?timeout="+tt.timeout, e.a.token))
		// Every stop records an event; wait for this one's.
		got := e.waitStored(t, e.a, "web", func(in *api.Instance) bool { return len(in.Status.Events) > events })
		if got.StopGraceSeconds == nil || *got.StopGraceSeconds != tt.want {
			t.Errorf("after stop?timeout=%s stopGraceSeconds = %v, want %d", tt.timeout, got.StopGraceSeconds, tt.want)
		}
	}
	// The agent finishes; every waiting stop answers.
	e.setPhase(t, e.a, "web", api.PhaseFailed)
	for _, ch := range pending {
		wantStatus(t, <-ch, http.StatusOK)
	}
}

func TestStopTimeout(t *testing.T) {
	// The agent never finishes the stop: the request gives up with 504,
	// and the stop stays recorded.
	e := newEnv(t, 20*time.Millisecond)
	e.mustCreate(t, e.a, "web")
	e.setPhase(t, e.a, "web", api.PhaseRunning)
	r := e.do(t, "POST", "/v1/instances/web/stop?timeout=0", e.a.token, "")
	wantError(t, r, http.StatusGatewayTimeout, "DeadlineExceeded")
	if got := e.stored(t, e.a, "web"); !got.StopRequested {
		t.Errorf("stored = %+v, want stopRequested", got)
	}
}

func TestStopBadTimeout(t *testing.T) {
	e := newEnv(t, 0)
	e.mustCreate(t, e.a, "web")
	e.setPhase(t, e.a, "web", api.PhaseRunning)
	for _, q := range []string{"abc", "-1", "3601", "1.5", "10s"} {
		t.Run(q, func(t *testing.T) {
			r := e.do(t, "POST", "/v1/instances/web/stop?timeout="+q, e.a.token, "")
			wantError(t, r, http.StatusBadRequest, "InvalidArgument", "timeout", q, "between 0 and 3600")
		})
	}
	if got := e.stored(t, e.a, "web"); got.StopRequested {
		t.Error("a rejected stop set stopRequested")
	}
}

func TestWait(t *testing.T) {
	e := newEnv(t, 0)
	e.mustCreate(t, e.a, "web")

	t.Run("running", func(t *testing.T) {
		done := e.async(t, "GET", "/v1/instances/web/wait?condition=running", e.a.token)
		e.setPhase(t, e.a, "web", api.PhaseCreating)
		e.setPhase(t, e.a, "web", api.PhaseRunning)
		r := <-done
		wantStatus(t, r, http.StatusOK)
		var got api.Instance
		decode(t, r, &got)
		if got.Status.Phase != api.PhaseRunning {
			t.Errorf("wait returned phase %s, want Running", got.Status.Phase)
		}
	})

	t.Run("terminal", func(t *testing.T) {
		done := e.async(t, "GET", "/v1/instances/web/wait", e.a.token)
		e.setPhase(t, e.a, "web", api.PhaseFailed)
		r := <-done
		wantStatus(t, r, http.StatusOK)
		var got api.Instance
		decode(t, r, &got)
		if got.Status.Phase != api.PhaseFailed {
			t.Errorf("wait returned phase %s, want Failed", got.Status.Phase)
		}
	})

	t.Run("running is met by terminal", func(t *testing.T) {
		r := e.do(t, "GET", "/v1/instances/web/wait?condition=running", e.a.token, "")
		wantStatus(t, r, http.StatusOK)
	})

	t.Run("SDK", func(t *testing.T) {
		got, err := e.client(e.a).WaitInstance(t.Context(), "web", "terminal")
		if err != nil || got.Status.Phase != api.PhaseFailed {
			t.Errorf("WaitInstance = %+v, %v", got.Status, err)
		}
	})

	t.Run("bad condition", func(t *testing.T) {
		r := e.do(t, "GET", "/v1/instances/web/wait?condition=gone", e.a.token, "")
		wantError(t, r, http.StatusBadRequest, "InvalidArgument", "condition", "gone", "running, terminal")
	})

	t.Run("deleted while waiting", func(t *testing.T) {
		e.mustCreate(t, e.a, "doomed")
		done := e.async(t, "GET", "/v1/instances/doomed/wait", e.a.token)
		if err := e.store.DeleteInstance(e.a.ctx, "doomed"); err != nil {
			t.Fatal(err)
		}
		wantError(t, <-done, http.StatusNotFound, "NotFound", "doomed")
	})
}

func TestWaitTimeout(t *testing.T) {
	e := newEnv(t, 20*time.Millisecond)
	e.mustCreate(t, e.a, "web")
	r := e.do(t, "GET", "/v1/instances/web/wait", e.a.token, "")
	wantError(t, r, http.StatusGatewayTimeout, "DeadlineExceeded")
}

func TestLogs(t *testing.T) {
	e := newEnv(t, 0)
	r := e.do(t, "POST", "/v1/instances", e.a.token,
		`{"name":"web","spec":{"containers":[{"name":"app","image":"`+imgBusybox+`"},{"name":"side","image":"`+imgBusybox+`"}]}}`)
	wantStatus(t, r, http.StatusCreated)

	tests := []struct {
		query     string
		container string
		follow    bool
	}{
		{"", "app", false}, // the first container by default
		{"?container=side", "side", false},
		{"?container=app&follow=true", "app", true},
		{"?follow=false", "app", false},
	}
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			n := len(e.host.logCallsSeen())
			r := e.do(t, "GET", "/v1/instances/web/logs"+tt.query, e.a.token, "")
			wantStatus(t, r, http.StatusOK)
			if ct := r.header.Get("Content-Type"); ct != "text/plain; charset=utf-8" {
				t.Errorf("Content-Type = %q, want text/plain", ct)
			}
			if string(r.body) != fakeLogs(tt.container) {
				t.Errorf("body = %q, want %q", r.body, fakeLogs(tt.container))
			}
			calls := e.host.logCallsSeen()
			if want := (logCall{"web", tt.container, tt.follow}); len(calls) != n+1 || calls[n] != want {
				t.Errorf("host saw %+v, want one more call %+v", calls, want)
			}
		})
	}

	r = e.do(t, "GET", "/v1/instances/web/logs?container=db", e.a.token, "")
	wantError(t, r, http.StatusNotFound, "NotFound", `no container "db"`, "[app side]")
	r = e.do(t, "GET", "/v1/instances/web/logs?follow=yes%20please", e.a.token, "")
	wantError(t, r, http.StatusBadRequest, "InvalidArgument", "follow")

	// The SDK reads the same text.
	rc, err := e.client(e.a).Logs(t.Context(), "web", client.LogsOptions{Container: "side"})
	if err != nil {
		t.Fatalf("Logs: %v", err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != fakeLogs("side") {
		t.Errorf("SDK logs = %q", b)
	}
}

func equalGrace(a, b *int) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}
