package model

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
)

func TestParseEgressRule(t *testing.T) {
	for _, c := range []struct {
		in, want string
		err      string
	}{
		{in: "10.0.0.0/8", want: "10.0.0.0/8"},
		{in: "10.1.2.3/8", want: "10.0.0.0/8"},
		{in: "1.2.3.4", want: "1.2.3.4/32"},
		{in: "1.2.3.4:53/udp", want: "1.2.3.4/32:53/udp"},
		{in: "0.0.0.0/0:443/TCP", want: "0.0.0.0/0:443/tcp"},
		{in: "192.168.0.0/16:8000-8100", want: "192.168.0.0/16:8000-8100"},
		{in: "192.168.0.0/16:80-80", want: "192.168.0.0/16:80"},
		{in: "", err: "empty destination"},
		{in: "::1", err: "IPv6"},
		{in: "[::1]:80", err: "IPv6"},
		{in: "example.com", err: "not an IPv4 address"},
		{in: "10.0.0.0/33", err: "not an IPv4 address"},
		{in: "10.0.0.0/8:0", err: "not a port"},
		{in: "10.0.0.0/8:65536", err: "not a port"},
		{in: "10.0.0.0/8:90-80", err: "ends before it starts"},
		{in: "10.0.0.0/8:80/icmp", err: "not tcp or udp"},
		{in: "10.0.0.0/8:", err: "not a port"},
	} {
		r, err := ParseEgressRule(c.in)
		switch {
		case c.err != "":
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("ParseEgressRule(%q) = %v, %v; want an error with %q", c.in, r, err, c.err)
			}
		case err != nil:
			t.Errorf("ParseEgressRule(%q): %v", c.in, err)
		case r.String() != c.want:
			t.Errorf("ParseEgressRule(%q) = %s, want %s", c.in, r, c.want)
		}
	}
}

func TestNormalizeTenantNetwork(t *testing.T) {
	got, err := NormalizeTenantNetwork("network", &api.TenantNetworkPolicy{
		EgressDeny:  []string{"10.1.2.3/8", "10.0.0.0/8", "1.2.3.4"},
		IngressFrom: []string{"b", "b", "c"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got.EgressDeny, []string{"10.0.0.0/8", "1.2.3.4/32"}) || !slices.Equal(got.IngressFrom, []string{"b", "c"}) {
		t.Errorf("normalized to %+v", got)
	}
	if got, err := NormalizeTenantNetwork("network", &api.TenantNetworkPolicy{}); got != nil || err != nil {
		t.Errorf("an empty policy normalized to %+v, %v; want nil", got, err)
	}
	for _, c := range []struct {
		p     api.TenantNetworkPolicy
		field string
	}{
		{api.TenantNetworkPolicy{EgressAllow: []string{"10.0.0.0/8", "nope"}}, "network.egressAllow[1]"},
		{api.TenantNetworkPolicy{IngressFrom: []string{"Bad_Name"}}, "network.ingressFrom[0]"},
		{api.TenantNetworkPolicy{EgressDeny: make([]string, MaxEgressRules+1)}, "network.egressDeny has"},
	} {
		_, err := NormalizeTenantNetwork("network", &c.p)
		if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), c.field) {
			t.Errorf("%+v: %v; want InvalidArgument naming %s", c.p, err, c.field)
		}
	}
}
