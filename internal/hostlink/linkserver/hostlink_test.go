package linkserver

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
	"github.com/kanga-run/kanga/internal/hostcontract"
	"github.com/kanga-run/kanga/internal/hostlink/agentside"
	"github.com/kanga-run/kanga/internal/hostlink/join"
	"github.com/kanga-run/kanga/internal/pki"
	"github.com/kanga-run/kanga/internal/store"
	"github.com/kanga-run/kanga/internal/tenant"
)

// fakeStore is an in-memory stand-in for *store.Store, enough for the
// link's authorization tests (the real store is exercised by the
// integration tests).
type fakeStore struct {
	insts  []api.Instance
	purges map[string][]store.Purge // by host
	acked  []string                 // host/tenant/image@generation
	quotas map[string]*api.Quota
}

func (f *fakeStore) TenantQuota(_ context.Context, name string) (*api.Quota, error) {
	return f.quotas[name], nil
}

func (f *fakeStore) InstanceFiles(context.Context, string, string, string) (hostcontract.InstanceFiles, error) {
	return hostcontract.InstanceFiles{}, errdefs.ErrNotFound
}

func (f *fakeStore) RegisterHost(context.Context, *api.Host) error                { return nil }
func (f *fakeStore) SetHostImages(context.Context, string, []api.HostImage) error { return nil }
func (f *fakeStore) KeepHostAlive(ctx context.Context, _ string, _ time.Duration) error {
	<-ctx.Done()
	return ctx.Err()
}
func (f *fakeStore) ListAllInstances(context.Context) ([]api.Instance, int64, error) {
	return f.insts, 7, nil
}
func (f *fakeStore) WatchAllInstances(ctx context.Context, _ int64) <-chan store.InstanceEvent {
	ch := make(chan store.InstanceEvent)
	go func() { <-ctx.Done(); close(ch) }()
	return ch
}
func (f *fakeStore) InstancesAt(context.Context, int64) ([]api.Instance, error) {
	return f.insts, nil
}
func (f *fakeStore) GetInstance(ctx context.Context, name string) (*api.Instance, error) {
	t, _ := tenant.Name(ctx)
	for i := range f.insts {
		if f.insts[i].Name == name && f.insts[i].Tenant == t {
			in := f.insts[i]
			return &in, nil
		}
	}
	return nil, errdefs.ErrNotFound
}
func (f *fakeStore) UpdateInstance(ctx context.Context, name string, fn func(*api.Instance) error) (*api.Instance, error) {
	in, err := f.GetInstance(ctx, name)
	if err != nil {
		return nil, err
	}
	if err := fn(in); err != nil {
		return nil, err
	}
	return in, nil
}
func (f *fakeStore) DeleteInstance(context.Context, string) error { return nil }
func (f *fakeStore) Purges(_ context.Context, host string) ([]store.Purge, error) {
	return f.purges[host], nil
}
func (f *fakeStore) AckPurge(_ context.Context, host string, p store.Purge) error {
	f.acked = append(f.acked, fmt.Sprintf("%s/%s/%s@%d", host, p.Tenant, p.Image, p.Generation))
	return nil
}
func (f *fakeStore) PutUsage(context.Context, string, []api.UsageRecord) ([]store.UsageRefusal, error) {
	return nil, nil
}

type cluster struct {
	ca    *pki.CA
	token pki.Token
	url   string
}

func newCluster(t *testing.T, st Store) *cluster {
	t.Helper()
	certPEM, keyPEM, err := pki.NewCA("test")
	if err != nil {
		t.Fatal(err)
	}
	ca, err := pki.LoadCA(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{Store: st, CA: ca, Token: pki.NewToken(ca)}
	serving, err := ca.ServingCert("server", pki.Servers, []string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewUnstartedServer(s.Handler())
	ts.TLS = s.TLSConfig(serving)
	ts.StartTLS()
	t.Cleanup(ts.Close)
	return &cluster{ca: ca, token: s.Token, url: ts.URL}
}

func (c *cluster) join(t *testing.T, name string) *join.Credentials {
	t.Helper()
	creds, err := join.Join(context.Background(), c.url, c.token.String(), t.TempDir(), name, []string{"127.0.0.1"})
	if err != nil {
		t.Fatalf("join %s: %v", name, err)
	}
	return creds
}

func TestJoinAndList(t *testing.T) {
	st := &fakeStore{insts: []api.Instance{
		{Name: "a", Tenant: "default", Status: api.InstanceStatus{Host: "h1"}},
		{Name: "b", Tenant: "default", Status: api.InstanceStatus{Host: "h2"}},
	}}
	c := newCluster(t, st)
	creds := c.join(t, "h1")
	if cn, org := creds.Cert.Leaf.Subject.CommonName, creds.Cert.Leaf.Subject.Organization; cn != "h1" || len(org) != 1 || org[0] != pki.Agents {
		t.Fatalf("certificate subject = %q %v, want h1 [%s]", cn, org, pki.Agents)
	}
	l := agentside.NewLink(c.url, "h1", creds, nil)
	insts, rev, err := l.ListAllInstances(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(insts) != 1 || insts[0].Name != "a" || rev != 7 {
		t.Fatalf("list = %+v rev %d, want only instance a at 7", insts, rev)
	}
	// Another host's instance is not found through h1's link.
	_, err = l.GetInstance(tenant.WithName(context.Background(), "default"), "b")
	if !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("get another host's instance: %v, want NotFound", err)
	}
}

// TestPurgesOverTheLink: an agent reads its own host's purges and
// acknowledges them; another host's certificate reads none of them.
func TestPurgesOverTheLink(t *testing.T) {
	st := &fakeStore{purges: map[string][]store.Purge{
		"h1": {{Tenant: "b", Generation: 7}, {Tenant: "c", Image: "kanga.test/x:v1", Generation: 9}},
		"h2": {{Tenant: "z", Generation: 8}},
	}}
	c := newCluster(t, st)
	l := agentside.NewLink(c.url, "h1", c.join(t, "h1"), nil)
	ps, err := l.Purges(t.Context())
	if err != nil || len(ps) != 2 || ps[0].Tenant != "b" || ps[1].Image != "kanga.test/x:v1" {
		t.Fatalf("Purges = %+v, %v; want h1's two", ps, err)
	}
	if err := l.AckPurge(t.Context(), ps[1]); err != nil {
		t.Fatal(err)
	}
	if len(st.acked) != 1 || st.acked[0] != "h1/c/kanga.test/x:v1@9" {
		t.Fatalf("acked = %v, want h1's ack of c's image", st.acked)
	}
	h2 := c.join(t, "h2")
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: h2.ClientTLS()}}
	resp, err := hc.Get(c.url + "/hostlink/v1/hosts/h1/purges")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("h2 reading h1's purges: %d, want 403", resp.StatusCode)
	}
}

// The agent reads the quotas that cap its tenants' cgroups; a tenant
// without a quota, or unknown, reads as none.
func TestTenantQuota(t *testing.T) {
	ten := int64(10)
	st := &fakeStore{quotas: map[string]*api.Quota{"a": {Instances: &ten, CPU: "50%"}}}
	c := newCluster(t, st)
	l := agentside.NewLink(c.url, "h1", c.join(t, "h1"), nil)
	q, err := l.TenantQuota(context.Background(), "a")
	if err != nil || q == nil || q.CPU != "50%" || *q.Instances != 10 {
		t.Fatalf("TenantQuota(a) = %+v, %v", q, err)
	}
	if q, err := l.TenantQuota(context.Background(), "nobody"); err != nil || q != nil {
		t.Fatalf("TenantQuota(nobody) = %+v, %v; want none", q, err)
	}
}

func TestRefusals(t *testing.T) {
	st := &fakeStore{insts: []api.Instance{{Name: "a", Tenant: "default", Status: api.InstanceStatus{Host: "h1"}}}}
	c := newCluster(t, st)
	h2 := c.join(t, "h2")
	anon := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: c.ca.Pool()}}}

	tests := []struct {
		name string
		hc   *http.Client
		path string
		want int
	}{
		{"no client certificate", anon, "/hostlink/v1/hosts/h1/instances", http.StatusUnauthorized},
		{"no client certificate, heartbeat", anon, "/hostlink/v1/hosts/h1/heartbeat", http.StatusUnauthorized},
		{"another host's certificate", &http.Client{Transport: &http.Transport{TLSClientConfig: h2.ClientTLS()}}, "/hostlink/v1/hosts/h1/instances", http.StatusForbidden},
		{"another host's certificate, instance", &http.Client{Transport: &http.Transport{TLSClientConfig: h2.ClientTLS()}}, "/hostlink/v1/hosts/h1/instances/default/a", http.StatusForbidden},
		{"wrong method", anon, "/hostlink/v1/join", http.StatusMethodNotAllowed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := tt.hc.Get(c.url + tt.path)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tt.want {
				t.Fatalf("status %d, want %d", resp.StatusCode, tt.want)
			}
			if tt.want == http.StatusMethodNotAllowed && resp.Header.Get("Allow") != "POST" {
				t.Fatalf("Allow %q, want POST", resp.Header.Get("Allow"))
			}
		})
	}

	t.Run("wrong join token", func(t *testing.T) {
		bad := pki.Token{CAHash: c.token.CAHash, Secret: "not-the-secret"}
		_, err := join.Join(context.Background(), c.url, bad.String(), t.TempDir(), "h3", nil)
		if !errors.Is(err, errdefs.ErrUnauthenticated) {
			t.Fatalf("join with a wrong secret: %v, want Unauthenticated", err)
		}
	})
	t.Run("token of another CA", func(t *testing.T) {
		other, _, _ := pki.NewCA("other")
		oc, _ := pki.ParseCert(other)
		bad := pki.Token{CAHash: pki.CertHash(oc), Secret: c.token.Secret}
		_, err := join.Join(context.Background(), c.url, bad.String(), t.TempDir(), "h3", nil)
		if err == nil || !strings.Contains(err.Error(), "CA") {
			t.Fatalf("join pinning another CA: %v, want a refusal naming the CA", err)
		}
	})
	t.Run("certificate of another CA", func(t *testing.T) {
		// A certificate for h1 from a CA the server does not trust.
		other := newCluster(t, st)
		creds := other.join(t, "h1")
		hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{Certificates: []tls.Certificate{creds.Cert}, RootCAs: c.ca.Pool()}}}
		resp, err := hc.Get(c.url + "/hostlink/v1/hosts/h1/instances")
		if err == nil {
			resp.Body.Close()
			t.Fatalf("request with a foreign certificate got status %d, want the TLS handshake refused", resp.StatusCode)
		}
	})
	t.Run("saved credentials of another host", func(t *testing.T) {
		dir := t.TempDir()
		if _, err := join.Join(context.Background(), c.url, c.token.String(), dir, "h4", nil); err != nil {
			t.Fatal(err)
		}
		_, err := join.Join(context.Background(), c.url, c.token.String(), dir, "h5", nil)
		if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), filepath.Base(join.CertFile)) {
			t.Fatalf("reusing h4's data dir as h5: %v, want InvalidArgument naming %s", err, join.CertFile)
		}
	})
}

// volumeKeyStore is the fake store with one encrypted volume, pv-1 on h1,
// answering as store.HostView.VolumeKey does.
type volumeKeyStore struct{ fakeStore }

func (f *volumeKeyStore) VolumeKeyFor(_ context.Context, host, id string) ([]byte, error) {
	switch {
	case id != "pv-1":
		return nil, fmt.Errorf("volume %s: %w", id, errdefs.ErrNotFound)
	case host != "h1":
		return nil, fmt.Errorf("volume %s is on host h1, not on %s: %w", id, host, errdefs.ErrPermissionDenied)
	}
	return []byte("key-of-pv-1"), nil
}

// An agent gets the key of an encrypted volume on its own host; another
// host's agent gets it neither as itself nor by naming the volume's host.
func TestVolumeKeyOverTheLink(t *testing.T) {
	c := newCluster(t, &volumeKeyStore{})
	h1 := agentside.NewLink(c.url, "h1", c.join(t, "h1"), nil)
	if k, err := h1.VolumeKey(t.Context(), "pv-1"); err != nil || string(k) != "key-of-pv-1" {
		t.Fatalf("h1's key = %q, %v", k, err)
	}
	h2creds := c.join(t, "h2")
	h2 := agentside.NewLink(c.url, "h2", h2creds, nil)
	if _, err := h2.VolumeKey(t.Context(), "pv-1"); !errors.Is(err, errdefs.ErrPermissionDenied) {
		t.Fatalf("h2 asking for h1's volume key: %v, want PermissionDenied", err)
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: h2creds.ClientTLS()}}
	resp, err := hc.Get(c.url + "/hostlink/v1/hosts/h1/volumes/pv-1/key")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("h2 posing as h1: %d, want 403", resp.StatusCode)
	}
}
