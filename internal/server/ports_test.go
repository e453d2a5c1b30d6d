package server

import (
	"context"
	"encoding/json"
	"fmt"
	mrand "math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
	"github.com/kanga-run/kanga/internal/model"
)

// The fake host is a PortChecker: a process listens on 127.0.0.1:9300,
// and 1.2.3.4 is not one of its addresses.
const fakeListenerPort = 9300

func (h *fakeHost) CheckPorts(_ context.Context, ports []api.PortMapping) error {
	for i, p := range ports {
		if p.HostIP == "1.2.3.4" {
			return fmt.Errorf("spec.ports[%d].hostIP 1.2.3.4 is not an address of host fake-host: %w", i, errdefs.ErrInvalidArgument)
		}
		if model.PortsConflict(p, api.PortMapping{HostIP: "127.0.0.1", HostPort: fakeListenerPort, Protocol: "tcp"}) {
			return model.PortInUse(fmt.Sprintf("spec.ports[%d]", i), p, "a process on host fake-host")
		}
	}
	return nil
}

// testPort returns a host port no other test of this run uses: every
// test's instances pile up on the one fake host, where ports conflict.
func testPort() int {
	portMu.Lock()
	defer portMu.Unlock()
	for {
		p := 20000 + mrand.IntN(40000)
		if !portsUsed[p] && p != fakeListenerPort {
			portsUsed[p] = true
			return p
		}
	}
}

var (
	portMu    sync.Mutex
	portsUsed = map[int]bool{}
)

func portBody(name, ip string, port int) string {
	return fmt.Sprintf(`{"name":%q,"spec":{"containers":[{"name":"main","image":%q}],"ports":[{"hostIP":%q,"hostPort":%d,"containerPort":80}]}}`,
		name, imgBusybox, ip, port)
}

// TestPortPolicy: published ports outside the operator's policy, on the
// platform's own ports or on what the host holds are refused before
// anything is stored, each naming the field.
func TestPortPolicy(t *testing.T) {
	ports := model.DefaultPortPolicy()
	ports.Reserve("the Kanga API", 7420)
	e := newEnvWith(t, 0, Options{Ports: ports})
	for _, tc := range []struct {
		name, ip string
		port     int
		status   int
		code     string
		msgs     []string
	}{
		{"the API's port", "127.0.0.1", 7420, 400, "InvalidArgument", []string{"spec.ports[0].hostPort 7420", "reserved", "the Kanga API"}},
		{"the API's port on another address", "", 7420, 400, "InvalidArgument", []string{"spec.ports[0].hostPort 7420"}},
		{"privileged", "127.0.0.1", 80, 400, "InvalidArgument", []string{"spec.ports[0].hostPort 80", "privileged"}},
		{"not the host's address", "1.2.3.4", testPort(), 400, "InvalidArgument", []string{"spec.ports[0].hostIP 1.2.3.4"}},
		{"IPv6", "::1", testPort(), 400, "InvalidArgument", []string{"spec.ports[0].hostIP ::1", "IPv4"}},
		{"a host process's port", "127.0.0.1", fakeListenerPort, 409, "Conflict", []string{"spec.ports[0]", "127.0.0.1:9300/tcp", "a process on host fake-host"}},
		{"a host process's port, every address", "", fakeListenerPort, 409, "Conflict", []string{"9300/tcp"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			name := "p-" + randomHex(t, 3)
			wantError(t, e.do(t, "POST", "/v1/instances", e.a.token, portBody(name, tc.ip, tc.port)), tc.status, tc.code, tc.msgs...)
			if _, err := e.store.GetInstance(e.a.ctx, name); err == nil {
				t.Error("the refused instance was stored")
			}
		})
	}
}

// TestPortConflicts: a port another instance holds on the host is a 409
// naming the holder, or only saying it is another tenant's; racing
// creates for one port end with exactly one winner.
func TestPortConflicts(t *testing.T) {
	e := newEnv(t, 0)
	port := testPort()
	wantStatus(t, e.do(t, "POST", "/v1/instances", e.a.token, portBody("web", "127.0.0.1", port)), http.StatusCreated)
	wantError(t, e.do(t, "POST", "/v1/instances", e.a.token, portBody("web2", "127.0.0.1", port)),
		http.StatusConflict, "Conflict", "spec.ports[0]", fmt.Sprintf("127.0.0.1:%d/tcp", port), `instance "web"`)
	// Every address overlaps 127.0.0.1.
	wantError(t, e.do(t, "POST", "/v1/instances", e.a.token, portBody("web3", "", port)),
		http.StatusConflict, "Conflict", `instance "web"`)
	r := e.do(t, "POST", "/v1/instances", e.b.token, portBody("web", "127.0.0.1", port))
	wantError(t, r, http.StatusConflict, "Conflict", "an instance of another tenant")
	if strings.Contains(string(r.body), e.a.name) {
		t.Errorf("the refusal names the other tenant: %s", r.body)
	}
	// Another protocol, or another address, is another port.
	wantStatus(t, e.do(t, "POST", "/v1/instances", e.b.token,
		fmt.Sprintf(`{"name":"dns","spec":{"containers":[{"image":%q}],"ports":[{"hostIP":"127.0.0.1","hostPort":%d,"containerPort":53,"protocol":"udp"}]}}`, imgBusybox, port)),
		http.StatusCreated)

	race := testPort()
	const n = 10
	statuses := make([]int, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tn := e.a
			if i%2 == 1 {
				tn = e.b
			}
			statuses[i] = e.do(t, "POST", "/v1/instances", tn.token, portBody(fmt.Sprintf("race-%d", i), "", race)).status
		}()
	}
	wg.Wait()
	won, lost := 0, 0
	for _, s := range statuses {
		switch s {
		case http.StatusCreated:
			won++
		case http.StatusConflict:
			lost++
		}
	}
	if won != 1 || lost != n-1 {
		t.Fatalf("%d racing creates for port %d: %d created, %d conflicts (%v); want 1 and %d", n, race, won, lost, statuses, n-1)
	}
}

// TestTenantSecurity: an administrator narrows a tenant's ports and allows
// it capabilities and Unconfined, only within the operator's bounds;
// containers then get what the policy allows and a 403 naming the field
// for the rest.
func TestTenantSecurity(t *testing.T) {
	e, admin := adminEnvWith(t, Options{Security: model.SecurityBounds{Capabilities: []string{"CAP_NET_ADMIN"}, Unconfined: true}})
	name := "sec-" + randomHex(t, 3)
	r := e.do(t, "POST", "/v1/tenants", admin, fmt.Sprintf(`{"name":%q}`, name))
	wantStatus(t, r, http.StatusCreated)
	var created api.CreateTenantResponse
	decode(t, r, &created)
	tok := created.Token
	path := "/v1/tenants/" + name + "/security"

	wantError(t, e.do(t, "PUT", path, e.b.token, `{}`), http.StatusForbidden, "PermissionDenied", "administrator")
	wantError(t, e.do(t, "PUT", path, admin, `{"allowedCapabilities":["SYS_ADMIN"]}`), http.StatusForbidden, "PermissionDenied",
		"security.allowedCapabilities[0] CAP_SYS_ADMIN", "--tenant-allowed-caps")
	wantError(t, e.do(t, "PUT", path, admin, `{"hostPorts":"80-9000"}`), http.StatusBadRequest, "InvalidArgument", "security.hostPorts 80-9000", "1024-65535")
	wantError(t, e.do(t, "PUT", path, admin, `{"hostIPs":["nowhere"]}`), http.StatusBadRequest, "InvalidArgument", "security.hostIPs[0]")
	wantError(t, e.do(t, "PUT", "/v1/tenants/no-such-tenant/security", admin, `{}`), http.StatusNotFound, "NotFound")

	ctr := func(sc string) string {
		return fmt.Sprintf(`{"spec":{"containers":[{"image":%q,"securityContext":%s}]}}`, imgBusybox, sc)
	}
	netAdmin := `{"capabilities":{"add":["NET_ADMIN"]}}`
	unconfined := `{"seccompProfile":{"type":"Unconfined"}}`
	wantError(t, e.do(t, "POST", "/v1/instances", tok, ctr(netAdmin)), http.StatusForbidden, "PermissionDenied",
		"spec.containers[0].securityContext.capabilities.add[0]", "CAP_NET_ADMIN", "kanga tenant security "+name)
	wantError(t, e.do(t, "POST", "/v1/instances", tok, ctr(unconfined)), http.StatusForbidden, "PermissionDenied",
		"spec.containers[0].securityContext.seccompProfile")
	wantError(t, e.do(t, "POST", "/v1/instances", tok, ctr(`{"capabilities":{"add":["NET_RAW"]}}`)), http.StatusForbidden, "PermissionDenied", "CAP_NET_RAW")
	wantError(t, e.do(t, "POST", "/v1/instances", tok, ctr(`{"capabilities":{"add":["ALL"]}}`)), http.StatusBadRequest, "InvalidArgument", "privileged")
	// Dropping, and adding what is in the default set, need nothing.
	wantStatus(t, e.do(t, "POST", "/v1/instances", tok, ctr(`{"capabilities":{"drop":["ALL"],"add":["NET_BIND_SERVICE"]}}`)), http.StatusCreated)

	port := testPort()
	r = e.do(t, "PUT", path, admin, fmt.Sprintf(`{"hostIPs":["127.0.0.1"],"hostPorts":"%d-%d","allowedCapabilities":["net_admin"],"allowUnconfined":true}`, port, port))
	wantStatus(t, r, http.StatusOK)
	var got api.Tenant
	decode(t, r, &got)
	if s := got.Security; s == nil || s.HostIPs[0] != "127.0.0.1/32" || s.AllowedCapabilities[0] != "CAP_NET_ADMIN" || !s.AllowUnconfined {
		t.Fatalf("stored policy %+v", got.Security)
	}
	r = e.do(t, "GET", "/v1/tenants/"+name, tok, "")
	wantStatus(t, r, http.StatusOK)
	decode(t, r, &got)
	if got.Security == nil || got.Security.HostPorts != fmt.Sprint(port) {
		t.Errorf("the tenant sees policy %+v", got.Security)
	}
	wantStatus(t, e.do(t, "POST", "/v1/instances", tok, ctr(netAdmin)), http.StatusCreated)
	wantStatus(t, e.do(t, "POST", "/v1/instances", tok, ctr(unconfined)), http.StatusCreated)
	wantError(t, e.do(t, "POST", "/v1/instances", tok, portBody("wide", "", port)), http.StatusBadRequest, "InvalidArgument",
		"spec.ports[0].hostIP is empty", "127.0.0.1")
	wantError(t, e.do(t, "POST", "/v1/instances", tok, portBody("other-port", "127.0.0.1", port+1)), http.StatusBadRequest, "InvalidArgument",
		fmt.Sprintf("spec.ports[0].hostPort %d", port+1))
	wantStatus(t, e.do(t, "POST", "/v1/instances", tok, portBody("narrow", "127.0.0.1", port)), http.StatusCreated)

	// An empty policy is the defaults again.
	r = e.do(t, "PUT", path, admin, `{}`)
	wantStatus(t, r, http.StatusOK)
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(r.body, &raw); err != nil {
		t.Fatal(err)
	}
	if _, ok := raw["security"]; ok {
		t.Errorf("reset policy still %s", raw["security"])
	}
	wantError(t, e.do(t, "POST", "/v1/instances", tok, ctr(netAdmin)), http.StatusForbidden, "PermissionDenied")
}
