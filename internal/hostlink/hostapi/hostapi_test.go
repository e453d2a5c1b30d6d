package hostapi_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
	"github.com/kanga-run/kanga/internal/hostcontract"
	"github.com/kanga-run/kanga/internal/hostlink"
	"github.com/kanga-run/kanga/internal/hostlink/hostapi"
	"github.com/kanga-run/kanga/internal/hostlink/hostclient"
	"github.com/kanga-run/kanga/internal/hostlink/join"
	"github.com/kanga-run/kanga/internal/pki"
	"github.com/kanga-run/kanga/internal/tenant"
)

// fakeHost is a stand-in host for the host API's authorization tests: it
// answers stats with the UID of the instance it was asked about, and records the
// tenants whose data it was asked to remove.
type fakeHost struct {
	hostcontract.Host // nil: the tests call only what is below
	name              string

	mu      sync.Mutex
	removed []string
	volumes map[string]int // id -> key length (CreateVolume, RemoveVolume)
}

func (h *fakeHost) CreateVolume(_ context.Context, id string, _ int64, _ bool, key []byte) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.volumes == nil {
		h.volumes = map[string]int{}
	}
	h.volumes[id] = len(key)
	return nil
}

func (h *fakeHost) RemoveVolume(_ context.Context, id string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.volumes, id)
	return nil
}

func (h *fakeHost) Name() string { return h.name }

func (h *fakeHost) Stats(ctx context.Context, inst *api.Instance) (api.InstanceStats, error) {
	t, err := tenant.Name(ctx)
	if err != nil {
		return api.InstanceStats{}, err
	}
	if t != inst.Tenant {
		return api.InstanceStats{}, fmt.Errorf("stats of %s/%s asked for tenant %s", inst.Tenant, inst.Name, t)
	}
	return api.InstanceStats{CPUs: inst.UID}, nil // marks which instance was served
}

func (h *fakeHost) RemoveImage(context.Context, string) error { return nil }

func (h *fakeHost) RemoveTenant(_ context.Context, name string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.removed = append(h.removed, name)
	return nil
}

// instances finds instances by name whatever the tenant in ctx: the host
// API's own check is what keeps tenants apart here.
type instances map[string]*api.Instance

func (m instances) GetInstance(_ context.Context, name string) (*api.Instance, error) {
	if in, ok := m[name]; ok {
		return in, nil
	}
	return nil, fmt.Errorf("instance %q: %w", name, errdefs.ErrNotFound)
}

type rig struct {
	ca   *pki.CA
	host *fakeHost
	url  string
	// controlPlane, otherHost and anonymous are clients with the control
	// plane's certificate, another host's, and none.
	controlPlane, otherHost, anonymous *http.Client
	cpTLS                              *tls.Config
}

func newRig(t *testing.T) *rig {
	t.Helper()
	certPEM, keyPEM, err := pki.NewCA("test")
	if err != nil {
		t.Fatal(err)
	}
	ca, err := pki.LoadCA(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	cert := func(name, org string) tls.Certificate {
		c, err := ca.ServingCert(name, org, []string{"127.0.0.1"})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	h := &fakeHost{name: "h1"}
	insts := instances{
		"web":  {Name: "web", Tenant: "acme", UID: "u1", Status: api.InstanceStatus{Phase: api.PhaseRunning, Host: "h1"}},
		"db":   {Name: "db", Tenant: "other", UID: "u2", Status: api.InstanceStatus{Phase: api.PhaseRunning, Host: "h1"}},
		"away": {Name: "away", Tenant: "acme", UID: "u3", Status: api.InstanceStatus{Phase: api.PhaseRunning, Host: "h2"}},
	}
	ts := httptest.NewUnstartedServer(hostapi.Handler(h, insts, nil))
	ts.TLS = hostapi.TLS(&join.Credentials{Cert: cert("h1", pki.Agents), CA: ca.Cert})
	ts.StartTLS()
	t.Cleanup(ts.Close)
	client := func(certs ...tls.Certificate) (*http.Client, *tls.Config) {
		cfg := &tls.Config{Certificates: certs, RootCAs: ca.Pool(), MinVersion: tls.VersionTLS12}
		tr := &http.Transport{TLSClientConfig: cfg}
		t.Cleanup(tr.CloseIdleConnections)
		return &http.Client{Transport: tr}, cfg
	}
	r := &rig{ca: ca, host: h, url: ts.URL}
	r.controlPlane, r.cpTLS = client(cert("server", pki.Servers))
	r.otherHost, _ = client(cert("h2", pki.Agents))
	r.anonymous, _ = client()
	return r
}

func (r *rig) get(t *testing.T, hc *http.Client, path, tenantName string) (int, api.Error) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, r.url+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if tenantName != "" {
		req.Header.Set(api.HeaderTenant, tenantName)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var e api.Error
	b, _ := io.ReadAll(resp.Body)
	_ = json.Unmarshal(b, &e)
	return resp.StatusCode, e
}

// TestHostAPIAuthorization: only the control plane's certificate gets in;
// it acts for the tenant it names, and the host serves that tenant's
// instances on this host only.
func TestHostAPIAuthorization(t *testing.T) {
	r := newRig(t)
	for _, tc := range []struct {
		name   string
		client *http.Client
		path   string
		tenant string
		want   int
	}{
		{"control plane, own tenant's instance", r.controlPlane, "/v1/instances/web/stats", "acme", http.StatusOK},
		{"another host's certificate", r.otherHost, "/v1/instances/web/stats", "acme", http.StatusForbidden},
		{"another host's certificate, host route", r.otherHost, hostlink.PathPing, "", http.StatusForbidden},
		{"control plane, no tenant named", r.controlPlane, "/v1/instances/web/stats", "", http.StatusBadRequest},
		{"control plane, malformed tenant", r.controlPlane, "/v1/instances/web/stats", "Not A Tenant", http.StatusBadRequest},
		{"control plane, another tenant's instance", r.controlPlane, "/v1/instances/db/stats", "acme", http.StatusNotFound},
		{"control plane, instance of another host", r.controlPlane, "/v1/instances/away/stats", "acme", http.StatusNotFound},
		{"control plane, ping", r.controlPlane, hostlink.PathPing, "", http.StatusNoContent},
		{"control plane, metrics", r.controlPlane, hostlink.PathMetrics, "", http.StatusOK},
		{"another host's certificate, metrics", r.otherHost, hostlink.PathMetrics, "", http.StatusForbidden},
		{"control plane, no such route", r.controlPlane, "/v1/tenants", "acme", http.StatusNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, e := r.get(t, tc.client, tc.path, tc.tenant)
			if got != tc.want {
				t.Fatalf("GET %s as %q: status %d (%s: %s), want %d", tc.path, tc.tenant, got, e.Code, e.Message, tc.want)
			}
		})
	}

	// Without a client certificate the TLS handshake is refused; the
	// handler, reached without one (a listener configured otherwise),
	// answers 401.
	if resp, err := r.anonymous.Get(r.url + hostlink.PathPing); err == nil {
		resp.Body.Close()
		t.Fatalf("host API without a client certificate: status %d, want the handshake refused", resp.StatusCode)
	}
	plain := httptest.NewServer(hostapi.Handler(r.host, instances{}, nil))
	defer plain.Close()
	resp, err := http.Get(plain.URL + hostlink.PathPing)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("host API reached without TLS: status %d, want 401", resp.StatusCode)
	}
}

// TestRemoteHostNamesTheTenant: the control plane's client sends the
// tenant of its context, and what the host refuses comes back with its
// class.
func TestRemoteHostNamesTheTenant(t *testing.T) {
	r := newRig(t)
	rh := hostclient.NewRemoteHost(api.Host{Name: "h1", Address: r.url}, r.cpTLS)
	ctx := tenant.WithName(t.Context(), "acme")
	st, err := rh.Stats(ctx, &api.Instance{Name: "web"})
	if err != nil || st.CPUs != "u1" {
		t.Fatalf("stats of acme's web: %+v, %v", st, err)
	}
	if _, err := rh.Stats(ctx, &api.Instance{Name: "db"}); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("stats of another tenant's instance: %v, want NotFound", err)
	}
	if err := rh.RemoveTenant(t.Context(), "other"); err != nil {
		t.Fatal(err)
	}
	r.host.mu.Lock()
	removed := r.host.removed
	r.host.mu.Unlock()
	if len(removed) != 1 || removed[0] != "other" {
		t.Fatalf("host removed tenants %v, want [other]", removed)
	}
	// A host's certificate cannot make the same calls.
	hostTLS := r.otherHost.Transport.(*http.Transport).TLSClientConfig
	if _, err := hostclient.NewRemoteHost(api.Host{Name: "h1", Address: r.url}, hostTLS).Stats(ctx, &api.Instance{Name: "web"}); !errors.Is(err, errdefs.ErrPermissionDenied) {
		t.Fatalf("stats with a host's certificate: %v, want PermissionDenied", err)
	}
}

// The control plane makes and removes volumes on a joined host, the key
// in the body; another host's certificate cannot.
func TestRemoteHostVolumes(t *testing.T) {
	r := newRig(t)
	rh := hostclient.NewRemoteHost(api.Host{Name: "h1", Address: r.url}, r.cpTLS)
	if err := rh.CreateVolume(t.Context(), "pv-1", 1<<30, true, make([]byte, 64)); err != nil {
		t.Fatal(err)
	}
	r.host.mu.Lock()
	n, ok := r.host.volumes["pv-1"]
	r.host.mu.Unlock()
	if !ok || n != 64 {
		t.Fatalf("host has pv-1 %v with a %d-byte key, want a 64-byte one", ok, n)
	}
	hostTLS := r.otherHost.Transport.(*http.Transport).TLSClientConfig
	if err := hostclient.NewRemoteHost(api.Host{Name: "h1", Address: r.url}, hostTLS).RemoveVolume(t.Context(), "pv-1"); !errors.Is(err, errdefs.ErrPermissionDenied) {
		t.Fatalf("remove with a host's certificate: %v, want PermissionDenied", err)
	}
	if err := rh.RemoveVolume(t.Context(), "pv-1"); err != nil {
		t.Fatal(err)
	}
	r.host.mu.Lock()
	_, ok = r.host.volumes["pv-1"]
	r.host.mu.Unlock()
	if ok {
		t.Fatal("pv-1 still on the host after RemoveVolume")
	}
}

// TestHostAPIMetrics: the control plane reads the process's registry, in
// Prometheus's text format.
func TestHostAPIMetrics(t *testing.T) {
	r := newRig(t)
	resp, err := r.controlPlane.Get(r.url + hostlink.PathMetrics)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") ||
		!strings.Contains(string(b), "# TYPE go_goroutines gauge") {
		t.Fatalf("GET /metrics: %d %s\n%.300s", resp.StatusCode, resp.Header.Get("Content-Type"), b)
	}
}
