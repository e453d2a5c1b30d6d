package virtualnode

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/client"
	"github.com/kanga-run/kanga/errdefs"
)

func TestTenantName(t *testing.T) {
	long := strings.Repeat("n", 63)
	for _, tc := range []struct {
		prefix, ns, want string
	}{
		{"k8s-", "default", "k8s-default"},
		{"", "team-a", "team-a"},
		{"k8s-", long, "k8s-" + long[:50] + "-"},
	} {
		got := TenantName(tc.prefix, tc.ns)
		if len(got) > maxTenant || !strings.HasPrefix(got, tc.want) {
			t.Errorf("TenantName(%q, %q) = %q, want %q... within %d characters", tc.prefix, tc.ns, got, tc.want, maxTenant)
		}
	}
	// Long names that share their beginning stay apart.
	if a, b := TenantName("k8s-", long+"a"), TenantName("k8s-", long+"b"); a == b {
		t.Errorf("TenantName collides: %q", a)
	}
}

// fakeTenantKanga records, per request, the tenant it acts in (the
// Kanga-Tenant header) and answers tenant creation as an administrator's
// server would, or refuses it when admin is false.
type fakeTenantKanga struct {
	admin bool

	mu      sync.Mutex
	created []string
	actedIn []string // tenant of each POST /v1/instances
}

func (f *fakeTenantKanga) client(t *testing.T) *client.Client {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		f.mu.Lock()
		defer f.mu.Unlock()
		switch {
		case r.Method == "POST" && r.URL.Path == "/v1/tenants":
			if !f.admin {
				w.WriteHeader(http.StatusForbidden)
				json.NewEncoder(w).Encode(api.ErrorResponse{Error: api.Error{Code: "PermissionDenied", Message: "managing tenants needs an administrator's token"}})
				return
			}
			var req api.CreateTenantRequest
			json.NewDecoder(r.Body).Decode(&req)
			for _, n := range f.created {
				if n == req.Name {
					w.WriteHeader(http.StatusConflict)
					json.NewEncoder(w).Encode(api.ErrorResponse{Error: api.Error{Code: "AlreadyExists", Message: "tenant exists"}})
					return
				}
			}
			f.created = append(f.created, req.Name)
			w.WriteHeader(http.StatusCreated)
			json.NewEncoder(w).Encode(api.CreateTenantResponse{Tenant: api.Tenant{Name: req.Name}, Token: "t"})
		case r.Method == "POST" && r.URL.Path == "/v1/instances":
			f.actedIn = append(f.actedIn, r.Header.Get(api.HeaderTenant))
			var req api.CreateInstanceRequest
			json.NewDecoder(r.Body).Decode(&req)
			w.WriteHeader(http.StatusCreated)
			json.NewEncoder(w).Encode(api.Instance{Name: req.Name, Spec: req.Spec})
		default:
			w.WriteHeader(http.StatusNotFound)
			json.NewEncoder(w).Encode(api.ErrorResponse{Error: api.Error{Code: "NotFound", Message: "no route"}})
		}
	}))
	t.Cleanup(srv.Close)
	c, err := client.New(srv.URL, "token")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestProviderTenantPerNamespace(t *testing.T) {
	ctx := context.Background()
	f := &fakeTenantKanga{admin: true}
	p := NewProvider(f.client(t), "vn", "192.0.2.1", lister(t), slog.New(slog.DiscardHandler), TenantPerNamespace("k8s-"))
	for _, ns := range []string{"a", "b", "a"} {
		pod := testPod()
		pod.Namespace = ns
		pod.Name = "p-" + ns + "-" + string(rune('0'+len(f.actedIn)))
		if err := p.CreatePod(ctx, pod); err != nil {
			t.Fatalf("CreatePod in %s: %v", ns, err)
		}
	}
	if got := strings.Join(f.created, " "); got != "k8s-a k8s-b" {
		t.Errorf("tenants created %q, want each namespace's once: k8s-a k8s-b", got)
	}
	if got := strings.Join(f.actedIn, " "); got != "k8s-a k8s-b k8s-a" {
		t.Errorf("instances created in tenants %q, want k8s-a k8s-b k8s-a", got)
	}

	// Without it, every pod runs in the token's tenant: no header.
	f2 := &fakeTenantKanga{admin: true}
	p2 := NewProvider(f2.client(t), "vn", "192.0.2.1", lister(t), slog.New(slog.DiscardHandler))
	if err := p2.CreatePod(ctx, testPod()); err != nil {
		t.Fatal(err)
	}
	if len(f2.created) != 0 || len(f2.actedIn) != 1 || f2.actedIn[0] != "" {
		t.Errorf("token's tenant: created tenants %v, acted in %q", f2.created, f2.actedIn)
	}

	// A token that may not create tenants gets an error that says what
	// to use instead.
	f3 := &fakeTenantKanga{admin: false}
	p3 := NewProvider(f3.client(t), "vn", "192.0.2.1", lister(t), slog.New(slog.DiscardHandler), TenantPerNamespace("k8s-"))
	err := p3.CreatePod(ctx, testPod())
	if !errors.Is(err, errdefs.ErrPermissionDenied) || !strings.Contains(err.Error(), "administrator") {
		t.Errorf("CreatePod with a tenant token: err = %v, want PermissionDenied naming the administrator's token", err)
	}
}
