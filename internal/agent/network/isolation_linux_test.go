package network

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	cnins "github.com/containernetworking/plugins/pkg/ns"
	"github.com/google/nftables"
	"github.com/vishvananda/netlink"

	"github.com/kanga-run/kanga/internal/model"
	"github.com/kanga-run/kanga/internal/testenv/rawnet"
)

// isoNet is a bridge and subnet of this test process's own (10.226.N.0/24
// and 10.227.N.0/24), so that runs of this package side by side, and a
// platform on the same host, never meet.
func isoNet(second bool) (bridge, subnet string) {
	n := os.Getpid()%250 + 1
	if second {
		return fmt.Sprintf("kisb%d", n), fmt.Sprintf("10.227.%d.0/24", n)
	}
	return fmt.Sprintf("kisa%d", n), fmt.Sprintf("10.226.%d.0/24", n)
}

// newIsoManager returns a Manager with tenant isolation on bridge and
// subnet; everything it installs is removed when the test ends. With
// ISO_OFF=1 in the environment isolation is off: every probe of these
// tests that must fail then succeeds (how they were checked).
func newIsoManager(t *testing.T, stateDir, bridge, subnet string) *Manager {
	t.Helper()
	cfg := Config{StateDir: stateDir, NetNSDir: filepath.Join(filepath.Dir(stateDir), "netns"),
		Bridge: bridge, Subnet: subnet, NetworkName: "kanga-iso", Isolation: os.Getenv("ISO_OFF") == ""}
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx := context.Background()
		if err := m.Close(ctx); err != nil {
			t.Errorf("close: %v", err)
		}
		if err := RemoveIsolation(bridge); err != nil {
			t.Error(err)
		}
		_ = RemoveMasquerade(ctx, bridge, subnet)
		_ = exec.Command("ip", "link", "del", bridge).Run()
	})
	return m
}

type member struct {
	id  string
	att *Attachment
}

func attach(t *testing.T, m *Manager, id, tenantName string) member {
	t.Helper()
	ctx := context.Background()
	att, err := m.Setup(ctx, id, nil, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := m.Teardown(context.Background(), id, nil); err != nil {
			t.Errorf("teardown %s: %v", id, err)
		}
	})
	if tenantName != "" {
		if err := m.Assign(ctx, id, tenantName); err != nil {
			t.Fatal(err)
		}
	}
	listenInNetNS(t, att.NetNS, 7000)
	return member{id: id, att: att}
}

// reaches dials from member (or the host, for nil) to addr with a short
// bound: a dropped SYN never answers, a working path answers at once.
func reaches(from *Attachment, addr string) bool {
	dial := func() error {
		c, err := net.DialTimeout("tcp", addr, 1500*time.Millisecond)
		if err == nil {
			c.Close()
		}
		return err
	}
	if from == nil {
		return dial() == nil
	}
	return cnins.WithNetNSPath(from.NetNS, func(cnins.NetNS) error { return dial() }) == nil
}

func at(m member, port int) string { return net.JoinHostPort(m.att.IP, strconv.Itoa(port)) }

// inNS runs fn with a packet socket on the instance's eth0.
func inNS(t *testing.T, att *Attachment, fn func(c *rawnet.Conn)) {
	t.Helper()
	err := cnins.WithNetNSPath(att.NetNS, func(cnins.NetNS) error {
		c, err := rawnet.Open("eth0")
		if err != nil {
			return err
		}
		defer c.Close()
		fn(c)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }

// arpResolves asks for ip from the instance's eth0 and reports the MAC
// that answered.
func arpResolves(t *testing.T, m member, ip string) (net.HardwareAddr, bool) {
	var mac net.HardwareAddr
	var ok bool
	inNS(t, m.att, func(c *rawnet.Conn) {
		req := rawnet.Ethernet(rawnet.Broadcast, c.MAC, rawnet.EtherARP,
			rawnet.ARP(1, c.MAC, addr(m.att.IP), make(net.HardwareAddr, 6), addr(ip)))
		for try := 0; try < 2 && !ok; try++ {
			if err := c.Send(req); err != nil {
				t.Fatal(err)
			}
			_, ok = c.Await(time.Second, func(f []byte) bool {
				sha, spa, isReply := rawnet.ARPReply(f)
				if isReply && spa == addr(ip) {
					mac = sha
					return true
				}
				return false
			})
		}
	})
	return mac, ok
}

// synAck sends a TCP SYN from the instance, addressed at IP level to
// dst:port and at Ethernet level to dmac, with the given source address,
// and reports whether a SYN-ACK came back.
func synAck(t *testing.T, m member, src, dst string, port uint16, dmac net.HardwareAddr) bool {
	var ok bool
	inNS(t, m.att, func(c *rawnet.Conn) {
		sport := uint16(40000 + os.Getpid()%20000)
		syn := rawnet.Ethernet(dmac, c.MAC, rawnet.EtherIPv4,
			rawnet.IPv4(addr(src), addr(dst), rawnet.ProtoTCP, rawnet.TCPSyn(addr(src), addr(dst), sport, port, 1)))
		if err := c.Send(syn); err != nil {
			t.Fatal(err)
		}
		_, ok = c.Await(1500*time.Millisecond, func(f []byte) bool {
			_, _, sp, dp, flags, isTCP := rawnet.TCPHeader(f)
			return isTCP && sp == port && dp == sport && rawnet.SynAck(flags)
		})
	})
	return ok
}

// udpRecorder listens on UDP port in the instance and returns a function
// listing the source addresses of what arrived so far.
func udpRecorder(t *testing.T, att *Attachment, port int) func() []string {
	t.Helper()
	var pc net.PacketConn
	err := cnins.WithNetNSPath(att.NetNS, func(cnins.NetNS) error {
		var err error
		pc, err = net.ListenPacket("udp4", fmt.Sprintf("0.0.0.0:%d", port))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	var mu sync.Mutex
	var from []string
	go func() {
		buf := make([]byte, 1500)
		for {
			_, a, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			mu.Lock()
			from = append(from, a.(*net.UDPAddr).IP.String())
			mu.Unlock()
		}
	}()
	return func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), from...)
	}
}

func bridgeMAC(t *testing.T, bridge string) net.HardwareAddr {
	l, err := netlink.LinkByName(bridge)
	if err != nil {
		t.Fatal(err)
	}
	return l.Attrs().HardwareAddr
}

// neighbour returns the host's neighbour entry for ip on bridge.
func neighbour(t *testing.T, bridge, ip string) net.HardwareAddr {
	l, err := netlink.LinkByName(bridge)
	if err != nil {
		t.Fatal(err)
	}
	ns, err := netlink.NeighList(l.Attrs().Index, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range ns {
		if n.IP.String() == ip {
			return n.HardwareAddr
		}
	}
	return nil
}

func instanceMAC(t *testing.T, att *Attachment) net.HardwareAddr {
	var mac net.HardwareAddr
	err := cnins.WithNetNSPath(att.NetNS, func(cnins.NetNS) error {
		ifi, err := net.InterfaceByName("eth0")
		if err == nil {
			mac = ifi.HardwareAddr
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return mac
}

// TestIsolationOnHost: instances of two tenants on one bridge. Same-tenant
// TCP and ARP work (through the host); cross-tenant, unclaimed and host
// traffic does not; loopback-published ports are out of reach while a
// port published on every address is not; spoofed ARP, IP and MAC go
// nowhere, although the test sends them with every capability.
func TestIsolationOnHost(t *testing.T) {
	requireRoot(t)
	bridge, subnet := isoNet(false)
	m := newIsoManager(t, filepath.Join(t.TempDir(), "state"), bridge, subnet)
	pid := os.Getpid()
	a1 := attach(t, m, fmt.Sprintf("iso-%d-a1", pid), "a")
	a2 := attach(t, m, fmt.Sprintf("iso-%d-a2", pid), "a")
	b1 := attach(t, m, fmt.Sprintf("iso-%d-b1", pid), "b")
	pooled := attach(t, m, fmt.Sprintf("iso-%d-p1", pid), "")
	gw := a1.att.Gateway

	hostL, err := net.Listen("tcp", net.JoinHostPort(gw, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer hostL.Close()
	go serveHello(hostL, "host")

	for _, c := range []struct {
		name string
		from *Attachment
		to   string
		want bool
	}{
		{"same tenant", a1.att, at(a2, 7000), true},
		{"same tenant back", a2.att, at(a1, 7000), true},
		{"to another tenant", a1.att, at(b1, 7000), false},
		{"from another tenant", b1.att, at(a1, 7000), false},
		{"from an unclaimed sandbox", pooled.att, at(a1, 7000), false},
		{"to an unclaimed sandbox", a1.att, at(pooled, 7000), false},
		{"to a host service on the gateway", a1.att, hostL.Addr().String(), false},
		{"host to instance", nil, at(b1, 7000), true},
	} {
		if got := reaches(c.from, c.to); got != c.want {
			t.Errorf("%s (%s): reached %v, want %v", c.name, c.to, got, c.want)
		}
	}

	brMAC := bridgeMAC(t, bridge)
	if mac, ok := arpResolves(t, a1, a2.att.IP); !ok || mac.String() != brMAC.String() {
		t.Errorf("a1's ARP for a2: answered %v by %v, want the bridge %v", ok, mac, brMAC)
	}
	if mac, ok := arpResolves(t, a1, b1.att.IP); ok {
		t.Errorf("a1's ARP for another tenant's b1 was answered by %v", mac)
	}

	// Spoofing, with a packet socket (what CAP_NET_RAW allows).
	b1MAC := instanceMAC(t, b1.att)
	if !reaches(nil, at(b1, 7000)) || neighbour(t, bridge, b1.att.IP).String() != b1MAC.String() {
		t.Fatalf("the host has no neighbour entry for b1 to protect")
	}
	inNS(t, a1.att, func(c *rawnet.Conn) {
		for range 3 {
			// Gratuitous ARP reply and request claiming b1's address.
			for _, op := range []uint16{2, 1} {
				f := rawnet.Ethernet(rawnet.Broadcast, c.MAC, rawnet.EtherARP,
					rawnet.ARP(op, c.MAC, addr(b1.att.IP), rawnet.Broadcast, addr(b1.att.IP)))
				if err := c.Send(f); err != nil {
					t.Fatal(err)
				}
			}
			// A frame from b1's MAC, to move it to a1's port in the bridge.
			f := rawnet.Ethernet(brMAC, b1MAC, rawnet.EtherIPv4,
				rawnet.IPv4(addr(b1.att.IP), addr(gw), rawnet.ProtoUDP, rawnet.UDP(addr(b1.att.IP), addr(gw), 9, 9, nil)))
			if err := c.Send(f); err != nil {
				t.Fatal(err)
			}
		}
	})
	time.Sleep(200 * time.Millisecond)
	if got := neighbour(t, bridge, b1.att.IP); got.String() != b1MAC.String() {
		t.Errorf("after a1's gratuitous ARP, the host's neighbour entry for b1 is %v, want b1's %v", got, b1MAC)
	}
	if !reaches(nil, at(b1, 7000)) {
		t.Errorf("after a1's spoofing, the host no longer reaches b1")
	}
	// UDP with a forged source address: a2 (same tenant, which a1 may
	// reach) records who sent what; only a1's own address may arrive.
	got := udpRecorder(t, a2.att, 7001)
	inNS(t, a1.att, func(c *rawnet.Conn) {
		for _, src := range []string{b1.att.IP, pooled.att.IP, a1.att.IP} {
			f := rawnet.Ethernet(brMAC, c.MAC, rawnet.EtherIPv4,
				rawnet.IPv4(addr(src), addr(a2.att.IP), rawnet.ProtoUDP, rawnet.UDP(addr(src), addr(a2.att.IP), 7001, 7001, []byte("from "+src))))
			if err := c.Send(f); err != nil {
				t.Fatal(err)
			}
		}
	})
	time.Sleep(300 * time.Millisecond)
	if senders := got(); len(senders) != 1 || senders[0] != a1.att.IP {
		t.Errorf("a2 received UDP from %v; want only a1's own %s (the forged sources dropped)", senders, a1.att.IP)
	}
	if !synAck(t, a1, a1.att.IP, a2.att.IP, 7000, brMAC) {
		t.Errorf("control: a1's own hand-made SYN to a2 got no answer")
	}
	if synAck(t, a1, a1.att.IP, b1.att.IP, 7000, brMAC) || synAck(t, a1, a1.att.IP, b1.att.IP, 7000, b1MAC) {
		t.Errorf("a1's hand-made SYN reached b1 (routed or bridged)")
	}
}

// TestIsolationPublishedPorts: a port published on 127.0.0.1 is out of
// instances' reach, even with packets addressed to 127.0.0.1 by hand
// (portmap sets route_localnet on the bridge for the host's own use);
// a port published on every address is reachable through the gateway, as
// from anywhere; link-local metadata is not.
func TestIsolationPublishedPorts(t *testing.T) {
	requireRoot(t)
	bridge, subnet := isoNet(false)
	m := newIsoManager(t, filepath.Join(t.TempDir(), "state"), bridge, subnet)
	ctx := context.Background()
	pid := os.Getpid()
	loPort, anyPort := freePort(t), freePort(t)
	id := fmt.Sprintf("iso-%d-web", pid)
	att, err := m.Setup(ctx, id, []Port{
		{HostIP: "127.0.0.1", HostPort: loPort, ContainerPort: 7000},
		{HostPort: anyPort, ContainerPort: 7000},
	}, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = m.Teardown(context.Background(), id, []Port{
			{HostIP: "127.0.0.1", HostPort: loPort, ContainerPort: 7000}, {HostPort: anyPort, ContainerPort: 7000}})
	})
	if err := m.Assign(ctx, id, "a"); err != nil {
		t.Fatal(err)
	}
	listenInNetNS(t, att.NetNS, 7000)
	b := attach(t, m, fmt.Sprintf("iso-%d-b", pid), "b")
	if !reaches(nil, net.JoinHostPort("127.0.0.1", strconv.Itoa(loPort))) {
		t.Fatal("control: the host does not reach the port it published on 127.0.0.1")
	}
	brMAC := bridgeMAC(t, bridge)
	if synAck(t, b, b.att.IP, "127.0.0.1", uint16(loPort), brMAC) {
		t.Errorf("another tenant's instance reached a port published on 127.0.0.1")
	}
	if !reaches(b.att, net.JoinHostPort(b.att.Gateway, strconv.Itoa(anyPort))) {
		t.Errorf("a port published on every host address is not reachable through the gateway")
	}
	// A link-local address of the test's own (never the real metadata
	// service of the machine), routed to a namespace standing for it.
	meta := linkLocal(t)
	if !reaches(nil, meta) {
		t.Fatalf("control: the host does not reach %s", meta)
	}
	if reaches(b.att, meta) {
		t.Errorf("an instance reached the link-local (metadata) address %s", meta)
	}
}

// linkLocal makes a link-local address, 169.254.N.10, in a namespace of
// its own with a route from the host, and returns it with a listening
// port: a stand-in for a cloud metadata service.
func linkLocal(t *testing.T) string {
	t.Helper()
	n := os.Getpid()%250 + 1
	ns, _, hostVeth := outsideNS(t, fmt.Sprintf("kill%d", n), fmt.Sprintf("10.229.%d", n))
	a := fmt.Sprintf("169.254.%d.10", n)
	if out, err := exec.Command("nsenter", "--net="+ns, "ip", "addr", "add", a+"/32", "dev", "eth0").CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if out, err := exec.Command("ip", "route", "add", a+"/32", "dev", hostVeth).CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "route", "del", a+"/32", "dev", hostVeth).Run() })
	return net.JoinHostPort(a, "7000")
}

// outside is a network namespace standing for the world beyond the host,
// joined by a veth of this process's own.
func outside(t *testing.T) (nsPath, peer string) {
	t.Helper()
	n := os.Getpid()%250 + 1
	nsPath, peer, _ = outsideNS(t, fmt.Sprintf("kiso%d", n), fmt.Sprintf("10.228.%d", n))
	return nsPath, peer
}

// outsideNS makes a namespace joined to the host by veth hostVeth, with
// net.1 on the host side and net.2 inside (default route to the host),
// and a listener on port 7000 inside.
func outsideNS(t *testing.T, hostVeth, netPrefix string) (nsPath, peer, veth string) {
	t.Helper()
	hostAddr, peer := netPrefix+".1", netPrefix+".2"
	nsPath = filepath.Join(t.TempDir(), hostVeth)
	if err := createNetNS(nsPath); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = exec.Command("ip", "link", "del", hostVeth).Run()
		_ = removeNetNS(nsPath)
	})
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
	run("link", "add", hostVeth, "type", "veth", "peer", "name", "eth0", "netns", nsPath)
	run("addr", "add", hostAddr+"/24", "dev", hostVeth)
	run("link", "set", hostVeth, "up")
	if out, err := exec.Command("nsenter", "--net="+nsPath, "sh", "-c",
		"ip addr add "+peer+"/24 dev eth0 && ip link set eth0 up && ip route add default via "+hostAddr).CombinedOutput(); err != nil {
		t.Fatalf("configure outside: %v: %s", err, out)
	}
	listenInNetNS(t, nsPath, 7000)
	return nsPath, peer, hostVeth
}

func rules(t *testing.T, s ...string) []model.EgressRule {
	t.Helper()
	var out []model.EgressRule
	for _, x := range s {
		r, err := model.ParseEgressRule(x)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	return out
}

// TestIsolationPolicy: egress deny and allow lists per tenant, ingress
// from a named tenant (one way), and a second host's bridge: same-tenant
// instances reach each other across, others and unknown addresses of the
// other host's subnet do not.
func TestIsolationPolicy(t *testing.T) {
	requireRoot(t)
	ctx := context.Background()
	br1, sub1 := isoNet(false)
	br2, sub2 := isoNet(true)
	dir := t.TempDir()
	m1 := newIsoManager(t, filepath.Join(dir, "h1", "state"), br1, sub1)
	m2 := newIsoManager(t, filepath.Join(dir, "h2", "state"), br2, sub2)
	_, out := outside(t)
	pid := os.Getpid()
	a1 := attach(t, m1, fmt.Sprintf("iso-%d-a1", pid), "a")
	b1 := attach(t, m1, fmt.Sprintf("iso-%d-b1", pid), "b")
	c1 := attach(t, m1, fmt.Sprintf("iso-%d-c1", pid), "c")
	a2 := attach(t, m2, fmt.Sprintf("iso-%d-a2", pid), "a")
	b2 := attach(t, m2, fmt.Sprintf("iso-%d-b2", pid), "b")
	outAddr := net.JoinHostPort(out, "7000")

	check := func(step string, cases []struct {
		name string
		from *Attachment
		to   string
		want bool
	}) {
		t.Helper()
		var wg sync.WaitGroup
		got := make([]bool, len(cases))
		for i, c := range cases {
			wg.Add(1)
			go func() { defer wg.Done(); got[i] = reaches(c.from, c.to) }()
		}
		wg.Wait()
		for i, c := range cases {
			if got[i] != c.want {
				t.Errorf("%s: %s (%s): reached %v, want %v", step, c.name, c.to, got[i], c.want)
			}
		}
	}
	type cs = []struct {
		name string
		from *Attachment
		to   string
		want bool
	}
	// No view yet: the other host's subnet is unknown, hence the outside
	// for now; nothing of it is an instance anyone may reach.
	view := func(tenants ...TenantPolicy) View {
		return View{Tenants: tenants, Subnets: []netip.Prefix{netip.MustParsePrefix(sub1), netip.MustParsePrefix(sub2)},
			Addresses: map[netip.Addr]string{
				addr(a1.att.IP): "a", addr(b1.att.IP): "b", addr(c1.att.IP): "c",
				addr(a2.att.IP): "a", addr(b2.att.IP): "b",
			}}
	}
	for _, m := range []*Manager{m1, m2} {
		if err := m.SetView(ctx, view()); err != nil {
			t.Fatal(err)
		}
	}
	check("default", cs{
		{"to the outside", a1.att, outAddr, true},
		{"same tenant across hosts", a1.att, at(a2, 7000), true},
		{"same tenant across hosts, back", a2.att, at(a1, 7000), true},
		{"other tenant across hosts", b1.att, at(a2, 7000), false},
		{"other tenant across hosts, back", a2.att, at(b1, 7000), false},
	})
	// An address of the other subnet that no view names: refused.
	if err := m1.SetView(ctx, View{Subnets: view().Subnets, Addresses: map[netip.Addr]string{addr(a1.att.IP): "a"}}); err != nil {
		t.Fatal(err)
	}
	check("unknown remote", cs{{"to an instance not in the view", a1.att, at(a2, 7000), false}})

	pol := view(
		TenantPolicy{Name: "a", EgressDeny: rules(t, out+":7000/tcp")},
		TenantPolicy{Name: "b", EgressAllow: rules(t, "192.0.2.0/24", out+"/32:6000-6999")},
		TenantPolicy{Name: "c", IngressFrom: []string{"b"}, EgressDeny: rules(t, "10.228.0.0/16", out+":7000")},
	)
	for _, m := range []*Manager{m1, m2} {
		if err := m.SetView(ctx, pol); err != nil {
			t.Fatal(err)
		}
	}
	check("policies", cs{
		{"a: denied port", a1.att, outAddr, false},
		{"b: not on the allow list", b1.att, outAddr, false},
		{"c: denied, overlapping rules", c1.att, outAddr, false},
		{"b into c, which lets b in", b1.att, at(c1, 7000), true},
		{"c into b, which does not let c in", c1.att, at(b1, 7000), false},
		{"a into c", a1.att, at(c1, 7000), false},
		{"same tenant across hosts still", a2.att, at(a1, 7000), true},
	})
	pol.Tenants[1].EgressAllow = rules(t, out+":7000")
	if err := m1.SetView(ctx, pol); err != nil {
		t.Fatal(err)
	}
	check("allow list changed", cs{{"b: now on its allow list", b1.att, outAddr, true}})

	// A restarted agent (a new Manager on the same state) keeps all of it.
	m1b, err := New(m1.cfg)
	if err != nil {
		t.Fatal(err)
	}
	check("after restart", cs{
		{"a: denied port", a1.att, outAddr, false},
		{"b into c", b1.att, at(c1, 7000), true},
		{"a into b", a1.att, at(b1, 7000), false},
		{"host to a", nil, at(a1, 7000), true},
	})
	_ = m1b
}

// TestIsolationCleanup: the tables are named after the bridge, so two
// hosts' coexist, and Close removes them once no attachment is left.
func TestIsolationCleanup(t *testing.T) {
	requireRoot(t)
	bridge, subnet := isoNet(false)
	m := newIsoManager(t, filepath.Join(t.TempDir(), "state"), bridge, subnet)
	c, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	has := func() []string {
		ts, err := c.ListTables()
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, tb := range ts {
			if tb.Name == isolationTable(bridge) {
				names = append(names, fmt.Sprint(tb.Family))
			}
		}
		return names
	}
	if got := has(); len(got) != 2 {
		t.Fatalf("isolation tables of %s: %v, want inet and bridge", bridge, got)
	}
	id := fmt.Sprintf("iso-%d-x", os.Getpid())
	if _, err := m.Setup(context.Background(), id, nil, Limits{}); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := has(); len(got) != 2 {
		t.Errorf("Close with an attachment left removed the tables: %v", got)
	}
	if err := m.Teardown(context.Background(), id, nil); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := has(); len(got) != 0 {
		t.Errorf("tables left after the last attachment went and Close: %v", got)
	}
	if b, _ := os.ReadFile("/proc/sys/net/ipv4/conf/" + bridge + "/proxy_arp_pvlan"); strings.TrimSpace(string(b)) != "0" {
		t.Errorf("proxy_arp_pvlan of %s left at %q", bridge, b)
	}
	// Turning isolation off removes what an earlier run left.
	cfg := m.cfg
	if _, err := New(cfg); err != nil {
		t.Fatal(err)
	}
	if got := has(); len(got) != 2 {
		t.Fatalf("after a new Manager with isolation: tables %v", got)
	}
	cfg.Isolation = false
	if _, err := New(cfg); err != nil {
		t.Fatal(err)
	}
	if got := has(); len(got) != 0 {
		t.Errorf("a Manager without isolation left the tables of an earlier one: %v", got)
	}
}
