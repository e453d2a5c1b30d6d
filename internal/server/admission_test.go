package server

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
)

// fakeHostList is a HostLister over a fixed list, counting its reads.
type fakeHostList struct {
	hosts []api.Host
	err   error
	reads int
}

func (f *fakeHostList) ListHosts(context.Context) ([]api.Host, error) {
	f.reads++
	return f.hosts, f.err
}

func readyHost(name string, cpus, slots int) api.Host {
	return api.Host{Name: name, Capacity: api.HostCapacity{CPUs: cpus, StartSlots: slots}, Status: api.HostStatus{Phase: api.HostReady}}
}

func TestAdmissionCountsInFlight(t *testing.T) {
	ctx := context.Background()
	now := time.Unix(1000, 0)
	hosts := &fakeHostList{hosts: []api.Host{
		readyHost("a", 2, 3),
		readyHost("b", 4, 0), // an older agent: twice its cores
		{Name: "down", Capacity: api.HostCapacity{CPUs: 8, StartSlots: 16}, Status: api.HostStatus{Phase: api.HostNotReady}},
		func() api.Host { h := readyHost("cordoned", 8, 16); h.Cordoned = true; return h }(),
	}}
	a := &admission{max: -1, hosts: hosts, now: func() time.Time { return now }}
	const limit = 3 + 8
	var releases []func()
	for i := range limit {
		rel, err := a.acquire(ctx)
		if err != nil {
			t.Fatalf("create %d of %d refused: %v", i+1, limit, err)
		}
		releases = append(releases, rel)
	}
	_, err := a.acquire(ctx)
	if !errors.Is(err, errdefs.ErrTooManyRequests) {
		t.Fatalf("create past the bound: err = %v, want TooManyRequests", err)
	}
	for _, want := range []string{"11 of at most 11", "the start slots of 2 ready hosts"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("refusal %q does not say %q", err, want)
		}
	}
	var ra interface{ RetryAfter() time.Duration }
	if !errors.As(err, &ra) || ra.RetryAfter() <= 0 {
		t.Errorf("refusal %v carries no retry pause", err)
	}
	if hosts.reads != 1 {
		t.Errorf("hosts read %d times within a second, want once", hosts.reads)
	}
	// A slot given back twice is given back once.
	releases[0]()
	releases[0]()
	if got := a.inFlight(); got != limit-1 {
		t.Fatalf("in flight after a release = %d, want %d", got, limit-1)
	}
	if _, err := a.acquire(ctx); err != nil {
		t.Fatalf("create after a release refused: %v", err)
	}
	if _, err := a.acquire(ctx); !errors.Is(err, errdefs.ErrTooManyRequests) {
		t.Fatalf("second create after one release: err = %v, want TooManyRequests", err)
	}
	for _, rel := range releases[1:] {
		rel()
	}
	if got := a.inFlight(); got != 1 {
		t.Errorf("in flight = %d, want 1", got)
	}

	// With no host ready for a moment, the last bound stands.
	now = now.Add(2 * time.Second)
	hosts.hosts = hosts.hosts[2:3]
	if got, _ := a.bound(ctx); got != limit {
		t.Errorf("bound with no ready host = %d, want the last one, %d", got, limit)
	}
	// A failed read keeps it too.
	now = now.Add(2 * time.Second)
	hosts.err = errors.New("etcd unreachable")
	if got, _ := a.bound(ctx); got != limit {
		t.Errorf("bound after a failed read = %d, want %d", got, limit)
	}
}

func TestAdmissionFixedAndOff(t *testing.T) {
	ctx := context.Background()
	hosts := &fakeHostList{hosts: []api.Host{readyHost("a", 2, 64)}}
	fixed := &admission{max: 2, hosts: hosts, now: time.Now}
	for range 2 {
		if _, err := fixed.acquire(ctx); err != nil {
			t.Fatal(err)
		}
	}
	_, err := fixed.acquire(ctx)
	if !errors.Is(err, errdefs.ErrTooManyRequests) || !strings.Contains(err.Error(), "--max-inflight-creates") {
		t.Errorf("err = %v, want TooManyRequests naming --max-inflight-creates", err)
	}
	off := &admission{max: 0, hosts: hosts, now: time.Now}
	for range 100 {
		if _, err := off.acquire(ctx); err != nil {
			t.Fatalf("admission off refused a create: %v", err)
		}
	}
	if hosts.reads != 0 {
		t.Errorf("hosts read %d times with a fixed bound or none", hosts.reads)
	}
	// No host ever seen ready: no bound rather than refusing everything
	// (the scheduler keeps such creates Pending until a host is ready).
	none := &admission{max: -1, hosts: &fakeHostList{}, now: time.Now}
	if _, err := none.acquire(ctx); err != nil {
		t.Errorf("create with no host known refused: %v", err)
	}
}

func TestInFlightDone(t *testing.T) {
	const uid = "u1"
	for _, tc := range []struct {
		name string
		inst api.Instance
		done bool
	}{
		{"pending", api.Instance{UID: uid, Status: api.InstanceStatus{Phase: api.PhasePending}}, false},
		{"placed", api.Instance{UID: uid, Status: api.InstanceStatus{Phase: api.PhasePending, Host: "a"}}, false},
		{"hosts not ready", api.Instance{UID: uid, Status: api.InstanceStatus{Phase: api.PhasePending, Reason: "HostNotReady"}}, false},
		{"creating", api.Instance{UID: uid, Status: api.InstanceStatus{Phase: api.PhaseCreating}}, false},
		{"running", api.Instance{UID: uid, Status: api.InstanceStatus{Phase: api.PhaseRunning}}, true},
		{"failed", api.Instance{UID: uid, Status: api.InstanceStatus{Phase: api.PhaseFailed}}, true},
		{"unschedulable", api.Instance{UID: uid, Status: api.InstanceStatus{Phase: api.PhasePending, Reason: "Unschedulable"}}, true},
		{"deleting", api.Instance{UID: uid, DeletionRequested: true, Status: api.InstanceStatus{Phase: api.PhasePending}}, true},
		{"re-created", api.Instance{UID: "u2", Status: api.InstanceStatus{Phase: api.PhasePending}}, true},
	} {
		if got := inFlightDone(uid)(&tc.inst); got != tc.done {
			t.Errorf("%s: done = %v, want %v", tc.name, got, tc.done)
		}
	}
}

// The refusal reaches the client as 429 with its class and a Retry-After
// in whole seconds.
func TestTooManyRequestsAtTheEdge(t *testing.T) {
	s := New(nil, Options{})
	for _, tc := range []struct {
		err   error
		after string
	}{
		{busyError{error: wrapTooMany("creates in flight"), after: 1500 * time.Millisecond}, "2"},
		{busyError{error: wrapTooMany("creates in flight"), after: 0}, "1"},
		{wrapTooMany("no pause said"), "1"},
	} {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodPost, "/v1/instances", nil)
		s.writeError(rec, req, tc.err)
		if rec.Code != http.StatusTooManyRequests {
			t.Errorf("%v: status %d, want 429", tc.err, rec.Code)
		}
		if got := rec.Header().Get("Retry-After"); got != tc.after {
			t.Errorf("%v: Retry-After = %q, want %q", tc.err, got, tc.after)
		}
		if !strings.Contains(rec.Body.String(), `"TooManyRequests"`) {
			t.Errorf("%v: body %s lacks the class", tc.err, rec.Body)
		}
	}
	// Other errors get no Retry-After.
	rec := httptest.NewRecorder()
	s.writeError(rec, httptest.NewRequest(http.MethodGet, "/", nil), errdefs.ErrNotFound)
	if got := rec.Header().Get("Retry-After"); got != "" {
		t.Errorf("404 has Retry-After %q", got)
	}
}

func wrapTooMany(msg string) error { return errors.Join(errors.New(msg), errdefs.ErrTooManyRequests) }
