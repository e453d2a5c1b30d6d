package cli

import (
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kanga-run/kanga/api"
)

// securityAPI answers usage, audit and token requests and records what
// it was asked.
func securityAPI(t *testing.T, verifyOK bool) *[]*http.Request {
	var seen []*http.Request
	t0 := time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/usage", func(w http.ResponseWriter, r *http.Request) {
		writeTestJSON(w, 200, api.UsageReport{Since: t0, Until: t0.Add(time.Hour), Items: []api.UsageItem{
			{Tenant: "acme", Instance: "web", UID: "u1", Seconds: 20, VCPUSecondsPromised: 10, VCPUSecondsUsed: 1.25, GiBSecondsPromised: 2.5, EgressBytes: 1234, Records: 2, Final: true},
		}})
	})
	mux.HandleFunc("GET /v1/audit", func(w http.ResponseWriter, r *http.Request) {
		list := api.AuditList{Items: []api.AuditRecord{{Seq: 7, Time: t0, RequestID: "r7", Principal: "abcd", PrincipalName: "ci",
			Tenant: "acme", Verb: "instances.create", Object: "instances/web", Status: 201}}}
		if r.URL.Query().Get("verify") == "true" {
			v := &api.AuditVerification{OK: verifyOK, Records: 7, Problems: []api.AuditProblem{}}
			if !verifyOK {
				v.Problems = append(v.Problems, api.AuditProblem{Seq: 3, Problem: "altered: its content does not match its hash"})
			}
			list.Verification = v
		}
		writeTestJSON(w, 200, list)
	})
	mux.HandleFunc("POST /v1/tokens", func(w http.ResponseWriter, r *http.Request) {
		writeTestJSON(w, 201, api.CreateTokenResponse{Secret: "s3cret", Token: api.Token{ID: "0123456789abcdef", Tenant: "acme", Scopes: []string{"instances:read"}}})
	})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen = append(seen, r)
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	t.Setenv("KANGA_ADDR", srv.URL)
	t.Setenv("KANGA_TOKEN", fakeToken)
	t.Setenv("KANGA_CONFIG", filepath.Join(t.TempDir(), "none.json"))
	return &seen
}

func TestUsageCommand(t *testing.T) {
	seen := securityAPI(t, true)
	r := kanga(t, "", "--tenant", "acme", "usage", "--since", "1h", "--by", "instance")
	if r.code != 0 || !strings.Contains(r.stdout, "web") || !strings.Contains(r.stdout, "10.00") || !strings.Contains(r.stdout, "1234") {
		t.Fatalf("usage = %+v", r)
	}
	req := (*seen)[len(*seen)-1]
	if q := req.URL.Query(); q.Get("tenant") != "acme" || q.Get("since") != "1h" || q.Get("by") != "instance" || req.Header.Get(api.HeaderTenant) != "" {
		t.Fatalf("usage asked %s with %s=%q: want the tenant as a parameter, not the header", req.URL, api.HeaderTenant, req.Header.Get(api.HeaderTenant))
	}
	r = kanga(t, "", "usage", "--by", "instance", "-o", "csv")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "tenant,instance,uid,final,seconds,vcpu_seconds_promised") || !strings.Contains(r.stdout, "acme,web,u1,true,20.00,10.00,1.25") {
		t.Fatalf("usage -o csv = %+v", r)
	}
	if r := kanga(t, "", "usage", "-o", "yaml"); r.code == 0 || !strings.Contains(r.stderr, "table, json or csv") {
		t.Fatalf("usage -o yaml = %+v", r)
	}
}

func TestAuditCommand(t *testing.T) {
	securityAPI(t, true)
	r := kanga(t, "", "audit", "--verify")
	if r.code != 0 || !strings.Contains(r.stdout, "instances.create") || !strings.Contains(r.stdout, "abcd (ci)") || !strings.Contains(r.stderr, "chain intact") {
		t.Fatalf("audit --verify = %+v", r)
	}
	securityAPI(t, false)
	r = kanga(t, "", "audit", "--verify")
	if r.code != 1 || !strings.Contains(r.stderr, "record 3: altered") {
		t.Fatalf("audit --verify of a tampered log = %+v; want exit 1 naming record 3", r)
	}
}

func TestTokenCreateCommand(t *testing.T) {
	securityAPI(t, true)
	r := kanga(t, "", "token", "create", "--scope", "instances:read", "--expires", "1h")
	if r.code != 0 || r.stdout != "s3cret\n" || !strings.Contains(r.stderr, "0123456789abcdef") {
		t.Fatalf("token create = %+v; want only the secret on stdout", r)
	}
}
