package server

import (
	"bufio"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/internal/model"
)

// addEvent does what the agent or the scheduler would: record an event
// in the instance's status.
func (e *testEnv) addEvent(t *testing.T, tn testTenant, name string, ev api.Event) {
	t.Helper()
	if _, err := e.store.UpdateInstance(tn.ctx, name, func(in *api.Instance) error {
		in.Status.Events = model.AppendEvent(in.Status.Events, ev)
		return nil
	}); err != nil {
		t.Fatalf("UpdateInstance(%s): %v", name, err)
	}
}

func eventLines(t *testing.T, body string) []api.EventRecord {
	t.Helper()
	var out []api.EventRecord
	for _, l := range strings.Split(strings.TrimSpace(body), "\n") {
		if l == "" {
			continue
		}
		var r api.EventRecord
		if err := json.Unmarshal([]byte(l), &r); err != nil {
			t.Fatalf("event line %q: %v", l, err)
		}
		out = append(out, r)
	}
	return out
}

// summarize is instance/reason of each record, the instance's own events
// (Pending, Scheduled, ...) of the harness left out.
func summarize(recs []api.EventRecord, reasons ...string) string {
	var b []string
	for _, r := range recs {
		for _, want := range reasons {
			if r.Reason == want {
				b = append(b, r.Instance+"/"+r.Reason+"/"+r.Type)
			}
		}
	}
	return strings.Join(b, " ")
}

func TestEvents(t *testing.T) {
	e := newEnv(t, 0)
	e.mustCreate(t, e.a, "ev-1")
	e.mustCreate(t, e.a, "ev-2")
	e.mustCreate(t, e.b, "ev-b")
	t0 := testNow.Add(time.Hour)
	e.addEvent(t, e.a, "ev-2", api.Event{Time: t0.Add(2 * time.Second), Type: api.EventWarning, Reason: "BackOff", Message: "restarting"})
	e.addEvent(t, e.a, "ev-1", api.Event{Time: t0.Add(time.Second), Type: api.EventNormal, Reason: "Started", Message: "started"})
	e.addEvent(t, e.a, "ev-1", api.Event{Time: t0.Add(3 * time.Second), Type: api.EventWarning, Reason: "OOMKilled", Message: "oom"})
	e.addEvent(t, e.b, "ev-b", api.Event{Time: t0, Type: api.EventWarning, Reason: "BackOff", Message: "other tenant"})

	reasons := []string{"BackOff", "Started", "OOMKilled"}
	for _, tc := range []struct {
		name, query, want string
	}{
		{"all, oldest first", "", "ev-1/Started/Normal ev-2/BackOff/Warning ev-1/OOMKilled/Warning"},
		{"warnings", "?type=Warning", "ev-2/BackOff/Warning ev-1/OOMKilled/Warning"},
		{"since", "?since=" + t0.Add(2*time.Second).Format(time.RFC3339), "ev-2/BackOff/Warning ev-1/OOMKilled/Warning"},
		{"follow=false", "?follow=false&type=Normal", "ev-1/Started/Normal"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := e.do(t, "GET", "/v1/events"+tc.query, e.a.token, "")
			wantStatus(t, r, http.StatusOK)
			if got := summarize(eventLines(t, string(r.body)), reasons...); got != tc.want {
				t.Errorf("GET /v1/events%s: %q, want %q (tenant b's event never)", tc.query, got, tc.want)
			}
		})
	}
	for _, q := range []string{"?type=Error", "?since=yesterday", "?follow=maybe"} {
		wantError(t, e.do(t, "GET", "/v1/events"+q, e.a.token, ""), http.StatusBadRequest, "InvalidArgument", strings.SplitN(q[1:], "=", 2)[0])
	}

	t.Run("follow", func(t *testing.T) {
		req, err := http.NewRequestWithContext(t.Context(), "GET", e.url+"/v1/events?follow=true&type=Warning", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+e.a.token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		next := func() api.EventRecord {
			t.Helper()
			if !sc.Scan() {
				t.Fatalf("stream ended: %v", sc.Err())
			}
			return eventLines(t, sc.Text())[0]
		}
		// The history first: both warnings.
		for range 2 {
			if r := next(); r.Type != api.EventWarning {
				t.Fatalf("history: %+v", r)
			}
		}
		// Then what happens: another tenant's event and a Normal one are
		// not sent, the next warning is.
		e.addEvent(t, e.b, "ev-b", api.Event{Time: t0.Add(5 * time.Second), Type: api.EventWarning, Reason: "BackOff", Message: "other tenant again"})
		e.addEvent(t, e.a, "ev-2", api.Event{Time: t0.Add(6 * time.Second), Type: api.EventNormal, Reason: "Pulled", Message: "normal"})
		e.addEvent(t, e.a, "ev-2", api.Event{Time: t0.Add(7 * time.Second), Type: api.EventWarning, Reason: "Unhealthy", Message: "probe failed"})
		if r := next(); r.Instance != "ev-2" || r.Reason != "Unhealthy" || r.UID == "" {
			t.Fatalf("followed: %+v, want ev-2's Unhealthy", r)
		}
	})
}
