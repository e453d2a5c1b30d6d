package server

import (
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/client"
	"github.com/kanga-run/kanga/internal/store"
)

// newTenantWithToken creates a stored tenant through the API and returns
// its first token.
func newTenantWithToken(t *testing.T, e *testEnv, admin string) (string, string) {
	t.Helper()
	name := "sec-" + randomHex(t, 3)
	r := e.do(t, "POST", "/v1/tenants", admin, fmt.Sprintf(`{"name":%q}`, name))
	wantStatus(t, r, http.StatusCreated)
	var created api.CreateTenantResponse
	decode(t, r, &created)
	return name, created.Token
}

func createToken(t *testing.T, e *testEnv, token, body string, hdr ...string) api.CreateTokenResponse {
	t.Helper()
	r := e.do(t, "POST", "/v1/tokens", token, body, hdr...)
	wantStatus(t, r, http.StatusCreated)
	var out api.CreateTokenResponse
	decode(t, r, &out)
	return out
}

func TestTokenScopes(t *testing.T) {
	e, admin := adminEnv(t)
	name, first := newTenantWithToken(t, e, admin)

	ro := createToken(t, e, first, `{"name":"ro","scopes":["read-only"]}`)
	if !slices.Equal(ro.Token.Scopes, []string{"configs:read", "images:read", "instances:read", "secrets:read", "tokens:read", "usage:read", "volumes:read"}) || ro.Token.Tenant != name {
		t.Fatalf("read-only token = %+v", ro.Token)
	}
	wantStatus(t, e.do(t, "GET", "/v1/instances", ro.Secret, ""), http.StatusOK)
	wantError(t, e.do(t, "POST", "/v1/instances", ro.Secret, createBody("web")), http.StatusForbidden, "PermissionDenied", "instances:write", ro.Token.ID)
	wantError(t, e.do(t, "POST", "/v1/tokens", ro.Secret, `{}`), http.StatusForbidden, "PermissionDenied", "tokens:write")
	wantError(t, e.do(t, "POST", "/v1/images/pull", ro.Secret, `{"ref":"x"}`), http.StatusForbidden, "PermissionDenied", "images:write")
	wantError(t, e.do(t, "DELETE", "/v1/tokens/"+ro.Token.ID, ro.Secret, ""), http.StatusForbidden, "PermissionDenied", "tokens:write")

	w := createToken(t, e, first, `{"name":"deploy","scopes":["instances:read","instances:write","tokens:write"]}`)
	// No escalation: a token gives only scopes it holds.
	for _, body := range []string{`{"scopes":["exec"]}`, `{"scopes":["all"]}`, `{"scopes":["tenants:admin"]}`, `{"scopes":["*"]}`} {
		wantError(t, e.do(t, "POST", "/v1/tokens", w.Secret, body), http.StatusForbidden, "PermissionDenied", "cannot give it")
	}
	wantError(t, e.do(t, "POST", "/v1/tokens", first, `{"scopes":["tenants:admin"]}`), http.StatusForbidden, "PermissionDenied", "tenants:admin")
	wantError(t, e.do(t, "POST", "/v1/tokens", first, `{"scopes":["instances:delete"]}`), http.StatusBadRequest, "InvalidArgument", `"instances:delete" is not a scope`)
	wantError(t, e.do(t, "POST", "/v1/tokens", first, `{"expires":"soon"}`), http.StatusBadRequest, "InvalidArgument", "expires")
	narrow := createToken(t, e, w.Secret, `{"scopes":["instances:read"],"expires":"1h"}`)
	if narrow.Token.CreatedBy != w.Token.ID || narrow.Token.ExpiresAt == nil || !narrow.Token.ExpiresAt.Equal(testNow.Add(time.Hour)) {
		t.Fatalf("narrow token = %+v; want created by %s, expiring in 1h", narrow.Token, w.Token.ID)
	}
	// A token made by an expiring token expires no later than it.
	wantError(t, e.do(t, "POST", "/v1/tokens", narrow.Secret, `{}`), http.StatusForbidden, "PermissionDenied", "tokens:write")
	exp := createToken(t, e, first, `{"expires":"2h"}`)
	child := createToken(t, e, exp.Secret, `{}`)
	if child.Token.ExpiresAt == nil || !child.Token.ExpiresAt.Equal(*exp.Token.ExpiresAt) {
		t.Fatalf("child of an expiring token = %+v; want its parent's expiry %v", child.Token, exp.Token.ExpiresAt)
	}
	wantError(t, e.do(t, "POST", "/v1/tokens", exp.Secret, `{"expires":"3h"}`), http.StatusBadRequest, "InvalidArgument", "cannot outlive")

	// Expired: 401 naming the expiry.
	past := testNow.Add(-time.Minute)
	if _, err := e.store.CreateToken(t.Context(), "expired-"+name, store.NewTokenInfo{Tenant: name, Scopes: []string{api.ScopeAll}, CreatedAt: past, ExpiresAt: &past}); err != nil {
		t.Fatal(err)
	}
	wantError(t, e.do(t, "GET", "/v1/instances", "expired-"+name, ""), http.StatusUnauthorized, "Unauthenticated", "expired at")

	// Listing shows IDs, never secrets; another tenant's token is not found.
	r := e.do(t, "GET", "/v1/tokens", first, "")
	wantStatus(t, r, http.StatusOK)
	if strings.Contains(string(r.body), ro.Secret) || !strings.Contains(string(r.body), ro.Token.ID) {
		t.Fatalf("token list %s: want IDs and no secrets", r.body)
	}
	wantError(t, e.do(t, "DELETE", "/v1/tokens/"+ro.Token.ID, e.a.token, ""), http.StatusNotFound, "NotFound")
	wantError(t, e.do(t, "GET", "/v1/tokens?all=true", first, ""), http.StatusForbidden, "PermissionDenied")
	wantStatus(t, e.do(t, "GET", "/v1/tokens?all=true", admin, ""), http.StatusOK)

	// Revoked: 401.
	wantStatus(t, e.do(t, "DELETE", "/v1/tokens/"+ro.Token.ID, w.Secret, ""), http.StatusOK)
	wantError(t, e.do(t, "GET", "/v1/instances", ro.Secret, ""), http.StatusUnauthorized, "Unauthenticated", "revoked")

	// Administrators' routes name the administrator.
	wantError(t, e.do(t, "GET", "/v1/hosts", first, ""), http.StatusForbidden, "PermissionDenied", "hosts:read", "administrator")
	wantError(t, e.do(t, "GET", "/v1/audit", first, ""), http.StatusForbidden, "PermissionDenied", "audit:read")
}

// Deleting a tenant revokes every token of it, not only its first.
func TestDeleteTenantRevokesEveryToken(t *testing.T) {
	e, admin := adminEnv(t)
	name, first := newTenantWithToken(t, e, admin)
	second := createToken(t, e, first, `{"name":"second"}`)
	other, otherFirst := newTenantWithToken(t, e, admin)
	third := createToken(t, e, otherFirst, `{"name":"other-tenant"}`)
	byAdmin := e.do(t, "POST", "/v1/tokens", admin, `{"name":"for-tenant"}`, api.HeaderTenant, name)
	wantStatus(t, byAdmin, http.StatusCreated)
	var forTenant api.CreateTokenResponse
	decode(t, byAdmin, &forTenant)
	if forTenant.Token.Tenant != name {
		t.Fatalf("admin's token for %s = %+v", name, forTenant.Token)
	}
	wantStatus(t, e.do(t, "DELETE", "/v1/tenants/"+name, admin, ""), http.StatusNoContent)
	for _, tok := range []string{first, second.Secret, forTenant.Secret} {
		wantError(t, e.do(t, "GET", "/v1/instances", tok, ""), http.StatusUnauthorized, "Unauthenticated")
	}
	wantStatus(t, e.do(t, "GET", "/v1/instances", third.Secret, ""), http.StatusOK) // tenant other's
	_ = other
	// A re-created tenant of the same name starts without them.
	_ = e.do(t, "POST", "/v1/tenants", admin, fmt.Sprintf(`{"name":%q}`, name))
	wantError(t, e.do(t, "GET", "/v1/instances", second.Secret, ""), http.StatusUnauthorized, "Unauthenticated")
}

// rawClient reaches the shared store's etcd directly, as an attacker with
// the database would.
func rawClient(t *testing.T) *clientv3.Client {
	t.Helper()
	testStore(t)
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{"unix://" + filepath.Join(storeDir, "etcd.sock")}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestAuditLog(t *testing.T) {
	e, admin := adminEnv(t)
	e.host.exitCode = 0
	// A create: the record names the token's ID, the tenant, the object
	// and the request ID the answer carried.
	r := e.do(t, "POST", "/v1/instances", e.a.token, createBody("audited"))
	wantStatus(t, r, http.StatusCreated)
	reqID := r.header.Get(api.HeaderRequestID)
	if len(reqID) != 32 {
		t.Fatalf("%s = %q, want a request ID", api.HeaderRequestID, reqID)
	}
	bad := e.do(t, "POST", "/v1/instances", e.a.token, `{"name":"Bad_Name","spec":{"containers":[{"image":"x"}]}}`)
	wantStatus(t, bad, http.StatusBadRequest)
	denied := e.do(t, "POST", "/v1/tenants", e.a.token, `{"name":"nope"}`)
	wantStatus(t, denied, http.StatusForbidden)
	unauth := e.do(t, "DELETE", "/v1/instances/audited", "wrong-token", "")
	wantStatus(t, unauth, http.StatusUnauthorized)
	// An exec with a secret in its environment and arguments.
	e.setPhase(t, e.a, "audited", api.PhaseRunning)
	if _, err := e.client(e.a).Exec(t.Context(), "audited", client.ExecOptions{Cmd: []string{"sh", "-c", "echo hunter2-arg"}, Env: []string{"SECRET=hunter2-env"}}); err != nil {
		t.Fatal(err)
	}
	// A token and a tenant created: their secrets never reach the log.
	tn := e.do(t, "POST", "/v1/tenants", admin, fmt.Sprintf(`{"name":"aud-%s"}`, randomHex(t, 3)))
	wantStatus(t, tn, http.StatusCreated)
	var created api.CreateTenantResponse
	decode(t, tn, &created)
	tok := createToken(t, e, created.Token, `{"name":"audit-test"}`)

	wantError(t, e.do(t, "GET", "/v1/audit", e.a.token, ""), http.StatusForbidden, "PermissionDenied", "audit:read")
	r = e.do(t, "GET", "/v1/audit?since=1h&verify=true&limit=100000", admin, "")
	wantStatus(t, r, http.StatusOK)
	var list api.AuditList
	decode(t, r, &list)
	if list.Verification == nil || !list.Verification.OK {
		t.Fatalf("verification = %+v, want OK", list.Verification)
	}
	for _, secret := range []string{e.a.token, admin, tok.Secret, created.Token, "hunter2", "wrong-token"} {
		if strings.Contains(string(r.body), secret) {
			t.Fatalf("the audit log contains the secret %q", secret)
		}
	}
	find := func(id string) api.AuditRecord {
		t.Helper()
		for _, rec := range list.Items {
			if rec.RequestID == id {
				return rec
			}
		}
		t.Fatalf("no audit record for request %s in %d records", id, len(list.Items))
		return api.AuditRecord{}
	}
	p, _ := e.store.LookupPrincipal(t.Context(), e.a.token)
	rec := find(reqID)
	if rec.Verb != "instances.create" || rec.Object != "instances/audited" || rec.Status != 201 || rec.Principal != p.TokenID || rec.Tenant != e.a.name {
		t.Fatalf("create record = %+v", rec)
	}
	if rec := find(bad.header.Get(api.HeaderRequestID)); rec.Status != 400 {
		t.Fatalf("failed create record = %+v", rec)
	}
	if rec := find(denied.header.Get(api.HeaderRequestID)); rec.Status != 403 || rec.Verb != "tenants.create" {
		t.Fatalf("denied record = %+v", rec)
	}
	if rec := find(unauth.header.Get(api.HeaderRequestID)); rec.Status != 401 || rec.Principal != "" || rec.Verb != "instances.delete" {
		t.Fatalf("unauthenticated record = %+v", rec)
	}
	var execRec *api.AuditRecord
	for i, rec := range list.Items {
		if rec.Verb == "instances.exec" && rec.Object == "instances/audited" && rec.Tenant == e.a.name {
			execRec = &list.Items[i]
		}
	}
	if execRec == nil || execRec.Status != http.StatusSwitchingProtocols || !strings.Contains(execRec.Detail, `program="sh"`) {
		t.Fatalf("exec record = %+v", execRec)
	}
	if e.host.lastExecRequestID() != execRec.RequestID {
		t.Fatalf("the host saw request ID %q, the audit log %q", e.host.lastExecRequestID(), execRec.RequestID)
	}
	// GETs are not recorded.
	for _, rec := range list.Items {
		if rec.Method == "GET" {
			t.Fatalf("a GET was recorded: %+v", rec)
		}
	}

	// A flipped byte in the stored log is reported, naming the record;
	// restored, the chain verifies again.
	raw := rawClient(t)
	key := fmt.Sprintf("/kanga/audit/log/%020d", rec.Seq)
	got, err := raw.Get(t.Context(), key)
	if err != nil || len(got.Kvs) == 0 {
		t.Fatalf("reading %s: %v", key, err)
	}
	orig := got.Kvs[0].Value
	flipped := []byte(strings.Replace(string(orig), `"status":201`, `"status":200`, 1))
	if string(flipped) == string(orig) {
		t.Fatalf("record %s has no status 201 to alter: %s", key, orig)
	}
	if _, err := raw.Put(t.Context(), key, string(flipped)); err != nil {
		t.Fatal(err)
	}
	defer raw.Put(t.Context(), key, string(orig))
	r = e.do(t, "GET", "/v1/audit?verify=true&limit=1", admin, "")
	wantStatus(t, r, http.StatusOK)
	decode(t, r, &list)
	if list.Verification == nil || list.Verification.OK || len(list.Verification.Problems) == 0 || list.Verification.Problems[0].Seq != rec.Seq {
		b, _ := json.Marshal(list.Verification)
		t.Fatalf("verification after tampering with record %d = %s; want that record reported", rec.Seq, b)
	}
	if _, err := raw.Put(t.Context(), key, string(orig)); err != nil {
		t.Fatal(err)
	}
	r = e.do(t, "GET", "/v1/audit?verify=true&limit=1", admin, "")
	decode(t, r, &list)
	if !list.Verification.OK {
		t.Fatalf("verification after restoring = %+v", list.Verification)
	}
}

func TestUsageAccess(t *testing.T) {
	e, admin := adminEnv(t)
	inst := e.mustCreate(t, e.a, "metered")
	placed := e.stored(t, e.a, "metered")
	if placed.Status.Host == "" {
		t.Skip("the fake host did not get the instance placed")
	}
	start := testNow.Add(-30 * time.Second)
	rec := api.UsageRecord{Tenant: e.a.name, Instance: "metered", UID: inst.UID, Seq: 0, Start: start, End: start.Add(20 * time.Second),
		CPUMilli: 500, MemoryBytes: 256 << 20, Final: true}
	for range 20 {
		rec.Points = append(rec.Points, api.UsagePoint{1000, 1e8, 128 << 20, 10})
	}
	if refused, err := e.store.PutUsage(t.Context(), placed.Status.Host, []api.UsageRecord{rec}); err != nil || len(refused) > 0 {
		t.Fatalf("PutUsage = %v, %v", refused, err)
	}
	r := e.do(t, "GET", "/v1/usage?by=instance", e.a.token, "")
	wantStatus(t, r, http.StatusOK)
	var rep api.UsageReport
	decode(t, r, &rep)
	if len(rep.Items) != 1 || rep.Items[0].VCPUSecondsPromised != 10 || rep.Items[0].Seconds != 20 || !rep.Items[0].Final || rep.Items[0].UID != inst.UID {
		t.Fatalf("usage = %+v; want 20 s, 10 vCPU-s promised, final", rep.Items)
	}
	wantError(t, e.do(t, "GET", "/v1/usage?tenant="+e.a.name, e.b.token, ""), http.StatusForbidden, "PermissionDenied", e.b.name)
	r = e.do(t, "GET", "/v1/usage", e.b.token, "")
	decode(t, r, &rep)
	if len(rep.Items) != 0 {
		t.Fatalf("tenant b sees %+v", rep.Items)
	}
	r = e.do(t, "GET", "/v1/usage?tenant="+e.a.name, admin, "")
	decode(t, r, &rep)
	if len(rep.Items) != 1 || rep.Items[0].Tenant != e.a.name {
		t.Fatalf("admin's view of a = %+v", rep.Items)
	}
	for _, q := range []string{"since=yesterday", "by=host", "since=1h&until=2h", "tenant=Bad_Name"} {
		wantStatus(t, e.do(t, "GET", "/v1/usage?"+q, admin, ""), http.StatusBadRequest)
	}
}

// Every route needs a scope a token can be given (or none): a route of a
// new resource needs its scopes in api.TenantScopes or api.AdminScopes.
func TestRouteScopes(t *testing.T) {
	want := map[string]string{
		"GET /v1/instances":              api.ScopeInstancesRead,
		"GET /v1/instances/{name}/logs":  api.ScopeInstancesRead,
		"GET /v1/instances/{name}/top":   api.ScopeInstancesRead,
		"POST /v1/instances":             api.ScopeInstancesWrite,
		"DELETE /v1/instances/{name}":    api.ScopeInstancesWrite,
		"POST /v1/instances/{name}/exec": api.ScopeExec,
		"POST /v1/images/pull":           api.ScopeImagesWrite,
		"GET /v1/images/{ref}":           api.ScopeImagesRead,
		"GET /v1/tenants":                api.ScopeTenantsAdmin,
		"GET /v1/tenants/{name}":         "",
		"DELETE /v1/tenants/{name}":      api.ScopeTenantsAdmin,
		"POST /v1/hosts/{name}/drain":    api.ScopeHostsWrite,
		"GET /v1/join-tokens":            api.ScopeHostsRead,
		"GET /v1/audit":                  api.ScopeAuditRead,
		"GET /v1/usage":                  api.ScopeUsageRead,
		"DELETE /v1/tokens/{id}":         api.ScopeTokensWrite,
		"GET /v1/version":                "",
	}
	for _, r := range Routes {
		if r.Public {
			continue
		}
		p := r.Method + " " + r.Pattern
		got := requiredScope(p)
		if w, ok := want[p]; ok && got != w {
			t.Errorf("%s needs %q, want %q", p, got, w)
		}
		if got != "" && !knownScope(got) {
			t.Errorf("%s needs scope %q, which no token can be given: add it to api.TenantScopes or api.AdminScopes (and the README)", p, got)
		}
		// An administrator's token holds every scope; a tenant's full
		// token none of the administrator's.
		if !holds([]string{api.ScopeEverything}, got) || holds([]string{api.ScopeAll}, got) == isAdminScope(got) && got != "" {
			t.Errorf("%s: scope %q held wrongly by * or all", p, got)
		}
	}
}
