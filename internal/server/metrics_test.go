package server

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/kanga-run/kanga/api"
)

func TestRouteLabel(t *testing.T) {
	for _, tc := range []struct{ pattern, want string }{
		{"GET /v1/instances/{name}", "/v1/instances/{name}"},
		{"POST /v1/instances", "/v1/instances"},
		{"GET /metrics", "/metrics"},
		{"/", "unmatched"},
		{"", "unmatched"},
	} {
		if got := routeLabel(tc.pattern); got != tc.want {
			t.Errorf("routeLabel(%q) = %q, want %q", tc.pattern, got, tc.want)
		}
	}
}

// TestRequestMetrics checks that requests count under their route's
// pattern, not their path, refusals included.
func TestRequestMetrics(t *testing.T) {
	e := newEnv(t, 0)
	for _, tc := range []struct {
		method, path, token string
		route, code         string
	}{
		{"GET", "/v1/instances/nope-" + randomHex(t, 4), e.a.token, "/v1/instances/{name}", "404"},
		{"GET", "/v1/instances", "", "/v1/instances", "401"},
		{"GET", "/v1/instances", e.a.token, "/v1/instances", "200"},
		{"GET", "/no/such/route", e.a.token, "unmatched", "404"},
	} {
		c := requestsTotal.WithLabelValues(tc.method, tc.route, tc.code)
		before := testutil.ToFloat64(c)
		hBefore := testutil.CollectAndCount(requestDuration)
		req, err := http.NewRequest(tc.method, e.url+tc.path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if tc.token != "" {
			req.Header.Set("Authorization", "Bearer "+tc.token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if got := testutil.ToFloat64(c) - before; got != 1 {
			t.Errorf("%s %s: kanga_api_requests_total{route=%q,code=%s} moved by %v, want 1", tc.method, tc.path, tc.route, tc.code, got)
		}
		if n := testutil.CollectAndCount(requestDuration); n < hBefore {
			t.Errorf("%s %s: request duration series dropped from %d to %d", tc.method, tc.path, hBefore, n)
		}
	}
	// The path never becomes a label value.
	if n := testutil.CollectAndCount(requestsTotal); n > len(Routes)*8 {
		t.Errorf("kanga_api_requests_total has %d series: labels are not bounded by the routes", n)
	}
}

// TestMetricsScope: /metrics names every tenant's instances, so only an
// administrator's metrics:read reads it.
func TestMetricsScope(t *testing.T) {
	e, admin := adminEnv(t)
	wantError(t, e.do(t, "GET", "/metrics", e.a.token, ""), http.StatusForbidden, "PermissionDenied", "metrics:read", "administrator")
	wantError(t, e.do(t, "GET", "/metrics", "", ""), http.StatusUnauthorized, "Unauthenticated")
	r := e.do(t, "GET", "/metrics", admin, "")
	wantStatus(t, r, http.StatusOK)
	for _, want := range []string{"# TYPE kanga_api_requests_total counter", "# TYPE kanga_scheduler_placements_total counter", "go_goroutines"} {
		if !strings.Contains(string(r.body), want) {
			t.Errorf("GET /metrics lacks %q", want)
		}
	}
	// Kanga's own series follow Prometheus's conventions (names, units,
	// _total on counters), what promtool check metrics checks; the
	// embedded etcd's, registered in the same process, are etcd's.
	problems, err := testutil.GatherAndLint(e.server.gatherer)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		if strings.HasPrefix(p.Metric, "kanga_") {
			t.Errorf("lint of /metrics: %s: %s", p.Metric, p.Text)
		}
	}
	// A token given only metrics:read reads it (a Prometheus's token).
	name, first := newTenantWithToken(t, e, admin)
	wantError(t, e.do(t, "GET", "/metrics", first, ""), http.StatusForbidden, "PermissionDenied", "metrics:read")
	tok := createToken(t, e, admin, `{"name":"prom","scopes":["metrics:read"]}`, api.HeaderTenant, name)
	wantStatus(t, e.do(t, "GET", "/metrics", tok.Secret, ""), http.StatusOK)
	wantError(t, e.do(t, "GET", "/v1/instances", tok.Secret, ""), http.StatusForbidden, "PermissionDenied", "instances:read")
}

type hostsOnly struct {
	HostStore
	hosts []api.Host
	err   error
}

func (f hostsOnly) ListHosts(context.Context) ([]api.Host, error) { return f.hosts, f.err }

func TestHostsCollector(t *testing.T) {
	hosts := []api.Host{
		{Name: "h1", Status: api.HostStatus{Phase: api.HostReady}},
		{Name: "h2", Status: api.HostStatus{Phase: api.HostNotReady}, Cordoned: true},
	}
	want := `
# HELP kanga_host_cordoned 1 while the host is cordoned (gets no new instances), else 0.
# TYPE kanga_host_cordoned gauge
kanga_host_cordoned{host="h1"} 0
kanga_host_cordoned{host="h2"} 1
# HELP kanga_host_ready 1 while the host holds its lease (Ready), else 0.
# TYPE kanga_host_ready gauge
kanga_host_ready{host="h1"} 1
kanga_host_ready{host="h2"} 0
`
	if err := testutil.CollectAndCompare(hostsCollector{hostsOnly{hosts: hosts}}, strings.NewReader(want)); err != nil {
		t.Error(err)
	}
	// A store that fails makes the scrape fail, rather than report no hosts.
	if _, err := testutil.CollectAndLint(hostsCollector{hostsOnly{err: errors.New("etcd down")}}); err == nil {
		t.Error("a failing store: collecting succeeded")
	}
}
