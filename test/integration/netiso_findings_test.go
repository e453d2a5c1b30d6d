package integration

import (
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kanga-run/kanga/internal/testenv"
)

// check is one expectation: script, run in a tenant's instance, exits 0
// (reached) or not.
type check struct {
	what   string
	token  string
	inst   string
	script string
	want   bool
}

// checkAll runs the checks in parallel and reports each that came out
// other than wanted.
func (p *platform) checkAll(step string, cs []check) {
	p.t.Helper()
	got := make([]bool, len(cs))
	var wg sync.WaitGroup
	for i, c := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got[i] = p.asTenantQuiet(c.token, "exec", c.inst, "sh", "-c", c.script).code == 0
		}()
	}
	wg.Wait()
	for i, c := range cs {
		if got[i] != c.want {
			p.t.Errorf("%s: %s (%s in %s): reached %v, want %v", step, c.what, c.script, c.inst, got[i], c.want)
		}
	}
}

// asTenantQuiet is asTenant for goroutines: it never fails the test.
func (p *platform) asTenantQuiet(token string, args ...string) result {
	r, _ := p.cli(2*time.Minute, []string{"KANGA_TOKEN=" + token}, nil, args...)
	return r
}

// nc connects with a short bound: a dropped SYN never answers.
// pingScript is a check script that pings ip through an ICMP datagram socket.
func pingScript(ip string) string {
	return fmt.Sprintf("netprobe -timeout 2s icmp:%s | grep -q '^icmp:%s ok'", ip, ip)
}

func nc(addr string) string {
	host, port, _ := net.SplitHostPort(addr)
	return fmt.Sprintf("nc -w 2 %s %s </dev/null", host, port)
}

// TestTenantsNetworkIsolated (issue 12, finding 2): on one bridge and
// subnet, tenant B's instance must not reach tenant A's by TCP or ICMP,
// and no instance reaches the host's services through the bridge
// gateway or another host address, nor a link-local (metadata) address;
// A's own instances reach each other as before.
func TestTenantsNetworkIsolated(t *testing.T) {
	p := startPlatform(t)
	ta, tb := p.createTenant("iso-a"), p.createTenant("iso-b")
	dir := testenv.Images(t)
	img := netprobeImage(t)
	for _, tok := range []string{ta, tb} {
		for _, f := range []string{filepath.Join(dir, "httpd.tar"), img} {
			p.mustAs(tok, "image", "import", f)
		}
	}
	// ICMP with netprobe's ping socket: instances have no NET_RAW for
	// busybox's raw-socket ping.
	p.mustAs(ta, "run", "-d", "--name", "web", "kanga.test/httpd")
	p.mustAs(ta, "run", "-d", "--name", "friend", "kanga.test/netprobe")
	p.mustAs(tb, "run", "-d", "--name", "stranger", "kanga.test/netprobe")
	web := p.runningIPAs(ta, "web")
	p.runningIPAs(ta, "friend")
	p.runningIPAs(tb, "stranger")

	onGateway := hostService(t, p.gateway())
	_, anyPort, _ := net.SplitHostPort(hostService(t, "0.0.0.0"))
	onHostIP := net.JoinHostPort(hostIP(t), anyPort)
	meta := metadataService(t)
	for _, a := range []string{onGateway, onHostIP, meta} {
		if c, err := net.DialTimeout("tcp", a, 5*time.Second); err != nil {
			t.Fatalf("control: the host does not reach %s: %v", a, err)
		} else {
			c.Close()
		}
	}
	httpGet := "timeout 5 wget -q -O - http://" + web.Status.IP + "/ | grep -q 'hello from kanga'"
	p.checkAll("isolation", []check{
		{"same tenant, HTTP", ta, "friend", httpGet, true},
		{"same tenant, ICMP", ta, "friend", pingScript(web.Status.IP), true},
		{"other tenant, HTTP", tb, "stranger", httpGet, false},
		{"other tenant, ICMP", tb, "stranger", pingScript(web.Status.IP), false},
		{"host service on the gateway", tb, "stranger", nc(onGateway), false},
		{"host service on the gateway, own tenant", ta, "friend", nc(onGateway), false},
		{"host service on a host address", tb, "stranger", nc(onHostIP), false},
		{"gateway, ICMP", tb, "stranger", pingScript(p.gateway()), false},
		{"link-local metadata", ta, "friend", nc(meta), false},
	})
}

// TestARPSpoofingHasNoEffect (issue 12, finding 3): an instance with
// CAP_NET_RAW sends gratuitous ARP (requests and replies) claiming
// another tenant's address, and frames from that instance's MAC: the
// host's neighbour entry and the bridge's forwarding entry of the victim
// stay the victim's, and the host's traffic keeps reaching the victim.
func TestARPSpoofingHasNoEffect(t *testing.T) {
	// NET_RAW is dropped by default: the attacker's tenant is allowed it,
	// the worst case.
	p := startPlatformWith(t, "--pool-max", "0", "--tenant-allowed-caps", "NET_RAW")
	ta, tb := p.createTenant("arp-a"), p.createTenant("arp-b")
	p.must("tenant", "security", "arp-b", "--allow-caps", "NET_RAW")
	img := netprobeImage(t)
	for _, tok := range []string{ta, tb} {
		p.mustAs(tok, "image", "import", img)
	}
	p.mustAs(ta, "run", "-d", "--name", "victim", "kanga.test/netprobe")
	p.mustAs(tb, "run", "-d", "--name", "attacker", "--cap-add", "NET_RAW", "kanga.test/netprobe")
	victim := p.runningIPAs(ta, "victim")
	p.runningIPAs(tb, "attacker")
	victimMAC, attackerMAC := p.instanceMAC(ta, "victim"), p.instanceMAC(tb, "attacker")
	hello := func() string {
		c, err := net.DialTimeout("tcp", net.JoinHostPort(victim.Status.IP, "80"), 3*time.Second)
		if err != nil {
			return err.Error()
		}
		defer c.Close()
		_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
		b := make([]byte, 64)
		n, _ := c.Read(b)
		return strings.TrimSpace(string(b[:n]))
	}
	if got := hello(); got != "hello from netprobe" {
		t.Fatalf("control: the host does not reach the victim: %s", got)
	}
	if got := neighbourMAC(t, p.bridge, victim.Status.IP); got != victimMAC {
		t.Fatalf("control: the host's neighbour entry for the victim is %q, want %s", got, victimMAC)
	}

	out := p.mustAs(tb, "exec", "attacker", "netprobe",
		"garp:"+victim.Status.IP,
		"spoofmac:"+strings.ReplaceAll(victimMAC, ":", "-")+":"+p.gateway()+":9")
	t.Logf("attacker:\n%s", out)
	if strings.Contains(out, " n/a ") {
		t.Skipf("the attacker has no CAP_NET_RAW, so it cannot send the frames (the anti-spoofing itself is tested with full capabilities in internal/agent/network TestIsolationOnHost):\n%s", out)
	}
	time.Sleep(500 * time.Millisecond)
	if got := neighbourMAC(t, p.bridge, victim.Status.IP); got != victimMAC {
		t.Errorf("after the gratuitous ARP the host's neighbour entry for the victim %s is %s (the attacker is %s), want the victim's %s",
			victim.Status.IP, got, attackerMAC, victimMAC)
	}
	if got := hello(); got != "hello from netprobe" {
		t.Errorf("after the spoofing the host no longer reaches the victim: %s", got)
	}
}
