package integration

import (
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"

	"github.com/kanga-run/kanga/internal/agent/pool"
	"github.com/kanga-run/kanga/internal/agent/warm"
	"github.com/kanga-run/kanga/internal/testenv/harness"
)

// probeOK runs netprobe in the tenant's instance and reports whether
// every probe answered.
func (p *platform) probeOK(token, inst string, probes ...string) bool {
	r := p.asTenantQuiet(token, append([]string{"exec", inst, "netprobe", "-timeout", "1s"}, probes...)...)
	if r.code != 0 {
		return false
	}
	for _, l := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
		if f := strings.Fields(l); len(f) < 2 || f[1] != "ok" {
			return false
		}
	}
	return true
}

// TestTenantNetworkPolicy: an administrator changes a tenant's network
// policy with kanga tenant update and running instances follow within
// seconds: a denied destination, an allow list, a tenant let in (one
// way only), back to the default; a policy given at creation holds from
// the first instance; bad entries and non-administrators are refused.
func TestTenantNetworkPolicy(t *testing.T) {
	p := startPlatform(t)
	_, out := outsideNet(t, "10.235")
	outside := "tcp:" + out + ":7000"
	ta, tb := p.createTenant("pol-a"), p.createTenant("pol-b")
	tc := p.createTenant("pol-c", "--egress-deny", "0.0.0.0/0")
	img := netprobeImage(t)
	for _, tok := range []string{ta, tb, tc} {
		p.mustAs(tok, "image", "import", img)
	}
	p.mustAs(ta, "run", "-d", "--name", "a", "kanga.test/netprobe")
	p.mustAs(tb, "run", "-d", "--name", "b", "kanga.test/netprobe")
	p.mustAs(tc, "run", "-d", "--name", "c", "kanga.test/netprobe")
	a, b := p.runningIPAs(ta, "a"), p.runningIPAs(tb, "b")
	p.runningIPAs(tc, "c")
	toA, toB := "tcp:"+a.Status.IP+":80", "tcp:"+b.Status.IP+":80"

	within := func(what string, cond func() bool) {
		t.Helper()
		start := time.Now()
		p.eventually(what, 15*time.Second, cond)
		t.Logf("%s after %.1fs", what, time.Since(start).Seconds())
	}
	if !p.probeOK(ta, "a", outside) || !p.probeOK(tb, "b", outside) {
		t.Fatal("by default the instances do not reach the outside")
	}
	if p.probeOK(tc, "c", outside) {
		t.Error("pol-c, created with --egress-deny 0.0.0.0/0, reaches the outside")
	}
	if p.probeOK(tb, "b", toA) || p.probeOK(ta, "a", toB) {
		t.Fatal("by default the tenants reach each other")
	}

	p.must("tenant", "update", "pol-a", "--egress-deny", out+":7000/tcp")
	within("pol-a's denied destination to be cut off", func() bool { return !p.probeOK(ta, "a", outside) })
	if !p.probeOK(tb, "b", outside) {
		t.Error("pol-b lost the outside by pol-a's policy")
	}
	p.must("tenant", "update", "pol-a", "--egress-deny=", "--egress-allow", "192.0.2.0/24:443/tcp")
	if p.probeOK(ta, "a", outside) {
		t.Error("pol-a reaches a destination outside its allow list")
	}
	p.must("tenant", "update", "pol-a", "--egress-allow=")
	within("pol-a's outside to come back", func() bool { return p.probeOK(ta, "a", outside) })

	got := p.must("tenant", "update", "pol-a", "--ingress-from", "pol-b")
	if !strings.Contains(got, "ingress from:  pol-b") {
		t.Errorf("tenant update printed:\n%s", got)
	}
	within("pol-b to reach pol-a", func() bool { return p.probeOK(tb, "b", toA, "udp:"+a.Status.IP+":9") })
	if p.probeOK(ta, "a", toB) {
		t.Error("pol-a reaches pol-b, which did not let it in")
	}

	for _, c := range []struct {
		args []string
		msg  string
	}{
		{[]string{"--egress-deny", "example.com"}, "network.egressDeny[0]"},
		{[]string{"--ingress-from", "Bad_Name"}, "network.ingressFrom[0]"},
		{[]string{}, "nothing to change"},
	} {
		r := p.kanga(append([]string{"tenant", "update", "pol-a"}, c.args...)...)
		if r.code == 0 || !strings.Contains(r.stderr, c.msg) {
			t.Errorf("tenant update %v: exit %d, %q; want an error naming %s", c.args, r.code, r.stderr, c.msg)
		}
	}
	if r := p.asTenant(tb, "tenant", "update", "pol-b", "--egress-deny", "10.0.0.0/8"); r.code == 0 || !strings.Contains(r.stderr, "administrator") {
		t.Errorf("a tenant changed its own network policy: exit %d %s", r.code, r.stderr)
	}
}

// isolationState reads the bridge's isolation tables: the veths of the
// ports set and the addresses of each tenant's set.
func isolationState(t *testing.T, bridge string) (ports []string, addrs map[string][]string) {
	t.Helper()
	c, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	name := "kanga-" + bridge
	br := &nftables.Table{Name: name, Family: nftables.TableFamilyBridge}
	inet := &nftables.Table{Name: name, Family: nftables.TableFamilyINet}
	s, err := c.GetSetByName(br, "my_ports")
	if err != nil {
		t.Fatalf("isolation table of %s: %v", bridge, err)
	}
	els, err := c.GetSetElements(s)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range els {
		ports = append(ports, strings.TrimRight(string(e.Key), "\x00"))
	}
	slices.Sort(ports)
	addrs = map[string][]string{}
	sets, err := c.GetSets(inet)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range sets {
		ten, ok := strings.CutPrefix(s.Name, "a-")
		if !ok {
			continue
		}
		els, err := c.GetSetElements(s)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range els {
			addrs[ten] = append(addrs[ten], net.IP(e.Key).String())
		}
		slices.Sort(addrs[ten])
	}
	return ports, addrs
}

// TestIsolationSurvivesRestart: instances from the pool of network
// sandboxes, from a warm container and from a fresh sandbox are isolated
// by tenant; kanga up is killed with SIGKILL and started again: the
// adopted instances are isolated as before, and the tables hold exactly
// the ports of what is left (the unclaimed sandboxes and warm containers
// the restart destroyed are gone from them), with every tenant's
// addresses those of its running instances.
func TestIsolationSurvivesRestart(t *testing.T) {
	p := startWarmPlatform(t, "--pool-min", "2", "--pool-max", "3", "--warm-max", "1")
	ta, tb := p.createTenant("rs-a"), p.createTenant("rs-b")
	img := netprobeImage(t)
	for _, tok := range []string{ta, tb} {
		p.mustAs(tok, "image", "import", img)
	}
	p.eventually("2 pooled sandboxes", 60*time.Second, func() bool { return p.poolStatus().Ready == 2 })
	p.mustAs(ta, "run", "-d", "--name", "pooled", "kanga.test/netprobe")
	pooled := p.runningIPAs(ta, "pooled")
	if !pool.IsPoolID(p.netID(pooled.UID)) {
		t.Fatalf("pooled did not get a pooled sandbox (%s)", p.netID(pooled.UID))
	}
	p.mustAs(tb, "run", "-d", "--runtime", "crun", "--name", "first", "kanga.test/netprobe")
	p.runningIPAs(tb, "first")
	p.eventually("a warm container for rs-b and crun", 90*time.Second, func() bool {
		for _, k := range p.warmStatus().Keys {
			if k.Tenant == "rs-b" && k.Class == "crun" && k.Ready > 0 {
				return true
			}
		}
		return false
	})
	p.mustAs(tb, "run", "-d", "--runtime", "crun", "--name", "warm", "kanga.test/netprobe")
	claimed := p.runningIPAs(tb, "warm")
	if !strings.HasPrefix(p.warmOf(claimed.UID), warm.Prefix) {
		t.Fatalf("warm did not start in a warm container")
	}
	p.mustAs(ta, "run", "-d", "--name", "fresh", "-p", fmt.Sprintf("127.0.0.1:%d:80", harness.FreePort(t)), "kanga.test/netprobe")
	fresh := p.runningIPAs(ta, "fresh")
	first := p.runningIPAs(tb, "first")

	check := func(step string) {
		t.Helper()
		tcp := func(ip string) string { return "tcp:" + ip + ":80" }
		for _, c := range []struct {
			token, from, to string
			want            bool
		}{
			{ta, "pooled", fresh.Status.IP, true},
			{ta, "fresh", pooled.Status.IP, true},
			{tb, "warm", first.Status.IP, true},
			{tb, "first", claimed.Status.IP, true},
			{tb, "warm", pooled.Status.IP, false},
			{tb, "first", fresh.Status.IP, false},
			{ta, "pooled", claimed.Status.IP, false},
			{ta, "fresh", first.Status.IP, false},
		} {
			if got := p.probeOK(c.token, c.from, tcp(c.to)); got != c.want {
				t.Errorf("%s: %s -> %s: reached %v, want %v", step, c.from, c.to, got, c.want)
			}
		}
	}
	check("before the restart")

	p.crash()
	p.start()
	// The restarted agent destroys the unclaimed pool sandboxes and warm
	// containers in the background; wait for its pool to fill again.
	p.eventually("the pool refilled", 90*time.Second, func() bool { return p.poolStatus().Ready == 2 })
	check("after kill -9 and a restart")

	want := map[string][]string{"rs-a": {fresh.Status.IP, pooled.Status.IP}, "rs-b": {first.Status.IP, claimed.Status.IP}}
	for _, ips := range want {
		slices.Sort(ips)
	}
	p.eventually("the isolation tables to hold what runs", 60*time.Second, func() bool {
		ports, addrs := isolationState(t, p.bridge)
		ids, _ := os.ReadDir(p.netnsDir())
		if len(ports) != len(ids) {
			return false
		}
		for _, v := range ports {
			if _, err := netlink.LinkByName(v); err != nil {
				return false
			}
		}
		for ten, ips := range want {
			if !slices.Equal(addrs[ten], ips) {
				return false
			}
		}
		return true
	})
	ports, addrs := isolationState(t, p.bridge)
	t.Logf("after the restart: %d ports, addresses %v", len(ports), addrs)

	// An instance removed after the restart takes its entries with it.
	p.mustAs(ta, "rm", "-f", "fresh")
	p.eventually("fresh's address out of rs-a's set", 60*time.Second, func() bool {
		_, addrs := isolationState(t, p.bridge)
		return slices.Equal(addrs["rs-a"], []string{pooled.Status.IP})
	})
}
