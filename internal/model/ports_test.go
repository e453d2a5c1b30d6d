package model

import (
	"errors"
	"strings"
	"testing"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
)

func TestParsePortRange(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want PortRange
		err  bool
	}{
		{"1024-65535", PortRange{1024, 65535}, false},
		{"8080", PortRange{8080, 8080}, false},
		{" 1 - 80 ", PortRange{1, 80}, false},
		{"0-80", PortRange{}, true},
		{"80-70000", PortRange{}, true},
		{"9000-8000", PortRange{}, true},
		{"http", PortRange{}, true},
		{"", PortRange{}, true},
	} {
		got, err := ParsePortRange("--host-port-range", tc.in)
		if (err != nil) != tc.err || (err == nil && got != tc.want) {
			t.Errorf("ParsePortRange(%q) = %v, %v; want %v, err=%v", tc.in, got, err, tc.want, tc.err)
		}
		if err != nil && (!errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), "--host-port-range")) {
			t.Errorf("ParsePortRange(%q): %v does not name the flag as an invalid argument", tc.in, err)
		}
	}
}

func TestPortsConflict(t *testing.T) {
	p := func(ip string, port int, proto string) api.PortMapping {
		return api.PortMapping{HostIP: ip, HostPort: port, ContainerPort: 80, Protocol: proto}
	}
	for _, tc := range []struct {
		a, b api.PortMapping
		want bool
	}{
		{p("127.0.0.1", 8080, "tcp"), p("127.0.0.1", 8080, "tcp"), true},
		{p("127.0.0.1", 8080, "tcp"), p("127.0.0.1", 8080, ""), true},
		{p("127.0.0.1", 8080, "tcp"), p("127.0.0.1", 8080, "udp"), false},
		{p("127.0.0.1", 8080, "tcp"), p("127.0.0.1", 8081, "tcp"), false},
		{p("127.0.0.1", 8080, "tcp"), p("10.0.0.5", 8080, "tcp"), false},
		{p("", 8080, "tcp"), p("10.0.0.5", 8080, "tcp"), true},
		{p("0.0.0.0", 8080, "tcp"), p("127.0.0.1", 8080, "tcp"), true},
		{p("0.0.0.0", 8080, "udp"), p("", 8080, "udp"), true},
	} {
		if got := PortsConflict(tc.a, tc.b); got != tc.want {
			t.Errorf("PortsConflict(%s, %s) = %v, want %v", PortString(tc.a), PortString(tc.b), got, tc.want)
		}
		if got := PortsConflict(tc.b, tc.a); got != tc.want {
			t.Errorf("PortsConflict is not symmetric for %s, %s", PortString(tc.a), PortString(tc.b))
		}
	}
}

func TestCheckPorts(t *testing.T) {
	def := DefaultPortPolicy()
	def.Reserve("the API", 7420)
	lo, err := ParseAddresses("--host-port-addresses", []string{"127.0.0.1", "10.0.0.0/8"})
	if err != nil {
		t.Fatal(err)
	}
	narrow := PortPolicy{Addresses: lo, Range: PortRange{80, 9000}}
	port := func(ip string, hostPort int) []api.PortMapping {
		return []api.PortMapping{{HostIP: ip, HostPort: hostPort, ContainerPort: 80, Protocol: "tcp"}}
	}
	for _, tc := range []struct {
		name   string
		policy PortPolicy
		ports  []api.PortMapping
		want   []string // substrings of the error; none: allowed
	}{
		{"loopback high port", def, port("127.0.0.1", 8080), nil},
		{"every address", def, port("", 8080), nil},
		{"privileged", def, port("127.0.0.1", 80), []string{"spec.ports[0].hostPort 80", "privileged", "1024-65535"}},
		{"the API's port on loopback", def, port("127.0.0.1", 7420), []string{"spec.ports[0].hostPort 7420", "reserved", "the API"}},
		{"the API's port elsewhere", def, port("10.1.2.3", 7420), []string{"reserved"}},
		{"the API's port on udp", def, []api.PortMapping{{HostPort: 7420, ContainerPort: 53, Protocol: "udp"}}, []string{"reserved"}},
		{"allowed address", narrow, port("10.2.3.4", 8080), nil},
		{"address outside", narrow, port("1.2.3.4", 8080), []string{"spec.ports[0].hostIP 1.2.3.4", "127.0.0.1, 10.0.0.0/8"}},
		{"wildcard when narrowed", narrow, port("", 8080), []string{"spec.ports[0].hostIP is empty", "-p 127.0.0.1:8080:80"}},
		{"privileged allowed by the operator", narrow, port("127.0.0.1", 80), nil},
		{"above the range", narrow, port("127.0.0.1", 9001), []string{"spec.ports[0].hostPort 9001", "80-9000"}},
		{"nothing left", PortPolicy{Addresses: lo, Range: PortRange{2, 1}}, port("127.0.0.1", 8080), []string{"none"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.policy.CheckPorts(tc.ports)
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("allowed; want an error with %q", tc.want)
			}
			if !errors.Is(err, errdefs.ErrInvalidArgument) {
				t.Errorf("%v is not an invalid argument", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestNarrowPorts(t *testing.T) {
	op := DefaultPortPolicy()
	ten := &api.TenantSecurity{HostIPs: []string{"127.0.0.1"}, HostPorts: "8000-8999"}
	got := op.Narrow(ten)
	if got.AnyAddress() || len(got.Addresses) != 1 || got.Addresses[0].String() != "127.0.0.1/32" || got.Range != (PortRange{8000, 8999}) {
		t.Errorf("narrowing the default by %+v gave %+v", ten, got)
	}
	if err := got.CheckPorts([]api.PortMapping{{HostIP: "127.0.0.1", HostPort: 9000, ContainerPort: 80}}); err == nil {
		t.Error("port 9000 passed a tenant range of 8000-8999")
	}
	// An operator who narrowed after the tenant's policy was set: the
	// intersection, never the tenant's wider one.
	lo, _ := ParseAddresses("x", []string{"127.0.0.0/8"})
	op2 := PortPolicy{Addresses: lo, Range: PortRange{8500, 65535}}
	got = op2.Narrow(&api.TenantSecurity{HostIPs: []string{"0.0.0.0/0"}, HostPorts: "8000-8999"})
	if len(got.Addresses) != 1 || got.Addresses[0].String() != "127.0.0.0/8" || got.Range != (PortRange{8500, 8999}) {
		t.Errorf("narrowing %+v gave %+v", op2, got)
	}
	got = op2.Narrow(&api.TenantSecurity{HostIPs: []string{"10.0.0.1"}})
	if got.AnyAddress() || len(got.Addresses) != 0 {
		t.Errorf("disjoint addresses gave %+v, want none", got.Addresses)
	}
}

func TestValidateTenantSecurity(t *testing.T) {
	lo, _ := ParseAddresses("x", []string{"127.0.0.0/8"})
	op := PortPolicy{Addresses: lo, Range: DefaultPortRange}
	bounds := SecurityBounds{Capabilities: []string{"CAP_NET_ADMIN"}}
	for _, tc := range []struct {
		name string
		in   api.TenantSecurity
		code error
		want string
	}{
		{"within", api.TenantSecurity{HostIPs: []string{"127.0.0.1"}, HostPorts: "8000-9000", AllowedCapabilities: []string{"net_admin"}}, nil, ""},
		{"address outside", api.TenantSecurity{HostIPs: []string{"10.0.0.1"}}, errdefs.ErrInvalidArgument, "security.hostIPs[0] 10.0.0.1/32"},
		{"range outside", api.TenantSecurity{HostPorts: "80-9000"}, errdefs.ErrInvalidArgument, "security.hostPorts 80-9000"},
		{"bad range", api.TenantSecurity{HostPorts: "x"}, errdefs.ErrInvalidArgument, "security.hostPorts"},
		{"capability beyond the bounds", api.TenantSecurity{AllowedCapabilities: []string{"SYS_ADMIN"}}, errdefs.ErrPermissionDenied, "CAP_SYS_ADMIN may not be granted"},
		{"unknown capability", api.TenantSecurity{AllowedCapabilities: []string{"FLY"}}, errdefs.ErrInvalidArgument, `"FLY" is not a Linux capability`},
		{"unconfined not allowed", api.TenantSecurity{AllowUnconfined: true}, errdefs.ErrPermissionDenied, "--tenant-allow-unconfined"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := tc.in
			err := ValidateTenantSecurity(&in, op, bounds)
			if tc.code == nil {
				if err != nil {
					t.Fatal(err)
				}
				if in.AllowedCapabilities[0] != "CAP_NET_ADMIN" || in.HostIPs[0] != "127.0.0.1/32" {
					t.Errorf("not normalized: %+v", in)
				}
				return
			}
			if !errors.Is(err, tc.code) || !strings.Contains(fmtErr(err), tc.want) {
				t.Errorf("got %v; want %v containing %q", err, tc.code, tc.want)
			}
		})
	}
}

func fmtErr(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
