package server

import (
	"fmt"
	"net/http"
	"slices"
	"testing"

	"github.com/kanga-run/kanga/api"
)

// TestTenantNetworkPolicy: administrators set a tenant's network policy at
// creation or later, in canonical form; tenants read their own and no one
// else's; bad entries are a 400 naming the field and entry.
func TestTenantNetworkPolicy(t *testing.T) {
	e, admin := adminEnv(t)
	name := "net-" + randomHex(t, 3)
	r := e.do(t, "POST", "/v1/tenants", admin,
		fmt.Sprintf(`{"name":%q,"network":{"egressDeny":["10.1.2.3/8","1.2.3.4:53/udp"],"ingressFrom":[%q]}}`, name, e.b.name))
	wantStatus(t, r, http.StatusCreated)
	var created api.CreateTenantResponse
	decode(t, r, &created)
	if p := created.Tenant.Network; p == nil || !slices.Equal(p.EgressDeny, []string{"10.0.0.0/8", "1.2.3.4/32:53/udp"}) ||
		!slices.Equal(p.IngressFrom, []string{e.b.name}) {
		t.Fatalf("created with network %+v", created.Tenant.Network)
	}

	path := "/v1/tenants/" + name + "/network"
	for _, tc := range []struct{ body, msg string }{
		{`{"egressAllow":["10.0.0.0/8","example.com"]}`, "network.egressAllow[1]"},
		{`{"egressDeny":["10.0.0.0/8:0"]}`, "network.egressDeny[0]"},
		{`{"egressDeny":["fd00::/8"]}`, "IPv6"},
		{`{"ingressFrom":["Not_A_Tenant"]}`, "network.ingressFrom[0]"},
		{`{"egress":["10.0.0.0/8"]}`, "egress"},
	} {
		wantError(t, e.do(t, "PUT", path, admin, tc.body), http.StatusBadRequest, "InvalidArgument", tc.msg)
	}
	wantError(t, e.do(t, "PUT", path, created.Token, `{}`), http.StatusForbidden, "PermissionDenied", "administrator")
	wantError(t, e.do(t, "PUT", "/v1/tenants/nobody-here/network", admin, `{}`), http.StatusNotFound, "NotFound")

	r = e.do(t, "PUT", path, admin, `{"egressAllow":["192.0.2.0/24:443/tcp"]}`)
	wantStatus(t, r, http.StatusOK)
	var updated api.Tenant
	decode(t, r, &updated)
	if p := updated.Network; p == nil || len(p.EgressDeny) != 0 || !slices.Equal(p.EgressAllow, []string{"192.0.2.0/24:443/tcp"}) {
		t.Fatalf("after PUT: %+v", updated.Network)
	}

	// The tenant reads its own policy; another tenant gets a 404.
	r = e.do(t, "GET", path, created.Token, "")
	wantStatus(t, r, http.StatusOK)
	var got api.TenantNetworkPolicy
	decode(t, r, &got)
	if !slices.Equal(got.EgressAllow, []string{"192.0.2.0/24:443/tcp"}) {
		t.Fatalf("GET: %+v", got)
	}
	wantError(t, e.do(t, "GET", path, e.b.token, ""), http.StatusNotFound, "NotFound")

	// An empty policy restores the default.
	r = e.do(t, "PUT", path, admin, `{}`)
	wantStatus(t, r, http.StatusOK)
	var reset api.Tenant
	decode(t, r, &reset)
	if reset.Network != nil {
		t.Fatalf("after an empty PUT: %+v", reset.Network)
	}
}
