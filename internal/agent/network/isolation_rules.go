package network

import (
	"encoding/binary"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// The rules of the isolation tables, as `nft list` shows them (B: the
// bridge, S: its subnet, G: its gateway address; T and U: tenants). Only
// per-tenant chains change, when policies do; instances change set and
// map elements.
//
//	table bridge kanga-B {
//	  set ports { type ifname . ether_addr . ipv4_addr }  # each port's own
//	  set my_ports { type ifname }
//	  map arp_from { type ipv4_addr : verdict }           # local ip : jump arp-T
//	  set a-T { type ipv4_addr }                          # T's local addresses
//	  chain prerouting { type filter hook prerouting priority -300
//	    iifname != @my_ports accept
//	    iifname . ether saddr . ip saddr @ports accept
//	    arp htype 1 arp ptype ip arp hlen 6 arp plen 4
//	      iifname . ether saddr . arp saddr ip @ports
//	      iifname . arp saddr ether . arp saddr ip @ports accept
//	    drop }
//	  chain forward { type filter hook forward priority 100
//	    ether type ip meta mark & M != 0 meta mark set meta mark & ~M accept
//	    iifname @my_ports drop
//	    oifname @my_ports drop }
//	  chain output { type filter hook output priority -200
//	    oifname != @my_ports accept
//	    arp operation reply jump arp_reply }
//	  chain arp_reply {
//	    arp saddr ip G accept
//	    arp daddr ip vmap @arp_from
//	    drop }
//	  chain arp-T {                        # T asked for arp saddr ip
//	    arp saddr ip @a-T accept
//	    arp saddr ip @a-U accept           # U lets T in, or T lets U in
//	    drop }
//	}
//	table inet kanga-B {
//	  map from { type ipv4_addr : verdict }  # instance ip, any host : jump from-T
//	  set nets { type ipv4_addr; flags interval }  # every host's subnet
//	  set dns { type ipv4_addr . inet_proto . inet_service }
//	  set a-T { type ipv4_addr }             # T's addresses, any host
//	  set deny-T, allow-T { type ipv4_addr . inet_proto . inet_service; flags interval }
//	  chain prerouting { type filter hook prerouting priority mangle
//	    iifname != B accept
//	    meta nfproto != ipv4 drop
//	    ip saddr != S drop
//	    ip daddr 127.0.0.0/8 drop }
//	  chain input { type filter hook input priority filter
//	    iifname != B accept
//	    ct state established,related accept
//	    ip daddr . meta l4proto . th dport @dns accept
//	    drop }
//	  chain forward { type filter hook forward priority filter
//	    iifname B jump egress
//	    oifname B jump ingress }
//	  chain output { type filter hook output priority filter
//	    oifname B icmp type redirect drop }
//	  chain postrouting { type nat hook postrouting priority srcnat
//	    ip saddr S ip daddr S ct status dnat masquerade }
//	  chain egress {
//	    meta nfproto != ipv4 drop
//	    ct status dnat oifname B meta mark set meta mark | M
//	    ct state established,related accept
//	    ip daddr 169.254.0.0/16 drop
//	    ct status dnat accept
//	    ip saddr vmap @from
//	    drop }
//	  chain ingress {
//	    meta nfproto != ipv4 drop
//	    ct state established,related accept
//	    ct status dnat accept
//	    ip saddr vmap @from
//	    drop }
//	  chain from-T {
//	    ip daddr @a-T accept
//	    ip daddr @a-U accept                 # U lets T in
//	    ip daddr @nets drop
//	    ip daddr . meta l4proto . th dport @deny-T drop
//	    ip daddr . meta l4proto . th dport @allow-T accept
//	    accept }                             # drop if T has an allow list
//	}
//
// The bridge's prerouting runs at -300, before the bridge learns source
// MACs; the inet prerouting at -150, after conntrack and before DNAT.

// dnatMark is the packet mark bit the inet egress chain sets on a packet
// to a published port that br_netfilter will bridge to an instance on the
// same bridge, for the bridge's forward chain to let through. Known users
// of marks stay below it (portmap 0x2000, kube-proxy 0x4000 and 0x8000,
// Cilium 0x0f00, Weave and Tailscale 0x20000 to 0x80000); Calico's
// default mask 0xffff0000 covers it, but Calico does not run on a Kanga
// host. It never leaves the host: crossing into the instance's namespace
// clears marks.
const dnatMark = 0x01000000

var (
	accept = &expr.Verdict{Kind: expr.VerdictAccept}
	drop   = &expr.Verdict{Kind: expr.VerdictDrop}
)

func jump(chain string) expr.Any { return &expr.Verdict{Kind: expr.VerdictJump, Chain: chain} }

func metaLoad(key expr.MetaKey, reg uint32) expr.Any { return &expr.Meta{Key: key, Register: reg} }

func payload(base expr.PayloadBase, off, n, reg uint32) expr.Any {
	return &expr.Payload{DestRegister: reg, Base: base, Offset: off, Len: n}
}

func netHdr(off, n, reg uint32) expr.Any { return payload(expr.PayloadBaseNetworkHeader, off, n, reg) }

func compare(op expr.CmpOp, reg uint32, data []byte) expr.Any {
	return &expr.Cmp{Op: op, Register: reg, Data: data}
}

func eq(reg uint32, data []byte) expr.Any  { return compare(expr.CmpOpEq, reg, data) }
func neq(reg uint32, data []byte) expr.Any { return compare(expr.CmpOpNeq, reg, data) }

func in(s *nftables.Set, reg uint32) expr.Any {
	return &expr.Lookup{SourceRegister: reg, SetName: s.Name, SetID: s.ID}
}

func notIn(s *nftables.Set, reg uint32) expr.Any {
	return &expr.Lookup{SourceRegister: reg, SetName: s.Name, SetID: s.ID, Invert: true}
}

// vmap looks the key in reg up in verdict map m and takes the verdict it
// maps to; the rule goes on when the key is not in the map.
func vmap(m *nftables.Set, reg uint32) expr.Any {
	return &expr.Lookup{SourceRegister: reg, DestRegister: 0, IsDestRegSet: true, SetName: m.Name, SetID: m.ID}
}

// masked compares reg&mask with want.
func masked(reg uint32, mask, want []byte, op expr.CmpOp) []expr.Any {
	return []expr.Any{
		&expr.Bitwise{SourceRegister: reg, DestRegister: reg, Len: uint32(len(mask)), Mask: mask, Xor: make([]byte, len(mask))},
		compare(op, reg, want),
	}
}

func ctBits(key expr.CtKey, bits uint32) []expr.Any {
	return append([]expr.Any{&expr.Ct{Register: r0, Key: key}},
		masked(r0, binary.NativeEndian.AppendUint32(nil, bits), make([]byte, 4), expr.CmpOpNeq)...)
}

func (is *isolation) rule(t *nftables.Table, c *nftables.Chain, exprs ...expr.Any) {
	is.conn.AddRule(&nftables.Rule{Table: t, Chain: c, Exprs: exprs})
}

func cat(parts ...[]expr.Any) []expr.Any {
	var out []expr.Any
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

func ex(e ...expr.Any) []expr.Any { return e }

// Ethernet types, as the wire has them.
var (
	etherIP  = []byte{0x08, 0x00}
	etherARP = []byte{0x08, 0x06}
	// arp htype 1 (Ethernet), ptype 0x0800, hlen 6, plen 4.
	arpEthIPv4 = []byte{0x00, 0x01, 0x08, 0x00, 6, 4}
	arpReply   = []byte{0x00, 0x02}
)

func (is *isolation) bridgeChains() {
	t := is.br
	c := is.conn
	ports, myPorts := is.set(t, setPorts), is.set(t, setMyPorts)
	filter := nftables.ChainTypeFilter
	pre := c.AddChain(&nftables.Chain{Name: "prerouting", Table: t, Type: filter,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityRef(-300)})
	is.rule(t, pre, metaLoad(expr.MetaKeyIIFNAME, r0), notIn(myPorts, r0), accept)
	is.rule(t, pre,
		payload(expr.PayloadBaseLLHeader, 12, 2, r0), eq(r0, etherIP),
		metaLoad(expr.MetaKeyIIFNAME, r0),           // r0..r3
		payload(expr.PayloadBaseLLHeader, 6, 6, r4), // r4..r5
		netHdr(12, 4, r6),
		in(ports, r0), accept)
	is.rule(t, pre,
		payload(expr.PayloadBaseLLHeader, 12, 2, r0), eq(r0, etherARP),
		netHdr(0, 6, r0), eq(r0, arpEthIPv4),
		metaLoad(expr.MetaKeyIIFNAME, r0),
		payload(expr.PayloadBaseLLHeader, 6, 6, r4),
		netHdr(14, 4, r6),
		in(ports, r0),
		netHdr(8, 6, r4), // the ARP sender's hardware address
		in(ports, r0), accept)
	is.rule(t, pre, drop)

	// After br_netfilter's hook (priority 0), which runs the inet hooks
	// for bridged IPv4 when bridge-nf-call-iptables is on: it bridges a
	// packet to a port published on a host address straight to the
	// instance DNAT chose when that instance is on this bridge. The inet
	// egress chain marks such packets (see dnatMark); the mark goes with
	// the packet only to here (veth scrubs it on the way into the
	// instance, and an instance cannot send one in).
	fwd := c.AddChain(&nftables.Chain{Name: "forward", Table: t, Type: filter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityRef(100)})
	is.rule(t, fwd,
		payload(expr.PayloadBaseLLHeader, 12, 2, r0), eq(r0, etherIP),
		&expr.Meta{Key: expr.MetaKeyMARK, Register: r0},
		&expr.Bitwise{SourceRegister: r0, DestRegister: r1, Len: 4, Mask: binary.NativeEndian.AppendUint32(nil, dnatMark), Xor: make([]byte, 4)},
		neq(r1, make([]byte, 4)),
		&expr.Bitwise{SourceRegister: r0, DestRegister: r0, Len: 4, Mask: binary.NativeEndian.AppendUint32(nil, ^uint32(dnatMark)), Xor: make([]byte, 4)},
		&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: r0},
		accept)
	is.rule(t, fwd, metaLoad(expr.MetaKeyIIFNAME, r0), in(myPorts, r0), drop)
	is.rule(t, fwd, metaLoad(expr.MetaKeyOIFNAME, r0), in(myPorts, r0), drop)

	arpReplies := c.AddChain(&nftables.Chain{Name: "arp_reply", Table: t})
	out := c.AddChain(&nftables.Chain{Name: "output", Table: t, Type: filter,
		Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityRef(-200)})
	is.rule(t, out, metaLoad(expr.MetaKeyOIFNAME, r0), notIn(myPorts, r0), accept)
	is.rule(t, out,
		payload(expr.PayloadBaseLLHeader, 12, 2, r0), eq(r0, etherARP),
		netHdr(6, 2, r0), eq(r0, arpReply),
		jump(arpReplies.Name))
	is.rule(t, arpReplies, netHdr(14, 4, r0), eq(r0, ip4(is.gateway)), accept)
	// The host answers for the address asked for (the reply's sender) to
	// the asker (its target): through the asker tenant's chain.
	is.rule(t, arpReplies, netHdr(24, 4, r0), vmap(is.set(t, mapARPFrom), r0))
	is.rule(t, arpReplies, drop)
}

func (is *isolation) inetChains() {
	t := is.inet
	c := is.conn
	filter := nftables.ChainTypeFilter
	bridge := ifnameKey(is.bridge)
	subnet := ip4(is.subnet.Addr())
	mask := net4Mask(is.subnet.Bits())
	ipv4 := ex(metaLoad(expr.MetaKeyNFPROTO, r0), eq(r0, []byte{unix.NFPROTO_IPV4}))
	notIPv4 := ex(metaLoad(expr.MetaKeyNFPROTO, r0), neq(r0, []byte{unix.NFPROTO_IPV4}), drop)

	pre := c.AddChain(&nftables.Chain{Name: "prerouting", Table: t, Type: filter,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityMangle})
	is.rule(t, pre, metaLoad(expr.MetaKeyIIFNAME, r0), neq(r0, bridge), accept)
	is.rule(t, pre, notIPv4...)
	is.rule(t, pre, cat(ipv4, ex(netHdr(12, 4, r0)), masked(r0, mask, subnet, expr.CmpOpNeq), ex(drop))...)
	is.rule(t, pre, cat(ipv4, ex(netHdr(16, 4, r0)), masked(r0, net4Mask(8), []byte{127, 0, 0, 0}, expr.CmpOpEq), ex(drop))...)

	input := c.AddChain(&nftables.Chain{Name: "input", Table: t, Type: filter,
		Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter})
	is.rule(t, input, metaLoad(expr.MetaKeyIIFNAME, r0), neq(r0, bridge), accept)
	is.rule(t, input, append(ctBits(expr.CtKeySTATE, ctStateEstablished|ctStateRelated), accept)...)
	is.rule(t, input, cat(ipv4, ex(
		netHdr(16, 4, r0), metaLoad(expr.MetaKeyL4PROTO, r1),
		payload(expr.PayloadBaseTransportHeader, 2, 2, r2),
		in(is.set(t, setDNS), r0), accept))...)
	is.rule(t, input, drop)

	egress := c.AddChain(&nftables.Chain{Name: "egress", Table: t})
	ingress := c.AddChain(&nftables.Chain{Name: "ingress", Table: t})
	fwd := c.AddChain(&nftables.Chain{Name: "forward", Table: t, Type: filter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter})
	is.rule(t, fwd, metaLoad(expr.MetaKeyIIFNAME, r0), eq(r0, bridge), jump(egress.Name))
	is.rule(t, fwd, metaLoad(expr.MetaKeyOIFNAME, r0), eq(r0, bridge), jump(ingress.Name))

	out := c.AddChain(&nftables.Chain{Name: "output", Table: t, Type: filter,
		Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityFilter})
	// Instances reach each other through the host, on the bridge they came
	// in by: the kernel would tell them to go direct, which they cannot.
	is.rule(t, out, cat(ipv4, ex(
		metaLoad(expr.MetaKeyOIFNAME, r0), eq(r0, bridge),
		metaLoad(expr.MetaKeyL4PROTO, r0), eq(r0, []byte{unix.IPPROTO_ICMP}),
		payload(expr.PayloadBaseTransportHeader, 0, 1, r0), eq(r0, []byte{5}), // redirect
		drop))...)

	// An instance that reached another's port published on a host address
	// (on this bridge) shows up as the gateway: the answer comes back
	// through the host without the two resolving each other's address,
	// which the bridge does not answer across tenants, and neither
	// learns the other's address.
	nat := c.AddChain(&nftables.Chain{Name: "postrouting", Table: t, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource})
	is.rule(t, nat, cat(ipv4,
		ex(netHdr(12, 4, r0)), masked(r0, mask, subnet, expr.CmpOpEq),
		ex(netHdr(16, 4, r0)), masked(r0, mask, subnet, expr.CmpOpEq),
		ctBits(expr.CtKeySTATUS, ctStatusDstNAT),
		ex(&expr.Masq{}))...)

	from := is.set(t, mapFrom)
	for _, ch := range []*nftables.Chain{egress, ingress} {
		is.rule(t, ch, notIPv4...)
		if ch == egress {
			// Both ways of a connection to a published port: see dnatMark.
			is.rule(t, ch, cat(ctBits(expr.CtKeySTATUS, ctStatusDstNAT), ex(
				metaLoad(expr.MetaKeyOIFNAME, r0), eq(r0, bridge),
				&expr.Meta{Key: expr.MetaKeyMARK, Register: r0},
				&expr.Bitwise{SourceRegister: r0, DestRegister: r0, Len: 4,
					Mask: binary.NativeEndian.AppendUint32(nil, ^uint32(dnatMark)), Xor: binary.NativeEndian.AppendUint32(nil, dnatMark)},
				&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: r0}))...)
		}
		is.rule(t, ch, append(ctBits(expr.CtKeySTATE, ctStateEstablished|ctStateRelated), accept)...)
		if ch == egress {
			is.rule(t, ch, cat(ex(netHdr(16, 4, r0)), masked(r0, net4Mask(16), []byte{169, 254, 0, 0}, expr.CmpOpEq), ex(drop))...)
		}
		is.rule(t, ch, append(ctBits(expr.CtKeySTATUS, ctStatusDstNAT), accept)...)
		is.rule(t, ch, netHdr(12, 4, r0), vmap(from, r0))
		is.rule(t, ch, drop)
	}
}

// tenantRules writes the chains of tenant t: from-T (inet), what t's
// instances may open connections to, and arp-T (bridge), whose addresses
// the host resolves for them. lets are the tenants that let t in, talks
// those t may talk with either way; allowList says t's egress is an
// allow list.
func (is *isolation) tenantRules(t string, lets, talks []string, allowList bool) {
	inet, br := is.inet, is.br
	from := &nftables.Chain{Name: fromChain(t), Table: inet}
	is.rule(inet, from, netHdr(16, 4, r0), in(is.set(inet, addrSet(t)), r0), accept)
	for _, u := range lets {
		is.rule(inet, from, netHdr(16, 4, r0), in(is.set(inet, addrSet(u)), r0), accept)
	}
	is.rule(inet, from, netHdr(16, 4, r0), in(is.set(inet, setNets), r0), drop)
	dest := ex(netHdr(16, 4, r0), metaLoad(expr.MetaKeyL4PROTO, r1), payload(expr.PayloadBaseTransportHeader, 2, 2, r2))
	is.rule(inet, from, append(dest, in(is.set(inet, denySet(t)), r0), drop)...)
	is.rule(inet, from, append(dest, in(is.set(inet, allowSet(t)), r0), accept)...)
	if allowList {
		is.rule(inet, from, drop)
	} else {
		is.rule(inet, from, accept)
	}

	arp := &nftables.Chain{Name: arpChain(t), Table: br}
	is.rule(br, arp, netHdr(14, 4, r0), in(is.set(br, addrSet(t)), r0), accept)
	for _, u := range talks {
		is.rule(br, arp, netHdr(14, 4, r0), in(is.set(br, addrSet(u)), r0), accept)
	}
	is.rule(br, arp, drop)
}

func net4Mask(bits int) []byte {
	m := ^uint32(0) << (32 - bits)
	if bits == 0 {
		m = 0
	}
	return binary.BigEndian.AppendUint32(nil, m)
}
