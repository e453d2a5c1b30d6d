package server

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/internal/model"
	"github.com/kanga-run/kanga/internal/tenant"
)

// Finding 5 of issue 12: an instance of 101 containers was accepted, and a
// 1 MB environment variable was accepted and then failed at exec.
func TestInstanceCaps(t *testing.T) {
	e := newEnv(t, 0)
	var ctrs []string
	for i := range 101 {
		ctrs = append(ctrs, fmt.Sprintf(`{"name":"c%d","image":%q}`, i, imgBusybox))
	}
	body := `{"name":"many","spec":{"containers":[` + strings.Join(ctrs, ",") + `]}}`
	wantError(t, e.do(t, "POST", "/v1/instances", e.a.token, body), http.StatusBadRequest, "InvalidArgument",
		"spec.containers has 101 containers, at most 20")

	big := strings.Repeat("x", 1000000) // 1 MB, within the API's body limit
	body = fmt.Sprintf(`{"name":"env","spec":{"containers":[{"image":%q,"env":[{"name":"A","value":"1"},{"name":"B","value":"2"},{"name":"C","value":"3"},{"name":"D","value":%q}]}]}}`, imgBusybox, big)
	wantError(t, e.do(t, "POST", "/v1/instances", e.a.token, body), http.StatusBadRequest, "InvalidArgument",
		"spec.containers[0].env[3].value: 1000000 bytes, at most 32768")
	if names := e.storedNames(t, e.a); len(names) != 0 {
		t.Fatalf("refused specs left %v", names)
	}
}

// An instance that names no resources gets the default type's limits,
// and the stored spec says where they came from; a tenant's own default
// type wins over the platform's.
func TestDefaultInstanceType(t *testing.T) {
	e, admin := adminEnv(t)
	in := e.mustCreate(t, e.a, "plain")
	want := api.Resources{CPULimit: "1", Memory: "256Mi", Pids: 1024, LogSize: "10Mi", LogFiles: 2}
	if in.Spec.Resources != want || in.Spec.InstanceType != model.DefaultInstanceType {
		t.Fatalf("instance without resources: %+v type %q; want %+v from %s", in.Spec.Resources, in.Spec.InstanceType, want, model.DefaultInstanceType)
	}

	name := "typed-" + randomHex(t, 3)
	wantError(t, e.do(t, "POST", "/v1/tenants", admin, fmt.Sprintf(`{"name":%q,"defaultInstanceType":"k9.huge"}`, name)),
		http.StatusBadRequest, "InvalidArgument", "defaultInstanceType")
	r := e.do(t, "POST", "/v1/tenants", admin, fmt.Sprintf(`{"name":%q,"defaultInstanceType":"k1.medium"}`, name))
	wantStatus(t, r, http.StatusCreated)
	var created api.CreateTenantResponse
	decode(t, r, &created)
	r = e.do(t, "POST", "/v1/instances", created.Token, createBody("web"))
	wantStatus(t, r, http.StatusCreated)
	decode(t, r, &in)
	if in.Spec.InstanceType != "k1.medium" || in.Spec.Resources.CPU != "1" || in.Spec.Resources.Memory != "1Gi" {
		t.Fatalf("tenant default type k1.medium not applied: %+v", in.Spec)
	}

	// An operator may turn the default off: instances then get no limits.
	off := newEnvWith(t, 0, Options{DefaultType: model.NoInstanceType})
	in = off.mustCreate(t, off.a, "bare")
	if in.Spec.Resources != (api.Resources{}) || in.Spec.InstanceType != "" {
		t.Fatalf("with --default-type none: %+v type %q", in.Spec.Resources, in.Spec.InstanceType)
	}
}

// newQuotaTenant creates a tenant with quota through the API and returns
// its token.
func newQuotaTenant(t *testing.T, e *testEnv, admin, quota string) (string, string) {
	t.Helper()
	name := "q-" + randomHex(t, 4)
	body := fmt.Sprintf(`{"name":%q}`, name)
	if quota != "" {
		body = fmt.Sprintf(`{"name":%q,"quota":%s}`, name, quota)
	}
	r := e.do(t, "POST", "/v1/tenants", admin, body)
	wantStatus(t, r, http.StatusCreated)
	var created api.CreateTenantResponse
	decode(t, r, &created)
	return name, created.Token
}

// 30 creates racing a quota of 10 through the API: exactly 10 are created,
// 20 refused with a 403 that names the quota and what to do.
func TestQuotaRaceAPI(t *testing.T) {
	e, admin := adminEnv(t)
	name, token := newQuotaTenant(t, e, admin, `{"instances":10}`)
	const n = 30
	results := make([]response, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			results[i] = e.do(t, "POST", "/v1/instances", token, createBody(fmt.Sprintf("r%02d", i)))
		}()
	}
	close(start)
	wg.Wait()
	created, refused := 0, 0
	for _, r := range results {
		switch r.status {
		case http.StatusCreated:
			created++
		case http.StatusForbidden:
			refused++
			wantError(t, r, http.StatusForbidden, "PermissionDenied",
				fmt.Sprintf("tenant %s: quota instances 10/10 in use", name),
				fmt.Sprintf("an administrator can raise it with kanga tenant quota %s --instances N", name))
		default:
			t.Errorf("create: %s", r)
		}
	}
	if created != 10 || refused != 20 {
		t.Fatalf("%d created and %d refused of %d racing creates under a quota of 10; want 10 and 20", created, refused, n)
	}

	// The tenant sees its use against its quota; another tenant does not.
	r := e.do(t, "GET", "/v1/tenants/"+name+"/quota", token, "")
	wantStatus(t, r, http.StatusOK)
	var q api.TenantQuota
	decode(t, r, &q)
	if q.Used.Instances != 10 || q.Limits.Instances != 10 || q.Limits.MilliCPU != api.Unlimited {
		t.Fatalf("quota status %+v", q)
	}
	wantError(t, e.do(t, "GET", "/v1/tenants/"+name+"/quota", e.b.token, ""), http.StatusNotFound, "NotFound")

	// Only an administrator raises it; then one more fits.
	wantError(t, e.do(t, "PUT", "/v1/tenants/"+name+"/quota", token, `{"instances":100}`), http.StatusForbidden, "PermissionDenied")
	wantError(t, e.do(t, "PUT", "/v1/tenants/"+name+"/quota", admin, `{"instances":-1}`), http.StatusBadRequest, "InvalidArgument", "quota.instances")
	wantError(t, e.do(t, "PUT", "/v1/tenants/"+name+"/quota", admin, `{"cpu":"200%"}`), http.StatusBadRequest, "InvalidArgument", "quota.cpu")
	r = e.do(t, "PUT", "/v1/tenants/"+name+"/quota", admin, `{"instances":11}`)
	wantStatus(t, r, http.StatusOK)
	wantStatus(t, e.do(t, "POST", "/v1/instances", token, createBody("one-more")), http.StatusCreated)
	wantError(t, e.do(t, "POST", "/v1/instances", token, createBody("too-many")), http.StatusForbidden, "PermissionDenied", "quota instances 11/11 in use")
	// Removing an instance frees its place (the host's part of a removal
	// is the record's deletion, as the agent does after its teardown).
	if err := e.store.DeleteInstance(tenant.WithName(t.Context(), name), "one-more"); err != nil {
		t.Fatal(err)
	}
	wantStatus(t, e.do(t, "POST", "/v1/instances", token, createBody("after-rm")), http.StatusCreated)
}

// The platform's default quota for new tenants (half the pool's CPU and
// memory) keeps one tenant from reserving the whole pool: its next
// reservation is refused with a 403, and another tenant's smallest
// instance is still admitted. The fake host has 2 cores and 4 GiB.
func TestDefaultQuotaKeepsPoolShared(t *testing.T) {
	dq, err := model.ParseQuota(model.DefaultQuota)
	if err != nil {
		t.Fatal(err)
	}
	e := newEnvWith(t, 0, Options{DefaultQuota: dq})
	admin := "admin-" + randomHex(t, 8)
	if err := e.store.PutAdminToken(t.Context(), admin, e.a.name); err != nil {
		t.Fatal(err)
	}
	greedy, greedyToken := newQuotaTenant(t, e, admin, "")
	_, otherToken := newQuotaTenant(t, e, admin, "")
	spec := func(name, cpu, mem string) string {
		return fmt.Sprintf(`{"name":%q,"spec":{"resources":{"cpu":%q,"memory":%q},"containers":[{"image":%q}]}}`, name, cpu, mem, imgBusybox)
	}
	wantStatus(t, e.do(t, "POST", "/v1/instances", greedyToken, spec("half", "1", "1Gi")), http.StatusCreated)
	wantError(t, e.do(t, "POST", "/v1/instances", greedyToken, spec("more", "0.5", "256Mi")), http.StatusForbidden, "PermissionDenied",
		fmt.Sprintf("tenant %s: quota cpu 1/1 in use, this instance asks for 0.5", greedy), "kanga tenant quota "+greedy+" --cpu N")
	wantError(t, e.do(t, "POST", "/v1/instances", greedyToken, spec("mem", "", "2Gi")), http.StatusForbidden, "PermissionDenied",
		"quota memory 1Gi/2Gi in use, this instance asks for 2Gi")
	wantStatus(t, e.do(t, "POST", "/v1/instances", otherToken, spec("small", "100m", "64Mi")), http.StatusCreated)

	r := e.do(t, "GET", "/v1/tenants/"+greedy, admin, "")
	wantStatus(t, r, http.StatusOK)
	var got api.Tenant
	decode(t, r, &got)
	b, _ := json.Marshal(got.Quota)
	if string(b) != `{"instances":100,"cpu":"50%","memory":"50%","ports":20}` {
		t.Fatalf("new tenant's quota %s, want the default", b)
	}
}
