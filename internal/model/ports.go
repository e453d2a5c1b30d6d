package model

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
)

// PortRange is an inclusive range of host ports. Min > Max is an empty
// range (a narrowing that left nothing).
type PortRange struct{ Min, Max int }

// DefaultPortRange is what instances may publish unless the operator says
// otherwise: no privileged port (below 1024), as an unprivileged process
// on the host could not bind one either.
var DefaultPortRange = PortRange{Min: 1024, Max: 65535}

func (r PortRange) String() string {
	if r.Min > r.Max {
		return "none"
	}
	if r.Min == r.Max {
		return strconv.Itoa(r.Min)
	}
	return fmt.Sprintf("%d-%d", r.Min, r.Max)
}

func (r PortRange) contains(port int) bool { return port >= r.Min && port <= r.Max }

// ParsePortRange parses "from-to" or a single port.
func ParsePortRange(field, s string) (PortRange, error) {
	lo, hi, ok := strings.Cut(strings.TrimSpace(s), "-")
	if !ok {
		hi = lo
	}
	a, err1 := strconv.Atoi(strings.TrimSpace(lo))
	b, err2 := strconv.Atoi(strings.TrimSpace(hi))
	if err1 != nil || err2 != nil || a < 1 || b > 65535 || a > b {
		return PortRange{}, invalid("%s %q is not a port range: give FROM-TO within 1-65535, e.g. 1024-65535", field, s)
	}
	return PortRange{Min: a, Max: b}, nil
}

// ParseAddresses parses addresses and CIDRs ("10.0.0.5", "10.0.0.0/8") of
// IPv4, the family ports are published on.
func ParseAddresses(field string, list []string) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(list))
	var errs []error
	for i, s := range list {
		s = strings.TrimSpace(s)
		var p netip.Prefix
		var err error
		if strings.Contains(s, "/") {
			p, err = netip.ParsePrefix(s)
		} else {
			var a netip.Addr
			if a, err = netip.ParseAddr(s); err == nil {
				p = netip.PrefixFrom(a, a.BitLen())
			}
		}
		if err != nil || !p.Addr().Is4() {
			errs = append(errs, invalid("%s[%d] %q is not an IPv4 address or CIDR, e.g. 127.0.0.1 or 10.0.0.0/8", field, i, s))
			continue
		}
		out = append(out, p.Masked())
	}
	return out, errors.Join(errs...)
}

// PortPolicy says where instances may publish ports: the operator's, or a
// tenant's narrowing of it (Narrow).
type PortPolicy struct {
	// Addresses are the host addresses ports may be published on. Nil
	// allows every address of the host and the wildcard (all addresses);
	// an empty, non-nil list allows none.
	Addresses []netip.Prefix
	Range     PortRange
	// Reserved are the platform's own ports (its API, the agents' link,
	// the host API, etcd), never published on any address, with the name
	// of what uses each.
	Reserved map[int]string
}

// DefaultPortPolicy is the policy of an operator who set no flag.
func DefaultPortPolicy() PortPolicy { return PortPolicy{Range: DefaultPortRange} }

// Reserve adds ports to the reserved ones, as used by what; a port
// reserved already keeps its first user.
func (p *PortPolicy) Reserve(what string, ports ...int) {
	if p.Reserved == nil {
		p.Reserved = map[int]string{}
	}
	for _, port := range ports {
		if port <= 0 {
			continue
		}
		if _, ok := p.Reserved[port]; !ok {
			p.Reserved[port] = what
		}
	}
}

// ReserveAddress reserves the port of a listen address or URL
// ("127.0.0.1:7420", "https://10.0.0.1:7421", "unix:///run/x.sock": none),
// as used by what. The default etcd ports come with etcd URLs.
func (p *PortPolicy) ReserveAddress(what, addr string) {
	hostport := addr
	if u, err := url.Parse(addr); err == nil && u.Scheme != "" && u.Host != "" {
		hostport = u.Host
		if u.Port() == "" {
			switch u.Scheme {
			case "https":
				hostport += ":443"
			case "http":
				hostport += ":80"
			}
		}
	}
	_, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return
	}
	if n, err := strconv.Atoi(port); err == nil {
		p.Reserve(what, n)
	}
}

// AnyAddress reports whether every address of the host is allowed.
func (p PortPolicy) AnyAddress() bool { return p.Addresses == nil }

func (p PortPolicy) addressesString() string {
	if p.Addresses == nil {
		return "any address of the host"
	}
	if len(p.Addresses) == 0 {
		return "none"
	}
	s := make([]string, len(p.Addresses))
	for i, a := range p.Addresses {
		s[i] = a.String()
		if a.IsSingleIP() {
			s[i] = a.Addr().String()
		}
	}
	return strings.Join(s, ", ")
}

// Narrow returns the part of p that a tenant's policy allows: the
// intersection of address sets and of port ranges. The tenant's policy was
// checked against the operator's when it was set (ValidateTenantSecurity),
// but the operator may have narrowed since; nothing outside p ever passes.
func (p PortPolicy) Narrow(t *api.TenantSecurity) PortPolicy {
	if t == nil {
		return p
	}
	out := p
	if len(t.HostIPs) > 0 {
		tp, err := ParseAddresses("hostIPs", t.HostIPs)
		if err != nil {
			tp = nil
		}
		out.Addresses = intersectPrefixes(p.Addresses, tp)
	}
	if t.HostPorts != "" {
		r, err := ParsePortRange("hostPorts", t.HostPorts)
		if err != nil {
			r = PortRange{Min: 1, Max: 0}
		}
		out.Range = PortRange{Min: max(p.Range.Min, r.Min), Max: min(p.Range.Max, r.Max)}
	}
	return out
}

// intersectPrefixes is the set of addresses in both a (nil: all) and b.
func intersectPrefixes(a, b []netip.Prefix) []netip.Prefix {
	out := []netip.Prefix{}
	if a == nil {
		return append(out, b...)
	}
	for _, x := range a {
		for _, y := range b {
			switch {
			case x.Bits() <= y.Bits() && x.Contains(y.Addr()):
				out = append(out, y)
			case y.Bits() < x.Bits() && y.Contains(x.Addr()):
				out = append(out, x)
			}
		}
	}
	return out
}

// IsWildcard reports whether a host IP means every address of the host.
func IsWildcard(hostIP string) bool {
	if hostIP == "" {
		return true
	}
	a, err := netip.ParseAddr(hostIP)
	return err == nil && a.IsUnspecified()
}

// PortString shows a published port as "127.0.0.1:8080/tcp", or
// "8080/tcp" on every address.
func PortString(p api.PortMapping) string {
	proto := p.Protocol
	if proto == "" {
		proto = "tcp"
	}
	if IsWildcard(p.HostIP) {
		return fmt.Sprintf("%d/%s", p.HostPort, proto)
	}
	return fmt.Sprintf("%s:%d/%s", p.HostIP, p.HostPort, proto)
}

// PortsConflict reports whether two published ports would take the same
// traffic: the same port and protocol on the same address, or on every
// address (the wildcard overlaps each one).
func PortsConflict(a, b api.PortMapping) bool {
	if a.HostPort != b.HostPort || protocol(a) != protocol(b) {
		return false
	}
	if IsWildcard(a.HostIP) || IsWildcard(b.HostIP) {
		return true
	}
	x, err1 := netip.ParseAddr(a.HostIP)
	y, err2 := netip.ParseAddr(b.HostIP)
	return err1 != nil || err2 != nil || x == y
}

func protocol(p api.PortMapping) string {
	if p.Protocol == "" {
		return "tcp"
	}
	return strings.ToLower(p.Protocol)
}

// CheckPorts checks a validated spec's published ports against p: each
// problem a 400 naming its field. Whether an address is the host's own and
// whether a port is free are questions for the host and the other
// instances (see the agent and the API).
func (p PortPolicy) CheckPorts(ports []api.PortMapping) error {
	var errs []error
	for i, pm := range ports {
		f := fmt.Sprintf("spec.ports[%d]", i)
		if IsWildcard(pm.HostIP) {
			if !p.AnyAddress() {
				errs = append(errs, invalid("%s.hostIP is empty, which publishes on every address of the host: ports may only be published on %s here: give one, e.g. -p %s:%d:%d",
					f, p.addressesString(), exampleAddress(p), pm.HostPort, pm.ContainerPort))
			}
		} else if a, err := netip.ParseAddr(pm.HostIP); err == nil && !p.AnyAddress() && !slices.ContainsFunc(p.Addresses, func(pr netip.Prefix) bool { return pr.Contains(a) }) {
			errs = append(errs, invalid("%s.hostIP %s is not an address ports may be published on: allowed are %s", f, pm.HostIP, p.addressesString()))
		}
		if what, ok := p.Reserved[pm.HostPort]; ok {
			errs = append(errs, invalid("%s.hostPort %d is reserved by the platform (%s) on every address: choose another port", f, pm.HostPort, what))
			continue
		}
		if !p.Range.contains(pm.HostPort) {
			if pm.HostPort < 1024 && p.Range.Min >= 1024 {
				errs = append(errs, invalid("%s.hostPort %d is a privileged port (below 1024), which the operator does not allow: publish on a port in %s, e.g. -p %d:%d",
					f, pm.HostPort, p.Range, max(p.Range.Min, 8000), pm.ContainerPort))
			} else {
				errs = append(errs, invalid("%s.hostPort %d is outside the host ports allowed here (%s)", f, pm.HostPort, p.Range))
			}
		}
	}
	return errors.Join(errs...)
}

func exampleAddress(p PortPolicy) string {
	for _, a := range p.Addresses {
		if a.IsSingleIP() {
			return a.Addr().String()
		}
	}
	if len(p.Addresses) > 0 {
		return p.Addresses[0].Addr().Next().String()
	}
	return "127.0.0.1"
}

// ReservedList renders the reserved ports for a log line or message.
func (p PortPolicy) ReservedList() string {
	ports := make([]int, 0, len(p.Reserved))
	for port := range p.Reserved {
		ports = append(ports, port)
	}
	sort.Ints(ports)
	s := make([]string, len(ports))
	for i, port := range ports {
		s[i] = fmt.Sprintf("%d (%s)", port, p.Reserved[port])
	}
	return strings.Join(s, ", ")
}

// validateTenantPorts checks that a tenant's narrowing lies within the
// operator's policy p, and normalizes it.
func validateTenantPorts(t *api.TenantSecurity, p PortPolicy) error {
	var errs []error
	if len(t.HostIPs) > 0 {
		tp, err := ParseAddresses("security.hostIPs", t.HostIPs)
		if err != nil {
			errs = append(errs, err)
		} else {
			t.HostIPs = t.HostIPs[:0]
			for i, pr := range tp {
				if !p.AnyAddress() && !slices.ContainsFunc(p.Addresses, func(o netip.Prefix) bool { return o.Bits() <= pr.Bits() && o.Contains(pr.Addr()) }) {
					errs = append(errs, invalid("security.hostIPs[%d] %s is outside the addresses the operator allows (%s)", i, pr, p.addressesString()))
				}
				t.HostIPs = append(t.HostIPs, pr.String())
			}
		}
	}
	if t.HostPorts != "" {
		r, err := ParsePortRange("security.hostPorts", t.HostPorts)
		switch {
		case err != nil:
			errs = append(errs, err)
		case r.Min < p.Range.Min || r.Max > p.Range.Max:
			errs = append(errs, invalid("security.hostPorts %s is outside the host ports the operator allows (%s)", r, p.Range))
		default:
			t.HostPorts = r.String()
		}
	}
	return errors.Join(errs...)
}

// PortInUse is the 409 for a published port that another instance or a
// host process holds; holder says who, as far as the caller may know.
func PortInUse(field string, p api.PortMapping, holder string) error {
	return fmt.Errorf("%s: host port %s is in use by %s: choose another host port: %w", field, PortString(p), holder, errdefs.ErrConflict)
}
