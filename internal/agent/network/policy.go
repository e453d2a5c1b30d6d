package network

import (
	"cmp"
	"net/netip"
	"slices"

	"github.com/kanga-run/kanga/internal/model"
)

// TenantPolicy is a tenant's network policy as isolation enforces it.
type TenantPolicy struct {
	Name        string
	EgressDeny  []model.EgressRule
	EgressAllow []model.EgressRule
	// IngressFrom names the tenants whose instances may open connections
	// to this tenant's.
	IngressFrom []string
}

// View is what tenant isolation on a host needs to know of the rest of
// the platform: the tenants' policies, every host's instance subnet and
// the tenant of every instance address. The agent keeps it current from
// the control plane (see package netview); this host's own instances are
// known first-hand (Manager.Assign) and their entries here are ignored.
type View struct {
	Tenants []TenantPolicy
	// Subnets are the instance subnets of every host (this one's may be
	// among them). Traffic to any of them is instance-to-instance traffic:
	// allowed only between tenants that may talk, whatever egress allows.
	Subnets []netip.Prefix
	// Addresses maps instance addresses to their tenants.
	Addresses map[netip.Addr]string
}

// box is a set of (address, protocol, port) triples: the cartesian
// product of three closed ranges.
type box struct {
	addr  [2]uint32
	proto [2]uint8
	port  [2]uint16
}

const (
	protoTCP = 6
	protoUDP = 17
)

// ruleBoxes are the triples a rule covers: every protocol and port
// without a port; the protocol named, or tcp and udp, with one.
func ruleBoxes(r model.EgressRule) []box {
	a := r.Net.Masked().Addr().As4()
	lo := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
	hi := lo | (1<<(32-r.Net.Bits()) - 1)
	if r.Net.Bits() == 0 {
		hi = ^uint32(0)
	}
	b := box{addr: [2]uint32{lo, hi}}
	if r.PortFrom == 0 {
		b.proto = [2]uint8{0, 255}
		b.port = [2]uint16{0, 65535}
		return []box{b}
	}
	b.port = [2]uint16{r.PortFrom, r.PortTo}
	var out []box
	for _, p := range []struct {
		name string
		num  uint8
	}{{model.ProtoTCP, protoTCP}, {model.ProtoUDP, protoUDP}} {
		if r.Protocol == "" || r.Protocol == p.name {
			pb := b
			pb.proto = [2]uint8{p.num, p.num}
			out = append(out, pb)
		}
	}
	return out
}

// disjoint returns boxes that cover exactly what rules cover and do not
// overlap: the kernel's set of concatenated ranges refuses overlapping
// elements, while rules may well overlap ("10.0.0.0/8" and
// "10.1.0.0/16:443"). It sweeps the address axis over the elementary
// intervals between rule boundaries, splits the protocol axis the same
// way, and merges the port ranges of each cell; neighbouring address
// intervals with the same protocol and port cover are merged again.
func disjoint(rules []model.EgressRule) []box {
	var in []box
	for _, r := range rules {
		in = append(in, ruleBoxes(r)...)
	}
	if len(in) == 0 {
		return nil
	}
	// Address boundaries: each interval starts at one of these.
	var cuts []uint64
	for _, b := range in {
		cuts = append(cuts, uint64(b.addr[0]), uint64(b.addr[1])+1)
	}
	slices.Sort(cuts)
	cuts = slices.Compact(cuts)
	var out []box
	var prev []box // the cover of the previous address interval, its address unset
	var prevEnd uint64
	for i := 0; i+1 < len(cuts); i++ {
		lo, hi := cuts[i], cuts[i+1]-1
		var active []box
		for _, b := range in {
			if uint64(b.addr[0]) <= lo && hi <= uint64(b.addr[1]) {
				active = append(active, b)
			}
		}
		cover := protoPortCover(active)
		if len(cover) > 0 && prevEnd == lo && slices.Equal(cover, prev) {
			// Same cover as the interval before, which ends right here:
			// widen its boxes.
			for j := len(out) - len(cover); j < len(out); j++ {
				out[j].addr[1] = uint32(hi)
			}
		} else {
			for _, c := range cover {
				c.addr = [2]uint32{uint32(lo), uint32(hi)}
				out = append(out, c)
			}
		}
		prev, prevEnd = cover, hi+1
		if len(cover) == 0 {
			prevEnd = 0
		}
	}
	return out
}

// protoPortCover returns disjoint (protocol, port) boxes covering the
// union of those of active, in a canonical order; addresses are left zero.
func protoPortCover(active []box) []box {
	if len(active) == 0 {
		return nil
	}
	var cuts []int
	for _, b := range active {
		cuts = append(cuts, int(b.proto[0]), int(b.proto[1])+1)
	}
	slices.Sort(cuts)
	cuts = slices.Compact(cuts)
	var out []box
	for i := 0; i+1 < len(cuts); i++ {
		lo, hi := cuts[i], cuts[i+1]-1
		var ports [][2]uint16
		for _, b := range active {
			if int(b.proto[0]) <= lo && hi <= int(b.proto[1]) {
				ports = append(ports, b.port)
			}
		}
		for _, pr := range mergeRanges(ports) {
			out = append(out, box{proto: [2]uint8{uint8(lo), uint8(hi)}, port: pr})
		}
	}
	return out
}

// mergeRanges returns the union of closed ranges as disjoint ranges in
// ascending order, adjacent ones joined.
func mergeRanges(rs [][2]uint16) [][2]uint16 {
	if len(rs) == 0 {
		return nil
	}
	rs = slices.Clone(rs)
	slices.SortFunc(rs, func(a, b [2]uint16) int { return cmp.Compare(a[0], b[0]) })
	out := [][2]uint16{rs[0]}
	for _, r := range rs[1:] {
		last := &out[len(out)-1]
		if uint32(r[0]) <= uint32(last[1])+1 {
			last[1] = max(last[1], r[1])
			continue
		}
		out = append(out, r)
	}
	return out
}

// mergePrefixes returns the union of IPv4 prefixes as disjoint address
// ranges in ascending order, adjacent ones joined.
func mergePrefixes(ps []netip.Prefix) [][2]uint32 {
	var rs [][2]uint64
	for _, p := range ps {
		if !p.Addr().Is4() {
			continue
		}
		b := ruleBoxes(model.EgressRule{Net: p})[0]
		rs = append(rs, [2]uint64{uint64(b.addr[0]), uint64(b.addr[1])})
	}
	if len(rs) == 0 {
		return nil
	}
	slices.SortFunc(rs, func(a, b [2]uint64) int { return cmp.Compare(a[0], b[0]) })
	out := [][2]uint64{rs[0]}
	for _, r := range rs[1:] {
		last := &out[len(out)-1]
		if r[0] <= last[1]+1 {
			last[1] = max(last[1], r[1])
			continue
		}
		out = append(out, r)
	}
	res := make([][2]uint32, len(out))
	for i, r := range out {
		res[i] = [2]uint32{uint32(r[0]), uint32(r[1])}
	}
	return res
}
