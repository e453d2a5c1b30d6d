package model

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/internal/tenant"
)

// Limits of a tenant network policy: the agents turn it into kernel set
// elements on every host, so a policy stays small.
const (
	MaxEgressRules = 64
	MaxIngressFrom = 64
)

// Protocols an egress rule may name; "" is every protocol.
const (
	ProtoTCP = "tcp"
	ProtoUDP = "udp"
)

// EgressRule is one destination of a tenant's egress policy: an IPv4
// network, narrowed to a port range of tcp and/or udp when PortFrom is set.
type EgressRule struct {
	Net netip.Prefix
	// Protocol is "" (every protocol; with a port: tcp and udp), tcp or
	// udp.
	Protocol string
	// PortFrom..PortTo, both 0 for every port (and every protocol).
	PortFrom, PortTo uint16
}

// String renders the rule in the form ParseEgressRule reads, canonical:
// the network masked, a single port without a range.
func (r EgressRule) String() string {
	s := r.Net.String()
	if r.PortFrom == 0 {
		return s
	}
	s += ":" + strconv.Itoa(int(r.PortFrom))
	if r.PortTo != r.PortFrom {
		s += "-" + strconv.Itoa(int(r.PortTo))
	}
	if r.Protocol != "" {
		s += "/" + r.Protocol
	}
	return s
}

// ParseEgressRule reads "CIDR[:PORT[-PORT]][/tcp|/udp]"; a bare IPv4
// address is a /32. A port without a protocol means tcp and udp; without
// a port the rule covers every protocol (ICMP included).
func ParseEgressRule(s string) (EgressRule, error) {
	var r EgressRule
	in := strings.TrimSpace(s)
	if in == "" {
		return r, fmt.Errorf("empty destination: want CIDR[:PORT[-PORT]][/tcp|/udp], e.g. 10.0.0.0/8:443/tcp")
	}
	if strings.Count(in, ":") > 1 || strings.Contains(in, "[") {
		return r, fmt.Errorf("%q: IPv6 destinations are not supported (the instance network is IPv4 only)", s)
	}
	addr, ports, hasPort := strings.Cut(in, ":")
	var err error
	if strings.Contains(addr, "/") {
		r.Net, err = netip.ParsePrefix(addr)
	} else {
		var a netip.Addr
		if a, err = netip.ParseAddr(addr); err == nil {
			r.Net = netip.PrefixFrom(a, a.BitLen())
		}
	}
	if err != nil || !r.Net.Addr().Is4() {
		return r, fmt.Errorf("%q: %q is not an IPv4 address or CIDR (e.g. 10.0.0.0/8 or 1.2.3.4)", s, addr)
	}
	r.Net = r.Net.Masked()
	if !hasPort {
		return r, nil
	}
	ports, proto, hasProto := strings.Cut(ports, "/")
	if hasProto {
		switch p := strings.ToLower(proto); p {
		case ProtoTCP, ProtoUDP:
			r.Protocol = p
		default:
			return r, fmt.Errorf("%q: protocol %q is not tcp or udp", s, proto)
		}
	}
	from, to, isRange := strings.Cut(ports, "-")
	pf, err1 := parsePort(from)
	pt := pf
	var err2 error
	if isRange {
		pt, err2 = parsePort(to)
	}
	if err1 != nil || err2 != nil {
		return r, fmt.Errorf("%q: port %q is not a port (1-65535) or a range of ports (8000-8100)", s, ports)
	}
	if pt < pf {
		return r, fmt.Errorf("%q: port range %d-%d ends before it starts", s, pf, pt)
	}
	r.PortFrom, r.PortTo = pf, pt
	return r, nil
}

func parsePort(s string) (uint16, error) {
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("bad port %q", s)
	}
	return uint16(n), nil
}

// ParseEgressRules parses a list, naming the field and index of the first
// bad entry.
func ParseEgressRules(field string, in []string) ([]EgressRule, error) {
	if len(in) > MaxEgressRules {
		return nil, invalid("%s has %d entries, the limit is %d: use wider CIDRs", field, len(in), MaxEgressRules)
	}
	out := make([]EgressRule, 0, len(in))
	for i, s := range in {
		r, err := ParseEgressRule(s)
		if err != nil {
			return nil, invalid("%s[%d]: %v", field, i, err)
		}
		out = append(out, r)
	}
	return out, nil
}

// NormalizeTenantNetwork validates a tenant network policy and returns it
// in canonical form (networks masked, duplicates removed, order kept);
// field is the JSON path of the policy in the request ("network"). A
// policy that says nothing is nil.
func NormalizeTenantNetwork(field string, p *api.TenantNetworkPolicy) (*api.TenantNetworkPolicy, error) {
	if p == nil {
		return nil, nil
	}
	out := &api.TenantNetworkPolicy{}
	for _, l := range []struct {
		name string
		in   []string
		out  *[]string
	}{
		{"egressDeny", p.EgressDeny, &out.EgressDeny},
		{"egressAllow", p.EgressAllow, &out.EgressAllow},
	} {
		rules, err := ParseEgressRules(field+"."+l.name, l.in)
		if err != nil {
			return nil, err
		}
		seen := map[string]bool{}
		for _, r := range rules {
			if s := r.String(); !seen[s] {
				seen[s] = true
				*l.out = append(*l.out, s)
			}
		}
	}
	if len(p.IngressFrom) > MaxIngressFrom {
		return nil, invalid("%s.ingressFrom has %d entries, the limit is %d", field, len(p.IngressFrom), MaxIngressFrom)
	}
	seen := map[string]bool{}
	for i, t := range p.IngressFrom {
		if err := tenant.Validate(t); err != nil {
			return nil, fmt.Errorf("%s.ingressFrom[%d]: %w", field, i, err)
		}
		if !seen[t] {
			seen[t] = true
			out.IngressFrom = append(out.IngressFrom, t)
		}
	}
	if len(out.EgressDeny) == 0 && len(out.EgressAllow) == 0 && len(out.IngressFrom) == 0 {
		return nil, nil
	}
	return out, nil
}
