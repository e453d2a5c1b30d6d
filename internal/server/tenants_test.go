package server

import (
	"fmt"
	"net/http"
	"testing"

	"github.com/kanga-run/kanga/api"
)

// adminEnv adds an administrator's token in tenant a.
func adminEnv(t *testing.T) (*testEnv, string) {
	t.Helper()
	return adminEnvWith(t, Options{})
}

// adminEnvWith is adminEnv with opts, as newEnvWith.
func adminEnvWith(t *testing.T, opts Options) (*testEnv, string) {
	t.Helper()
	e := newEnvWith(t, 0, opts)
	admin := "admin-" + randomHex(t, 8)
	if err := e.store.PutAdminToken(t.Context(), admin, e.a.name); err != nil {
		t.Fatal(err)
	}
	return e, admin
}

func TestTenantAdministration(t *testing.T) {
	e, admin := adminEnv(t)
	name := "sandboxed-" + randomHex(t, 3)
	body := fmt.Sprintf(`{"name":%q,"allowedRuntimes":["gvisor"]}`, name)

	wantError(t, e.do(t, "POST", "/v1/tenants", e.b.token, body), http.StatusForbidden, "PermissionDenied", "administrator")
	wantError(t, e.do(t, "GET", "/v1/tenants", e.b.token, ""), http.StatusForbidden, "PermissionDenied")
	for _, tc := range []struct{ body, msg string }{
		{`{"name":"Bad_Name"}`, "name"},
		{`{"name":"x1","allowedRuntimes":["kata"]}`, `"kata"`},
		{`{"name":"x2","defaultRuntime":"runc","allowedRuntimes":["gvisor"]}`, "not among allowedRuntimes"},
	} {
		wantError(t, e.do(t, "POST", "/v1/tenants", admin, tc.body), http.StatusBadRequest, "InvalidArgument", tc.msg)
	}

	r := e.do(t, "POST", "/v1/tenants", admin, body)
	wantStatus(t, r, http.StatusCreated)
	var created api.CreateTenantResponse
	decode(t, r, &created)
	if created.Token == "" || created.Tenant.DefaultRuntime != "gvisor" {
		t.Fatalf("created %+v: want a token and default runtime gvisor (the only allowed one)", created)
	}
	wantError(t, e.do(t, "POST", "/v1/tenants", admin, body), http.StatusConflict, "AlreadyExists")

	// The new tenant's token works and sees its own policy, not others'.
	r = e.do(t, "GET", "/v1/tenants/"+name, created.Token, "")
	wantStatus(t, r, http.StatusOK)
	wantError(t, e.do(t, "GET", "/v1/tenants/"+e.a.name, created.Token, ""), http.StatusNotFound, "NotFound")

	// A tenant forced onto gvisor cannot ask for runc.
	req := `{"name":"web","spec":{"runtime":"runc","containers":[{"image":"kanga.test/busybox:latest"}]}}`
	wantError(t, e.do(t, "POST", "/v1/instances", created.Token, req), http.StatusForbidden, "PermissionDenied", "may not use runtime class runc", "gvisor")
	// Without a class it gets gvisor.
	r = e.do(t, "POST", "/v1/instances", created.Token, `{"name":"web","spec":{"containers":[{"image":"kanga.test/busybox:latest"}]}}`)
	wantStatus(t, r, http.StatusCreated)
	var inst api.Instance
	decode(t, r, &inst)
	if inst.Spec.Runtime != "gvisor" {
		t.Fatalf("runtime %q, want the tenant default gvisor", inst.Spec.Runtime)
	}

	wantError(t, e.do(t, "DELETE", "/v1/tenants/"+name, admin, ""), http.StatusConflict, "FailedPrecondition", "instances")
	// The fake host does not run gvisor, so the instance was never placed
	// and is removed at once.
	wantStatus(t, e.do(t, "DELETE", "/v1/instances/web", created.Token, ""), http.StatusNoContent)
	wantStatus(t, e.do(t, "DELETE", "/v1/tenants/"+name, admin, ""), http.StatusNoContent)
	// Its token is revoked with it.
	wantError(t, e.do(t, "GET", "/v1/instances", created.Token, ""), http.StatusUnauthorized, "Unauthenticated")
}

func TestUnschedulableRuntimeStaysPending(t *testing.T) {
	e := newEnv(t, 0)
	r := e.do(t, "POST", "/v1/instances", e.a.token, `{"name":"secret","spec":{"runtime":"enclave","containers":[{"image":"kanga.test/busybox:latest"}]}}`)
	wantStatus(t, r, http.StatusCreated)
	var inst api.Instance
	decode(t, r, &inst)
	if inst.Status.Phase != api.PhasePending || inst.Status.Host != "" || inst.Status.Reason != "Unschedulable" ||
		inst.Status.Message != "0/1 hosts available: 1 runtime class enclave not offered. Runtime class enclave needs host capability sgx." {
		t.Fatalf("enclave instance: %+v", inst.Status)
	}

	r = e.do(t, "GET", "/v1/runtimes", e.a.token, "")
	wantStatus(t, r, http.StatusOK)
	var list api.RuntimeClassList
	decode(t, r, &list)
	hosts := map[string]int{}
	for _, c := range list.Items {
		hosts[c.Name] = len(c.Hosts)
		if !c.Allowed {
			t.Errorf("class %s not allowed for an unrestricted tenant", c.Name)
		}
	}
	if hosts["runc"] != 1 || hosts["enclave"] != 0 || len(list.Items) != 4 {
		t.Fatalf("runtimes: %+v", list.Items)
	}
}

func TestSpecsNoHostCanHold(t *testing.T) {
	e := newEnv(t, 0)
	for _, tc := range []struct{ res, msg string }{
		{`{"cpu":"8"}`, "more than any host has (the largest has 2 cores)"},
		{`{"memory":"64Gi"}`, "spec.resources.memory 64Gi is more than any host has"},
		{`{"cpu":"0.5","cpuPolicy":"dedicated"}`, "whole number of cores"},
	} {
		body := `{"spec":{"resources":` + tc.res + `,"containers":[{"image":"kanga.test/busybox:latest"}]}}`
		wantError(t, e.do(t, "POST", "/v1/instances", e.a.token, body), http.StatusBadRequest, "InvalidArgument", tc.msg)
	}
	if names := e.storedNames(t, e.a); len(names) != 0 {
		t.Fatalf("rejected specs left %v", names)
	}
	r := e.do(t, "GET", "/v1/types", e.a.token, "")
	wantStatus(t, r, http.StatusOK)
	var types api.InstanceTypeList
	decode(t, r, &types)
	if len(types.Items) < 2 || types.Items[0].Name != "k1.default" || types.Items[1].Name != "k1.small" {
		t.Fatalf("types: %+v", types.Items)
	}
}

func TestStatsAndSLA(t *testing.T) {
	e := newEnv(t, 0)
	e.mustCreate(t, e.a, "web")
	r := e.do(t, "GET", "/v1/instances/web/stats", e.a.token, "")
	wantStatus(t, r, http.StatusOK)
	var st api.InstanceStats
	decode(t, r, &st)
	if st.CPUUsageNanos != 5e8 || st.Pids != 2 {
		t.Fatalf("stats %+v", st)
	}
	r = e.do(t, "GET", "/v1/instances/web/sla", e.a.token, "")
	wantStatus(t, r, http.StatusOK)
	var rep api.SLAReport
	decode(t, r, &rep)
	if rep.Instance != "web" || len(rep.Items) != 1 || !rep.Items[0].Kept {
		t.Fatalf("sla %+v", rep)
	}
	// Another tenant's instance is not found, and the host is not asked.
	wantError(t, e.do(t, "GET", "/v1/instances/web/stats", e.b.token, ""), http.StatusNotFound, "NotFound")
	wantError(t, e.do(t, "GET", "/v1/instances/web/sla", e.b.token, ""), http.StatusNotFound, "NotFound")
}

// An administrator acts in another tenant with the Kanga-Tenant header;
// nobody else can, and a missing tenant is named.
func TestAdminActsInTenant(t *testing.T) {
	e, admin := adminEnv(t)
	name := "ns-" + randomHex(t, 3)
	wantStatus(t, e.do(t, "POST", "/v1/tenants", admin, fmt.Sprintf(`{"name":%q}`, name)), http.StatusCreated)
	as := []string{api.HeaderTenant, name}

	web := `{"name":"web","spec":{"containers":[{"image":"kanga.test/busybox:latest"}]}}`
	r := e.do(t, "POST", "/v1/instances", admin, web, as...)
	wantStatus(t, r, http.StatusCreated)
	var inst api.Instance
	decode(t, r, &inst)
	if inst.Tenant != name {
		t.Fatalf("instance created in tenant %q, want %q", inst.Tenant, name)
	}
	count := func(token string, hdr ...string) int {
		t.Helper()
		r := e.do(t, "GET", "/v1/instances", token, "", hdr...)
		wantStatus(t, r, http.StatusOK)
		var l api.InstanceList
		decode(t, r, &l)
		return len(l.Items)
	}
	if n := count(admin, as...); n != 1 {
		t.Errorf("admin in %s sees %d instances, want 1", name, n)
	}
	if n := count(admin); n != 0 {
		t.Errorf("admin in its own tenant sees %d instances, want 0", n)
	}
	// Naming one's own tenant is harmless; naming another is refused.
	if n := count(e.b.token, api.HeaderTenant, e.b.name); n != 0 {
		t.Errorf("tenant b sees %d instances, want 0", n)
	}
	wantError(t, e.do(t, "GET", "/v1/instances", e.b.token, "", as...), http.StatusForbidden, "PermissionDenied", api.HeaderTenant, "administrator")
	wantError(t, e.do(t, "GET", "/v1/instances", admin, "", api.HeaderTenant, "nope-"+randomHex(t, 3)), http.StatusNotFound, "NotFound", "does not exist", "POST /v1/tenants")
	wantError(t, e.do(t, "GET", "/v1/instances", admin, "", api.HeaderTenant, "Bad_Name"), http.StatusBadRequest, "InvalidArgument", api.HeaderTenant)
}

func TestTenantSchedulingPolicy(t *testing.T) {
	e, admin := adminEnv(t)
	wantError(t, e.do(t, "POST", "/v1/tenants", admin, `{"name":"x3","schedulingPolicy":"random"}`),
		http.StatusBadRequest, "InvalidArgument", "schedulingPolicy")
	name := "spreader-" + randomHex(t, 3)
	r := e.do(t, "POST", "/v1/tenants", admin, fmt.Sprintf(`{"name":%q,"schedulingPolicy":"spread"}`, name))
	wantStatus(t, r, http.StatusCreated)
	var created api.CreateTenantResponse
	decode(t, r, &created)
	if created.Tenant.SchedulingPolicy != "spread" {
		t.Fatalf("created tenant %+v, want scheduling policy spread", created.Tenant)
	}
	for _, tc := range []struct{ body, want string }{
		{`{"name":"default-policy","spec":{"containers":[{"image":"kanga.test/busybox:latest"}]}}`, "spread"},
		{`{"name":"own-policy","spec":{"schedulingPolicy":"binpack","containers":[{"image":"kanga.test/busybox:latest"}]}}`, "binpack"},
	} {
		r := e.do(t, "POST", "/v1/instances", created.Token, tc.body)
		wantStatus(t, r, http.StatusCreated)
		var inst api.Instance
		decode(t, r, &inst)
		if inst.Spec.SchedulingPolicy != tc.want || inst.Status.Host != "fake-host" {
			t.Errorf("instance %s: policy %q on host %q, want %s placed on fake-host", inst.Name, inst.Spec.SchedulingPolicy, inst.Status.Host, tc.want)
		}
	}
}

// TestRuntimesListReadyHosts: the hosts of a class are the Ready hosts of
// the registry offering it; a host without a lease is not one.
func TestRuntimesListReadyHosts(t *testing.T) {
	e := newEnv(t, 0)
	if err := e.store.RegisterHost(t.Context(), &api.Host{Name: "down-host", RuntimeClasses: []string{"runc", "gvisor"},
		Capacity: api.HostCapacity{CPUs: 4, MemoryBytes: 8 << 30}}); err != nil {
		t.Fatal(err)
	}
	r := e.do(t, "GET", "/v1/runtimes", e.a.token, "")
	wantStatus(t, r, http.StatusOK)
	var list api.RuntimeClassList
	decode(t, r, &list)
	got := map[string][]string{}
	for _, c := range list.Items {
		got[c.Name] = c.Hosts
	}
	if fmt.Sprint(got["runc"]) != "[fake-host]" || len(got["gvisor"]) != 0 {
		t.Fatalf("hosts per class: %v; want runc on fake-host only, gvisor nowhere", got)
	}
}
