package network

// Tenant isolation on the instance bridge, with nftables (two tables per
// bridge, named kanga-<bridge>, in the bridge and inet families; rules are
// fixed, per-instance and per-tenant facts are set elements).
//
// The bridge carries no frame from one instance to another: its forward
// hook drops every frame between two of our ports, broadcast included.
// Instances still reach each other, through the host: the bridge answers
// their ARP requests for other instances with its own address
// (proxy_arp_pvlan, the "private VLAN" setup of switches), so every packet
// between two instances, on this host or another, is routed by the host
// kernel and passes one place where it is checked with connection
// tracking: the inet forward hook. There an instance's packet goes
// through only if both ends' tenants may talk (the same tenant, or the
// destination tenant lets the source in), or it leaves the platform's
// instance networks and the tenant's egress policy allows it, or it
// answers a connection allowed before. The host's own services are closed
// to instances (the inet input hook drops whatever they start towards any
// host address, except DNS to the host's listed nameservers), as are
// loopback-published ports (127.0.0.0/8 is dropped before DNAT) and the
// link-local range with cloud metadata. Ports published on other host
// addresses stay reachable, as from anywhere.
//
// Anti-spoofing holds even for instances with CAP_NET_RAW: the bridge's
// prerouting hook, which runs before the bridge learns source MACs, lets
// a port send only IPv4 and ARP frames whose Ethernet source, IP source
// and ARP sender are that port's own MAC and address; everything else
// (IPv6, VLAN tags, other MACs, gratuitous ARP for another address) is
// dropped. So no instance can take over another's MAC in the bridge's
// forwarding table, or its address in the host's neighbour table.
//
// Why not a bridge per tenant: a pooled sandbox is set up before anyone
// knows its tenant, and a bridge per tenant would need a subnet per
// tenant per host (re-addressing on claim) and still the same anti-spoof
// and host rules. With one bridge, claiming a sandbox is one set element.
//
// Across hosts, the sending host decides (it knows its instance's tenant
// first-hand) and needs the destination's tenant: every agent learns the
// tenant of every instance address and every host's instance subnet from
// the control plane (View, kept current by package netview), as the nodes
// of a Kubernetes cluster learn pod identities for network policy. An
// address in a known instance subnet that no view names is refused, so a
// lagging view fails closed. Traffic between instance subnets is not
// masqueraded (masq.go), so the receiving host checks the source's tenant
// again; instances are reachable from outside the platform only through
// published ports.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/kanga-run/kanga/internal/model"
)

// isolationTable names the nftables tables (one per family) of a bridge,
// so several agents on one host keep their own.
func isolationTable(bridge string) string { return "kanga-" + bridge }

// Names of the sets, maps and chains in the tables; per tenant T there are
// an address set a-T, egress sets deny-T and allow-T and a chain from-T
// (inet), and a-T (local addresses) and arp-T (bridge). Tenant names are
// DNS labels, so they are safe in these names and an operator reading
// `nft list table inet kanga-kanga0` sees whose rules are whose.
const (
	setPorts   = "ports"    // bridge: ifname . mac . ip, each port's own addresses
	setMyPorts = "my_ports" // bridge: ifname of every port we attached
	mapARPFrom = "arp_from" // bridge: local ip -> jump arp-T of its tenant
	mapFrom    = "from"     // inet: instance ip (any host) -> jump from-T of its tenant
	setNets    = "nets"     // inet: the instance subnets of every host (intervals)
	setDNS     = "dns"      // inet: nameserver . proto . 53
)

func addrSet(tenant string) string   { return "a-" + tenant }
func denySet(tenant string) string   { return "deny-" + tenant }
func allowSet(tenant string) string  { return "allow-" + tenant }
func fromChain(tenant string) string { return "from-" + tenant }
func arpChain(tenant string) string  { return "arp-" + tenant }

// Register numbers of nftables expressions: 32-bit registers, so that
// values loaded one after another form a concatenated key.
const (
	r0 = unix.NFT_REG32_00 + iota
	r1
	r2
	r3
	r4
	r5
	r6
)

// ct state and status bits (linux/netfilter/nf_conntrack_common.h).
const (
	ctStateEstablished = 1 << 1
	ctStateRelated     = 1 << 2
	ctStatusDstNAT     = 1 << 5
)

// port is one attachment's place on the bridge: the host end of its veth
// and the MAC and address of the instance end.
type port struct {
	veth string
	mac  net.HardwareAddr
	ip   netip.Addr
}

// isolation keeps the nftables state of one bridge. Its methods are safe
// for concurrent use; each change is one netlink transaction, so the
// kernel never sees half of it.
type isolation struct {
	bridge  string
	subnet  netip.Prefix
	gateway netip.Addr

	mu      sync.Mutex
	conn    *nftables.Conn
	inet    *nftables.Table
	br      *nftables.Table
	sets    map[string]*nftables.Set // by "<family>/<name>"
	tenants map[string]bool          // tenants whose sets and chains exist

	ports map[string]port // by attachment id
	local map[netip.Addr]string
	view  View
	// remote is what the view put into the kernel: other hosts'
	// instance addresses and their tenants.
	remote map[netip.Addr]string
	// appliedPolicies and appliedSubnets print the view's policies and
	// subnets as last applied, to tell a view that changes only addresses.
	appliedPolicies, appliedSubnets string
	dns                             []netip.Addr
}

func newIsolation(c Config) (*isolation, error) {
	pfx, err := netip.ParsePrefix(c.Subnet)
	if err != nil {
		return nil, err
	}
	conn, err := nftables.New(nftables.AsLasting())
	if err != nil {
		return nil, fmt.Errorf("network: open nftables: %w", err)
	}
	name := isolationTable(c.Bridge)
	return &isolation{
		bridge: c.Bridge, subnet: pfx.Masked(), gateway: pfx.Masked().Addr().Next(),
		conn:  conn,
		inet:  &nftables.Table{Name: name, Family: nftables.TableFamilyINet},
		br:    &nftables.Table{Name: name, Family: nftables.TableFamilyBridge},
		ports: map[string]port{}, local: map[netip.Addr]string{}, remote: map[netip.Addr]string{},
	}, nil
}

// ifnameKey is an interface name as nftables keys it: 16 bytes, NUL padded.
func ifnameKey(name string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return b
}

func ip4(a netip.Addr) []byte { b := a.As4(); return b[:] }

// pad4 pads a concatenation field to the 32-bit register size.
func pad4(b []byte) []byte {
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

func portKey(p port) []byte {
	k := ifnameKey(p.veth)
	k = append(k, pad4(slices.Clone(p.mac))...)
	return append(k, ip4(p.ip)...)
}

var (
	typePort = nftables.MustConcatSetType(nftables.TypeIFName, nftables.TypeEtherAddr, nftables.TypeIPAddr)
	typeDest = nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeInetProto, nftables.TypeInetService)
)

// set returns the set (or map) name of table t, as added in this process;
// the kernel finds it by name, in the same transaction or a later one.
func (is *isolation) set(t *nftables.Table, name string) *nftables.Set {
	return is.sets[fmt.Sprintf("%d/%s", t.Family, name)]
}

func (is *isolation) addSet(s *nftables.Set) error {
	if err := is.conn.AddSet(s, nil); err != nil {
		return fmt.Errorf("network: isolation set %s: %w", s.Name, err)
	}
	is.sets[fmt.Sprintf("%d/%s", s.Table.Family, s.Name)] = s
	return nil
}

// rebuild replaces both tables with the full state, in one transaction:
// an agent that restarts (or crashed) never leaves a moment without
// rules, and rules of an older version are replaced.
func (is *isolation) rebuild() error {
	c := is.conn
	// add + delete + add: deleting a missing table would fail the batch.
	for _, t := range []*nftables.Table{is.inet, is.br} {
		c.AddTable(t)
		c.DelTable(t)
		c.AddTable(t)
	}
	is.sets = map[string]*nftables.Set{}
	is.tenants = map[string]bool{}
	is.appliedPolicies, is.appliedSubnets = fmt.Sprint(is.view.Tenants), fmt.Sprint(is.view.Subnets)
	err := is.baseSets()
	if err == nil {
		is.bridgeChains()
		is.inetChains()
		err = is.queueTenants()
	}
	if err == nil {
		var ports, myPorts []nftables.SetElement
		for _, p := range is.ports {
			ports = append(ports, nftables.SetElement{Key: portKey(p)})
			myPorts = append(myPorts, nftables.SetElement{Key: ifnameKey(p.veth)})
		}
		err = errors.Join(
			is.addElems(is.set(is.br, setPorts), ports),
			is.addElems(is.set(is.br, setMyPorts), myPorts))
		is.remote = is.remoteAddrs()
		for a, t := range is.local {
			err = errors.Join(err, is.queueAddr(a, t, true))
		}
		for a, t := range is.remote {
			err = errors.Join(err, is.queueAddr(a, t, false))
		}
	}
	if err := is.commit(err); err != nil {
		return fmt.Errorf("network: install tenant isolation tables %s: %w", is.inet.Name, err)
	}
	return nil
}

// commit sends what was queued as one transaction, or, when queueing
// failed (err), sends none of it.
func (is *isolation) commit(err error) error {
	if err != nil {
		// The library has no way to drop queued messages: a new
		// connection starts empty.
		_ = is.conn.CloseLasting()
		if c, cerr := nftables.New(nftables.AsLasting()); cerr == nil {
			is.conn = c
		}
		return err
	}
	return is.conn.Flush()
}

func (is *isolation) baseSets() error {
	for _, s := range []*nftables.Set{
		{Table: is.br, Name: setPorts, KeyType: typePort, Concatenation: true},
		{Table: is.br, Name: setMyPorts, KeyType: nftables.TypeIFName},
		{Table: is.br, Name: mapARPFrom, KeyType: nftables.TypeIPAddr, IsMap: true, DataType: nftables.TypeVerdict},
		{Table: is.inet, Name: mapFrom, KeyType: nftables.TypeIPAddr, IsMap: true, DataType: nftables.TypeVerdict},
		{Table: is.inet, Name: setNets, KeyType: nftables.TypeIPAddr, Interval: true},
		{Table: is.inet, Name: setDNS, KeyType: typeDest, Concatenation: true},
	} {
		if err := is.addSet(s); err != nil {
			return err
		}
	}
	return errors.Join(
		is.addElems(is.set(is.inet, setNets), is.netElems()),
		is.addElems(is.set(is.inet, setDNS), is.dnsElems()))
}

// knownTenants are the tenants the kernel needs objects for: those of
// addresses here and elsewhere, those with a policy and those a policy
// names.
func (is *isolation) knownTenants() []string {
	seen := map[string]bool{}
	for _, t := range is.local {
		seen[t] = true
	}
	for _, t := range is.view.Addresses {
		if t != "" {
			seen[t] = true
		}
	}
	for _, t := range is.view.Tenants {
		seen[t.Name] = true
		for _, f := range t.IngressFrom {
			seen[f] = true
		}
	}
	out := make([]string, 0, len(seen))
	for t := range seen {
		out = append(out, t)
	}
	slices.Sort(out)
	return out
}

// queueTenants makes sure every known tenant has its sets and chains, and
// (re)writes every tenant's rules and egress sets from the view.
func (is *isolation) queueTenants() error {
	tenants := is.knownTenants()
	for _, t := range tenants {
		if is.tenants[t] {
			continue
		}
		for _, s := range []*nftables.Set{
			{Table: is.inet, Name: addrSet(t), KeyType: nftables.TypeIPAddr},
			{Table: is.inet, Name: denySet(t), KeyType: typeDest, Interval: true, Concatenation: true},
			{Table: is.inet, Name: allowSet(t), KeyType: typeDest, Interval: true, Concatenation: true},
			{Table: is.br, Name: addrSet(t), KeyType: nftables.TypeIPAddr},
		} {
			if err := is.addSet(s); err != nil {
				return err
			}
		}
		is.conn.AddChain(&nftables.Chain{Name: fromChain(t), Table: is.inet})
		is.conn.AddChain(&nftables.Chain{Name: arpChain(t), Table: is.br})
		is.tenants[t] = true
	}
	policies := map[string]TenantPolicy{}
	for _, p := range is.view.Tenants {
		policies[p.Name] = p
	}
	// letsIn[t] are the tenants whose instances may open connections to
	// t's; talks[t] those t may exchange ARP with (either way).
	lets := map[string][]string{}
	talks := map[string][]string{}
	for _, p := range is.view.Tenants {
		for _, from := range p.IngressFrom {
			if from == p.Name {
				continue
			}
			lets[from] = append(lets[from], p.Name)
			talks[from] = append(talks[from], p.Name)
			talks[p.Name] = append(talks[p.Name], from)
		}
	}
	for _, t := range tenants {
		p := policies[t]
		is.conn.FlushChain(&nftables.Chain{Name: fromChain(t), Table: is.inet})
		is.conn.FlushChain(&nftables.Chain{Name: arpChain(t), Table: is.br})
		deny, allow := is.set(is.inet, denySet(t)), is.set(is.inet, allowSet(t))
		is.conn.FlushSet(deny)
		is.conn.FlushSet(allow)
		if err := errors.Join(
			is.addElems(deny, ruleElems(p.EgressDeny)),
			is.addElems(allow, ruleElems(p.EgressAllow))); err != nil {
			return err
		}
		is.tenantRules(t, slices.Compact(sortedCopy(lets[t])), slices.Compact(sortedCopy(talks[t])), len(p.EgressAllow) > 0)
	}
	return nil
}

func sortedCopy(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

// queueAddr puts address a of tenant t into the tenant's address set and
// the map that sends its traffic to the tenant's chain; local addresses go
// into the bridge table too, for its ARP answers.
func (is *isolation) queueAddr(a netip.Addr, t string, local bool) error {
	err := errors.Join(
		is.addElems(is.set(is.inet, addrSet(t)), []nftables.SetElement{{Key: ip4(a)}}),
		is.addElems(is.set(is.inet, mapFrom), []nftables.SetElement{{Key: ip4(a),
			VerdictData: &expr.Verdict{Kind: expr.VerdictJump, Chain: fromChain(t)}}}))
	if local {
		err = errors.Join(err,
			is.addElems(is.set(is.br, addrSet(t)), []nftables.SetElement{{Key: ip4(a)}}),
			is.addElems(is.set(is.br, mapARPFrom), []nftables.SetElement{{Key: ip4(a),
				VerdictData: &expr.Verdict{Kind: expr.VerdictJump, Chain: arpChain(t)}}}))
	}
	return err
}

func (is *isolation) queueDelAddr(a netip.Addr, t string, local bool) {
	_ = is.delElems(is.set(is.inet, addrSet(t)), []nftables.SetElement{{Key: ip4(a)}})
	_ = is.delElems(is.set(is.inet, mapFrom), []nftables.SetElement{{Key: ip4(a)}})
	if local {
		_ = is.delElems(is.set(is.br, addrSet(t)), []nftables.SetElement{{Key: ip4(a)}})
		_ = is.delElems(is.set(is.br, mapARPFrom), []nftables.SetElement{{Key: ip4(a)}})
	}
}

// addElems queues elements in messages of bounded size: one netlink
// message must fit the socket's buffer.
func (is *isolation) addElems(s *nftables.Set, elems []nftables.SetElement) error {
	if s == nil {
		return fmt.Errorf("network: isolation set missing")
	}
	for len(elems) > 0 {
		n := min(len(elems), 512)
		if err := is.conn.SetAddElements(s, elems[:n]); err != nil {
			return fmt.Errorf("network: isolation set %s: %w", s.Name, err)
		}
		elems = elems[n:]
	}
	return nil
}

func (is *isolation) delElems(s *nftables.Set, elems []nftables.SetElement) error {
	if s == nil {
		return fmt.Errorf("network: isolation set missing")
	}
	for len(elems) > 0 {
		n := min(len(elems), 512)
		if err := is.conn.SetDeleteElements(s, elems[:n]); err != nil {
			return fmt.Errorf("network: isolation set %s: %w", s.Name, err)
		}
		elems = elems[n:]
	}
	return nil
}

// remoteAddrs are the view's addresses outside this host's subnet (its
// own instances' tenants come from Assign only, never from the view).
func (is *isolation) remoteAddrs() map[netip.Addr]string {
	out := map[netip.Addr]string{}
	for a, t := range is.view.Addresses {
		if a.Is4() && !is.subnet.Contains(a) && t != "" {
			out[a] = t
		}
	}
	return out
}

func ruleElems(rules []model.EgressRule) []nftables.SetElement {
	var out []nftables.SetElement
	for _, b := range disjoint(rules) {
		key := func(a uint32, p uint8, port uint16) []byte {
			k := binary.BigEndian.AppendUint32(nil, a)
			k = append(k, p, 0, 0, 0)
			return append(binary.BigEndian.AppendUint16(k, port), 0, 0)
		}
		out = append(out, nftables.SetElement{
			Key:    key(b.addr[0], b.proto[0], b.port[0]),
			KeyEnd: key(b.addr[1], b.proto[1], b.port[1]),
		})
	}
	return out
}

// netElems are this host's subnet and the view's, merged, as interval
// set elements: the start, and the end marker one past the last address.
func (is *isolation) netElems() []nftables.SetElement {
	var out []nftables.SetElement
	for _, r := range mergePrefixes(append([]netip.Prefix{is.subnet}, is.view.Subnets...)) {
		out = append(out, nftables.SetElement{Key: binary.BigEndian.AppendUint32(nil, r[0])})
		if r[1] != ^uint32(0) {
			out = append(out, nftables.SetElement{Key: binary.BigEndian.AppendUint32(nil, r[1]+1), IntervalEnd: true})
		}
	}
	return out
}

func (is *isolation) dnsElems() []nftables.SetElement {
	var out []nftables.SetElement
	for _, a := range is.dns {
		for _, p := range []byte{protoTCP, protoUDP} {
			k := append(ip4(a), p, 0, 0, 0)
			out = append(out, nftables.SetElement{Key: append(binary.BigEndian.AppendUint16(k, 53), 0, 0)})
		}
	}
	return out
}

// addPort records a new attachment's port: from now on the port may send
// only with its own addresses, and never to another port.
func (is *isolation) addPort(id string, p port) error {
	is.mu.Lock()
	defer is.mu.Unlock()
	if old, ok := is.ports[id]; ok {
		if old.veth == p.veth && old.ip == p.ip && slices.Equal(old.mac, p.mac) {
			return nil
		}
		is.queueDelPort(old)
	}
	err := is.commit(errors.Join(
		is.addElems(is.set(is.br, setPorts), []nftables.SetElement{{Key: portKey(p)}}),
		is.addElems(is.set(is.br, setMyPorts), []nftables.SetElement{{Key: ifnameKey(p.veth)}})))
	if err != nil {
		return is.resync(fmt.Errorf("network: isolate port %s of %s: %w", p.veth, id, err))
	}
	is.ports[id] = p
	return nil
}

// removePort forgets an attachment's port and its address's tenant.
func (is *isolation) removePort(id string) error {
	is.mu.Lock()
	defer is.mu.Unlock()
	p, ok := is.ports[id]
	if !ok {
		return nil
	}
	is.queueDelPort(p)
	if err := is.conn.Flush(); err != nil {
		delete(is.ports, id)
		delete(is.local, p.ip)
		return is.resync(fmt.Errorf("network: remove port %s of %s: %w", p.veth, id, err))
	}
	delete(is.ports, id)
	delete(is.local, p.ip)
	return nil
}

func (is *isolation) queueDelPort(p port) {
	_ = is.delElems(is.set(is.br, setPorts), []nftables.SetElement{{Key: portKey(p)}})
	_ = is.delElems(is.set(is.br, setMyPorts), []nftables.SetElement{{Key: ifnameKey(p.veth)}})
	if t, ok := is.local[p.ip]; ok {
		is.queueDelAddr(p.ip, t, true)
	}
}

// assign makes address a of this host belong to tenant.
func (is *isolation) assign(a netip.Addr, tenant string) error {
	is.mu.Lock()
	defer is.mu.Unlock()
	old, had := is.local[a]
	if had && old == tenant {
		return nil
	}
	if had {
		is.queueDelAddr(a, old, true)
	}
	is.local[a] = tenant
	var err error
	if !is.tenants[tenant] {
		// New to this host: its objects first (and every tenant's rules,
		// which may name it).
		err = is.queueTenants()
	}
	if err := is.commit(errors.Join(err, is.queueAddr(a, tenant, true))); err != nil {
		return is.resync(fmt.Errorf("network: assign %s to tenant %s: %w", a, tenant, err))
	}
	return nil
}

// setView applies a new view: the remote addresses that changed, and the
// rules and sets derived from policies and subnets, rewritten (they are
// small).
func (is *isolation) setView(v View) error {
	is.mu.Lock()
	defer is.mu.Unlock()
	// Most views differ from the last in addresses only (an instance
	// started or went somewhere): then only those change in the kernel.
	policies, subnets := fmt.Sprint(v.Tenants), fmt.Sprint(v.Subnets)
	policiesChanged, subnetsChanged := policies != is.appliedPolicies, subnets != is.appliedSubnets
	is.view = v
	want := is.remoteAddrs()
	for a, t := range is.remote {
		if want[a] != t {
			is.queueDelAddr(a, t, false)
		}
	}
	var err error
	if policiesChanged || slices.ContainsFunc(is.knownTenants(), func(t string) bool { return !is.tenants[t] }) {
		err = is.queueTenants()
	}
	for a, t := range want {
		if is.remote[a] != t {
			err = errors.Join(err, is.queueAddr(a, t, false))
		}
	}
	if subnetsChanged {
		nets := is.set(is.inet, setNets)
		is.conn.FlushSet(nets)
		err = errors.Join(err, is.addElems(nets, is.netElems()))
	}
	is.remote, is.appliedPolicies, is.appliedSubnets = want, policies, subnets
	if err := is.commit(err); err != nil {
		return is.resync(fmt.Errorf("network: apply tenant network view: %w", err))
	}
	return nil
}

// resync rebuilds the tables from memory after a failed change, so that
// what the kernel holds and what this process believes stay one.
func (is *isolation) resync(cause error) error {
	if err := is.rebuild(); err != nil {
		return errors.Join(cause, err)
	}
	return cause
}

// remove deletes both tables (a missing one is fine).
func (is *isolation) remove() error {
	is.mu.Lock()
	defer is.mu.Unlock()
	return removeIsolationTables(is.conn, is.bridge)
}

func removeIsolationTables(c *nftables.Conn, bridge string) error {
	name := isolationTable(bridge)
	for _, fam := range []nftables.TableFamily{nftables.TableFamilyINet, nftables.TableFamilyBridge} {
		t := &nftables.Table{Name: name, Family: fam}
		c.AddTable(t)
		c.DelTable(t)
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("network: remove tenant isolation tables %s: %w", name, err)
	}
	return nil
}

// RemoveIsolation removes the tenant isolation tables of bridge and turns
// its proxy ARP off, whether or not instances are left: for cleaning up a
// host whose agent is gone for good (tests, decommissioning), as
// RemoveMasquerade does for the outbound NAT.
func RemoveIsolation(bridge string) error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("network: open nftables: %w", err)
	}
	if err := removeIsolationTables(c, bridge); err != nil {
		return err
	}
	resetBridgeSysctls(bridge)
	return nil
}

// prepareBridge creates the bridge the CNI plugin would (it takes an
// existing one as it is) and makes it answer instances' ARP requests for
// each other with its own address, at once (proxy_delay 0 skips the
// kernel's random wait of up to 0.8 s per request).
func prepareBridge(bridge string) error {
	if _, err := netlink.LinkByName(bridge); err != nil {
		var notFound netlink.LinkNotFoundError
		if !errors.As(err, &notFound) {
			return fmt.Errorf("network: look up bridge %s: %w", bridge, err)
		}
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: bridge, MTU: 1500, TxQLen: -1}}
		if err := netlink.LinkAdd(br); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("network: create bridge %s: %w", bridge, err)
		}
	}
	for path, val := range map[string]string{
		"/proc/sys/net/ipv4/conf/" + bridge + "/proxy_arp_pvlan": "1",
		"/proc/sys/net/ipv4/neigh/" + bridge + "/proxy_delay":    "0",
	} {
		if err := os.WriteFile(path, []byte(val), 0o644); err != nil {
			return fmt.Errorf("network: set %s: %w", filepath.Base(path), err)
		}
	}
	return nil
}

func resetBridgeSysctls(bridge string) {
	_ = os.WriteFile("/proc/sys/net/ipv4/conf/"+bridge+"/proxy_arp_pvlan", []byte("0"), 0o644)
}
