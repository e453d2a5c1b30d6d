package network

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	cnins "github.com/containernetworking/plugins/pkg/ns"
)

// A bridge and subnet of their own, so the tests never touch a running
// platform's kanga0 / 10.211.0.0/16.
const (
	testBridge  = "kangat0"
	testSubnet  = "10.213.0.0/24"
	testNetName = "kanga-test"
)

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces, a bridge and iptables rules")
	}
	if _, err := exec.LookPath("iptables-save"); err != nil {
		t.Skip("iptables-save not installed")
	}
}

// testConfig returns a config whose state and namespaces live in a temp dir.
func testConfig(t *testing.T) Config {
	t.Helper()
	dir := t.TempDir()
	return Config{
		StateDir:    filepath.Join(dir, "state"),
		NetNSDir:    filepath.Join(dir, "netns"),
		Bridge:      testBridge,
		Subnet:      testSubnet,
		NetworkName: testNetName,
	}
}

// newTestManager builds a Manager and removes the bridge when the test ends;
// rules and leases are each test's to release via Teardown.
func newTestManager(t *testing.T, cfg Config) *Manager {
	t.Helper()
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// After the tests' own teardowns (cleanups run last first), so
		// the subnet masquerade goes too.
		if err := m.Close(context.Background()); err != nil {
			t.Errorf("close: %v", err)
		}
		if err := exec.Command("ip", "link", "del", testBridge).Run(); err != nil {
			t.Logf("delete bridge %s: %v", testBridge, err)
		}
	})
	return m
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// listenInNetNS opens a TCP listener inside the namespace; a socket keeps the
// namespace it was created in, so it can be served from any goroutine.
func listenInNetNS(t *testing.T, nsPath string, port int) {
	t.Helper()
	var l net.Listener
	err := cnins.WithNetNSPath(nsPath, func(cnins.NetNS) error {
		var err error
		l, err = net.Listen("tcp", fmt.Sprintf("0.0.0.0:%d", port))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go serveHello(l, "hello from instance")
}

func serveHello(l net.Listener, msg string) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		io.WriteString(c, msg+"\n")
		c.Close()
	}
}

func readHello(dial func() (net.Conn, error)) (string, error) {
	c, err := dial()
	if err != nil {
		return "", err
	}
	defer c.Close()
	s, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSpace(s), err
}

func iptablesSave(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("iptables-save").Output()
	if err != nil {
		t.Fatalf("iptables-save: %v", err)
	}
	return string(out)
}

func TestSetupTeardown(t *testing.T) {
	requireRoot(t)
	ctx := context.Background()
	m := newTestManager(t, testConfig(t))

	id := fmt.Sprintf("kt-%d-a", os.Getpid())
	const containerPort = 8080
	anyPort, loPort := freePort(t), freePort(t)
	ports := []Port{
		{HostPort: anyPort, ContainerPort: containerPort},
		{HostIP: "127.0.0.1", HostPort: loPort, ContainerPort: containerPort, Protocol: "tcp"},
	}
	att, err := m.Setup(ctx, id, ports, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	tornDown := false
	t.Cleanup(func() {
		if !tornDown {
			m.Teardown(ctx, id, ports)
		}
	})

	if att.NetNS != m.NetNSPath(id) {
		t.Errorf("NetNS = %q, want %q", att.NetNS, m.NetNSPath(id))
	}
	_, subnet, _ := net.ParseCIDR(testSubnet)
	ip := net.ParseIP(att.IP)
	if ip == nil || !subnet.Contains(ip) {
		t.Fatalf("IP %q not in %s", att.IP, testSubnet)
	}
	if att.Gateway != "10.213.0.1" {
		t.Errorf("Gateway = %q, want 10.213.0.1", att.Gateway)
	}
	if st, err := statNetNS(att.NetNS); err != nil || st != netnsMounted {
		t.Fatalf("netns state = %v, %v; want mounted", st, err)
	}
	lease := filepath.Join(m.cfg.ipamDir(), testNetName, att.IP)
	if _, err := os.Stat(lease); err != nil {
		t.Errorf("host-local lease: %v", err)
	}
	if ids, err := m.List(); err != nil || len(ids) != 1 || ids[0] != id {
		t.Errorf("List = %v, %v; want [%s]", ids, err, id)
	}

	// Setup is idempotent.
	again, err := m.Setup(ctx, id, ports, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if *again != *att {
		t.Errorf("second Setup = %+v, want %+v", again, att)
	}

	listenInNetNS(t, att.NetNS, containerPort)
	for _, addr := range []string{
		net.JoinHostPort("127.0.0.1", strconv.Itoa(loPort)),   // published on 127.0.0.1
		net.JoinHostPort("127.0.0.1", strconv.Itoa(anyPort)),  // published on all addresses
		net.JoinHostPort(att.Gateway, strconv.Itoa(anyPort)),  // another host address
		net.JoinHostPort(att.IP, strconv.Itoa(containerPort)), // instance IP directly
	} {
		got, err := readHello(func() (net.Conn, error) { return net.Dial("tcp", addr) })
		if err != nil || got != "hello from instance" {
			t.Errorf("host -> %s: %q, %v", addr, got, err)
		}
	}

	// The instance reaches the host through its gateway, and its own
	// loopback is up.
	hostL, err := net.Listen("tcp", net.JoinHostPort(att.Gateway, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer hostL.Close()
	go serveHello(hostL, "hello from host")
	for addr, want := range map[string]string{
		hostL.Addr().String(): "hello from host",
		net.JoinHostPort("127.0.0.1", strconv.Itoa(containerPort)): "hello from instance",
	} {
		var got string
		err = cnins.WithNetNSPath(att.NetNS, func(cnins.NetNS) error {
			var err error
			got, err = readHello(func() (net.Conn, error) { return net.Dial("tcp", addr) })
			return err
		})
		if err != nil || got != want {
			t.Errorf("instance -> %s: %q, %v", addr, got, err)
		}
	}

	if rules := iptablesSave(t); !strings.Contains(rules, id) {
		t.Fatalf("expected iptables rules for %s after Setup", id)
	}
	if err := m.Teardown(ctx, id, ports); err != nil {
		t.Fatal(err)
	}
	tornDown = true
	assertReleased(t, m, id, att)

	// Teardown is idempotent.
	if err := m.Teardown(ctx, id, ports); err != nil {
		t.Errorf("second Teardown: %v", err)
	}
}

// assertReleased checks that nothing of the attachment remains.
func assertReleased(t *testing.T, m *Manager, id string, att *Attachment) {
	t.Helper()
	if _, err := os.Stat(att.NetNS); !os.IsNotExist(err) {
		t.Errorf("netns file still there: %v", err)
	}
	if _, err := os.Stat(filepath.Join(m.cfg.ipamDir(), testNetName, att.IP)); !os.IsNotExist(err) {
		t.Errorf("IP %s still leased: %v", att.IP, err)
	}
	rules := iptablesSave(t)
	for _, s := range []string{id, att.IP + "/", att.IP + ":"} {
		if strings.Contains(rules, s) {
			t.Errorf("iptables still mention %q:\n%s", s, rules)
		}
	}
	if ids, err := m.List(); err != nil || len(ids) != 0 {
		t.Errorf("List = %v, %v; want none", ids, err)
	}
}

func TestTwoAttachmentsDistinctIPs(t *testing.T) {
	requireRoot(t)
	ctx := context.Background()
	m := newTestManager(t, testConfig(t))

	ids := []string{fmt.Sprintf("kt-%d-b", os.Getpid()), fmt.Sprintf("kt-%d-c", os.Getpid())}
	atts := map[string]*Attachment{}
	for _, id := range ids {
		att, err := m.Setup(ctx, id, nil, Limits{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { m.Teardown(ctx, id, nil) })
		atts[id] = att
	}
	a, b := atts[ids[0]], atts[ids[1]]
	if a.IP == b.IP || a.NetNS == b.NetNS {
		t.Errorf("attachments collide: %+v and %+v", a, b)
	}
	if got, err := m.List(); err != nil || strings.Join(got, ",") != strings.Join(ids, ",") {
		t.Errorf("List = %v, %v; want %v", got, err, ids)
	}

	// Instances on the bridge reach each other.
	listenInNetNS(t, b.NetNS, 9000)
	var got string
	err := cnins.WithNetNSPath(a.NetNS, func(cnins.NetNS) error {
		var err error
		got, err = readHello(func() (net.Conn, error) { return net.Dial("tcp", net.JoinHostPort(b.IP, "9000")) })
		return err
	})
	if err != nil || got != "hello from instance" {
		t.Errorf("instance a -> b: %q, %v", got, err)
	}
}

// An agent that restarts builds a new Manager over the same StateDir; it
// must release what the old one set up, ports included, without being told
// the ports.
func TestTeardownAfterRestart(t *testing.T) {
	requireRoot(t)
	ctx := context.Background()
	cfg := testConfig(t)
	m1 := newTestManager(t, cfg)

	id := fmt.Sprintf("kt-%d-d", os.Getpid())
	ports := []Port{{HostIP: "127.0.0.1", HostPort: freePort(t), ContainerPort: 80}}
	att, err := m1.Setup(ctx, id, ports, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m1.Teardown(ctx, id, ports) })

	m2, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if ids, err := m2.List(); err != nil || len(ids) != 1 || ids[0] != id {
		t.Errorf("restarted List = %v, %v; want [%s]", ids, err, id)
	}
	if err := m2.Teardown(ctx, id, nil); err != nil {
		t.Fatal(err)
	}
	assertReleased(t, m2, id, att)
}

// If the namespace vanished behind the agent's back (reboot, manual
// cleanup), Teardown still releases the lease and every rule.
func TestTeardownMissingNetNS(t *testing.T) {
	requireRoot(t)
	ctx := context.Background()
	m := newTestManager(t, testConfig(t))

	id := fmt.Sprintf("kt-%d-e", os.Getpid())
	ports := []Port{{HostPort: freePort(t), ContainerPort: 80}}
	att, err := m.Setup(ctx, id, ports, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Teardown(ctx, id, ports) })
	if err := removeNetNS(att.NetNS); err != nil {
		t.Fatal(err)
	}
	if err := m.Teardown(ctx, id, nil); err != nil {
		t.Fatal(err)
	}
	assertReleased(t, m, id, att)
}

// Setup over a cached attachment whose namespace is gone starts afresh
// instead of returning a dead namespace path.
func TestSetupAfterNetNSLost(t *testing.T) {
	requireRoot(t)
	ctx := context.Background()
	m := newTestManager(t, testConfig(t))

	id := fmt.Sprintf("kt-%d-f", os.Getpid())
	att, err := m.Setup(ctx, id, nil, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Teardown(ctx, id, nil) })
	if err := removeNetNS(att.NetNS); err != nil {
		t.Fatal(err)
	}
	again, err := m.Setup(ctx, id, nil, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if st, err := statNetNS(again.NetNS); err != nil || st != netnsMounted {
		t.Fatalf("netns state = %v, %v; want mounted", st, err)
	}
	if again.IP != att.IP {
		// host-local hands out the next address, so the old one must be free.
		if _, err := os.Stat(filepath.Join(m.cfg.ipamDir(), testNetName, att.IP)); !os.IsNotExist(err) {
			t.Errorf("old IP %s still leased: %v", att.IP, err)
		}
	}
}

// TestMain puts back host-wide state the CNI plugins create on first use:
// portmap's shared CNI-HOSTPORT-* chains and the ip_forward sysctl the bridge
// plugin turns on. Both are restored only if they were absent before and
// nothing else (another CNI user on this host) has come to depend on them.
func TestMain(m *testing.M) {
	restore := func() {}
	if os.Geteuid() == 0 {
		restore = snapshotHostState()
	}
	code := m.Run()
	restore()
	os.Exit(code)
}

const ipForward = "/proc/sys/net/ipv4/ip_forward"

func snapshotHostState() (restore func()) {
	ipt := func(args ...string) (string, error) {
		out, err := exec.Command("iptables", append([]string{"-w", "-t", "nat"}, args...)...).Output()
		return string(out), err
	}
	_, err := ipt("-S", "CNI-HOSTPORT-DNAT")
	hadChains := err == nil
	fwd, _ := os.ReadFile(ipForward)

	return func() {
		nat, err := ipt("-S")
		if err != nil {
			return
		}
		// Any other CNI chain, or a rule in the DNAT chain, means someone
		// else is using CNI on this host right now.
		othersUseCNI := strings.Contains(nat, "-A CNI-HOSTPORT-DNAT")
		for _, line := range strings.Split(nat, "\n") {
			if strings.HasPrefix(line, "-N CNI-") && !strings.HasPrefix(line, "-N CNI-HOSTPORT-") {
				othersUseCNI = true
			}
		}
		if othersUseCNI {
			return
		}
		if !hadChains {
			for _, rule := range [][]string{
				{"PREROUTING", "-m", "addrtype", "--dst-type", "LOCAL", "-j", "CNI-HOSTPORT-DNAT"},
				{"OUTPUT", "-m", "addrtype", "--dst-type", "LOCAL", "-j", "CNI-HOSTPORT-DNAT"},
				{"POSTROUTING", "-m", "comment", "--comment", "CNI portfwd requiring masquerade", "-j", "CNI-HOSTPORT-MASQ"},
			} {
				// Concurrent portmap runs may have added a rule more than once.
				for i := 0; i < 100; i++ {
					if _, err := ipt(append([]string{"-D"}, rule...)...); err != nil {
						break
					}
				}
			}
			for _, c := range []string{"CNI-HOSTPORT-DNAT", "CNI-HOSTPORT-MASQ", "CNI-HOSTPORT-SETMARK"} {
				ipt("-F", c)
				ipt("-X", c)
			}
		}
		if strings.TrimSpace(string(fwd)) == "0" {
			os.WriteFile(ipForward, []byte("0\n"), 0o644)
		}
	}
}

// The agent starts instances concurrently; host-local's lock and portmap's
// iptables calls must cope.
func TestConcurrentSetupTeardown(t *testing.T) {
	requireRoot(t)
	ctx := context.Background()
	m := newTestManager(t, testConfig(t))

	const jump = "-A OUTPUT -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT"
	jumpsBefore := strings.Count(iptablesSave(t), jump)

	const n = 6
	type result struct {
		id  string
		att *Attachment
		err error
	}
	results := make(chan result, n)
	for i := range n {
		id := fmt.Sprintf("kt-%d-p%d", os.Getpid(), i)
		ports := []Port{{HostIP: "127.0.0.1", HostPort: freePort(t), ContainerPort: 80}}
		t.Cleanup(func() { m.Teardown(ctx, id, ports) })
		go func() {
			att, err := m.Setup(ctx, id, ports, Limits{})
			results <- result{id, att, err}
		}()
	}
	ips := map[string]string{}
	atts := map[string]*Attachment{}
	for range n {
		r := <-results
		if r.err != nil {
			t.Errorf("Setup %s: %v", r.id, r.err)
			continue
		}
		if other, dup := ips[r.att.IP]; dup {
			t.Errorf("%s and %s both got %s", r.id, other, r.att.IP)
		}
		ips[r.att.IP] = r.id
		atts[r.id] = r.att
	}

	// The shared jump rule is created once, not once per racing plugin.
	if got := strings.Count(iptablesSave(t), jump); got != max(jumpsBefore, 1) {
		t.Errorf("%d copies of %q, want %d", got, jump, max(jumpsBefore, 1))
	}

	errs := make(chan error, len(atts))
	for id := range atts {
		go func() { errs <- m.Teardown(ctx, id, nil) }()
	}
	for range atts {
		if err := <-errs; err != nil {
			t.Errorf("Teardown: %v", err)
		}
	}
	for id, att := range atts {
		assertReleased(t, m, id, att)
	}
}
