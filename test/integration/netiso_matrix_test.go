package integration

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kanga-run/kanga/internal/testenv/harness"
)

// mxInst is one instance of the matrix.
type mxInst struct {
	name, tenant, token, host, runtime string
	ip                                 string
	gateway                            string
}

func (i mxInst) short() string {
	return fmt.Sprintf("%s/%s/%s", strings.TrimPrefix(i.tenant, "mx-"), i.host, i.runtime)
}

// importAs imports the archive as the tenant until every agent holds it
// for the tenant (a host that joined a moment ago may not be in the
// server's directory yet).
func (p *hostPool) importAs(token, tenantName, archive, ref string) {
	p.t.Helper()
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
		p.mustAs(token, "image", "import", archive)
		missing := false
		for _, a := range p.agents {
			ok := false
			for _, l := range strings.Split(a.ctrOut("images", "ls"), "\n") {
				if strings.HasPrefix(l, tenantName+"@"+ref) { // the tenant's record
					ok = true
				}
			}
			missing = missing || !ok
		}
		if !missing {
			return
		}
	}
	p.t.Fatalf("not every host has %s for tenant %s after 60s", ref, tenantName)
}

// TestIsolationMatrix: two tenants, two agents, runc, crun and gVisor:
// twelve instances. From each, in parallel inside one netprobe run, TCP,
// UDP and ICMP to every other instance and ARP to those on its bridge,
// then the host's services (its bridge gateway and the other agent's, a
// host address, a port published on 127.0.0.1 reached by a hand-made SYN,
// a link-local metadata stand-in), and attacks: UDP with a forged source
// to an instance of its own tenant, gratuitous ARP for another tenant's
// address, broadcast. Every probe between the same tenant's instances
// must succeed, every other must fail. gVisor's netstack has no packet
// sockets: what needs one is "n/a" there (the attack cannot be sent).
// The table is logged.
func TestIsolationMatrix(t *testing.T) {
	// The worst case: both tenants may add NET_RAW (dropped by default),
	// so that their instances can send hand-made frames.
	rawOK := []string{"--tenant-allowed-caps", "NET_RAW"}
	p := startPoolWith(t, map[string]string{"h1": "z1", "h2": "z2"}, rawOK, func(p *hostPool) { p.agentArgs = rawOK })
	classes := []string{"runc", "crun", "gvisor"}
	offered := map[string]bool{}
	for _, h := range p.hosts() {
		for _, c := range h.RuntimeClasses {
			offered[c] = true
		}
	}
	for _, c := range classes {
		if !offered[c] {
			t.Skipf("the hosts do not offer %s (gVisor needs scripts/install-runsc.sh)", c)
		}
	}
	tokens := map[string]string{}
	img := netprobeImage(t)
	for _, n := range []string{"mx-a", "mx-b"} {
		tokens[n] = p.createTenant(n)
		p.must("tenant", "security", n, "--allow-caps", "NET_RAW")
		p.importAs(tokens[n], n, img, "kanga.test/netprobe")
	}
	zones := map[string]string{"h1": "z1", "h2": "z2"}
	var insts []*mxInst
	for _, ten := range []string{"mx-a", "mx-b"} {
		for _, h := range []string{"h1", "h2"} {
			for _, rt := range classes {
				insts = append(insts, &mxInst{name: fmt.Sprintf("%s-%s-%s", strings.TrimPrefix(ten, "mx-"), h, rt),
					tenant: ten, token: tokens[ten], host: h, runtime: rt})
			}
		}
	}
	// A port published on 127.0.0.1 of each host, by tenant a.
	loPort := map[string]int{}
	for _, h := range []string{"h1", "h2"} {
		loPort[h] = harness.FreePort(t)
		p.mustAs(tokens["mx-a"], "run", "-d", "--name", "pub-"+h, "--host-selector", "zone="+zones[h],
			"-p", fmt.Sprintf("127.0.0.1:%d:80", loPort[h]), "kanga.test/netprobe")
	}
	var wg sync.WaitGroup
	errs := make([]string, len(insts))
	for i, in := range insts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := p.asTenantQuiet(in.token, "run", "-d", "--name", in.name, "--runtime", in.runtime,
				"--host-selector", "zone="+zones[in.host], "--cap-add", "NET_RAW", "kanga.test/netprobe")
			if r.code != 0 {
				errs[i] = in.name + ": " + r.stderr
			}
		}()
	}
	wg.Wait()
	for _, e := range errs {
		if e != "" {
			t.Fatal(e)
		}
	}
	for _, in := range insts {
		got := p.runningIPAs(in.token, in.name)
		if got.Status.Host != in.host {
			t.Fatalf("%s runs on %s, not %s", in.name, got.Status.Host, in.host)
		}
		in.ip = got.Status.IP
		pfx := netip.MustParsePrefix(p.agents[in.host].subnet)
		in.gateway = pfx.Masked().Addr().Next().String()
	}
	for _, h := range []string{"h1", "h2"} {
		p.runningIPAs(tokens["mx-a"], "pub-"+h)
		if c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", loPort[h]), 5*time.Second); err != nil {
			// Both agents publish on this machine's 127.0.0.1.
			t.Fatalf("control: the host does not reach pub-%s on 127.0.0.1:%d: %v", h, loPort[h], err)
		} else {
			c.Close()
		}
	}
	gateway := map[string]string{}
	svcGateway := map[string]string{}
	for _, h := range []string{"h1", "h2"} {
		gateway[h] = netip.MustParsePrefix(p.agents[h].subnet).Masked().Addr().Next().String()
		svcGateway[h] = hostService(t, gateway[h])
	}
	_, anyPort, _ := net.SplitHostPort(hostService(t, "0.0.0.0"))
	svcHostIP := net.JoinHostPort(hostIP(t), anyPort)
	meta := metadataService(t)

	// The agents learn the other host's addresses from the server's
	// network view; wait until same-tenant traffic crosses both ways.
	a1, a2 := insts[0], insts[3] // a/h1/runc, a/h2/runc
	p.eventually("same-tenant traffic across the agents", 60*time.Second, func() bool {
		return p.probeOK(a1.token, a1.name, "tcp:"+a2.ip+":80") && p.probeOK(a2.token, a2.name, "tcp:"+a1.ip+":80")
	})

	// One netprobe run per source, all sources at once.
	type cell struct{ res, detail string }
	results := make([]map[string]cell, len(insts))
	for i, src := range insts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var probes []string
			for _, dst := range insts {
				if dst == src {
					continue
				}
				probes = append(probes, "tcp:"+dst.ip+":80", "udp:"+dst.ip+":9", "icmp:"+dst.ip)
				if dst.host == src.host {
					probes = append(probes, "arp:"+dst.ip)
				}
			}
			other := "h2"
			if src.host == "h2" {
				other = "h1"
			}
			probes = append(probes,
				"tcp:"+svcGateway[src.host], "icmp:"+gateway[src.host], "tcp:"+svcGateway[other],
				"tcp:"+svcHostIP, "tcp:"+meta, fmt.Sprintf("syn:127.0.0.1:%d", loPort[src.host]))
			r := p.asTenantQuiet(src.token, append([]string{"exec", src.name, "netprobe", "-timeout", "1500ms"}, probes...)...)
			m := map[string]cell{}
			for _, l := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
				f := strings.SplitN(l, " ", 3)
				if len(f) >= 2 {
					c := cell{res: f[1]}
					if len(f) == 3 {
						c.detail = f[2]
					}
					m[f[0]] = c
				}
			}
			if r.code != 0 {
				m["exec"] = cell{res: "fail", detail: r.stderr}
			}
			results[i] = m
		}()
	}
	wg.Wait()

	// Attacks, from the runc and crun instances (packet sockets): forged
	// source addresses to an instance of the own tenant on the same host,
	// gratuitous ARP for an instance of the other tenant there, broadcast.
	victimMAC := map[string]string{}
	for _, in := range insts {
		if in.runtime != "gvisor" {
			victimMAC[in.ip] = neighbourMACAfterDial(t, p.agents[in.host].bridge, in.ip)
		}
	}
	attacks := map[string][]string{}
	for _, src := range insts {
		if src.runtime == "gvisor" {
			continue
		}
		var peer, victim *mxInst
		for _, x := range insts {
			if x != src && x.host == src.host && x.runtime != "gvisor" {
				if x.tenant == src.tenant && peer == nil {
					peer = x
				}
				if x.tenant != src.tenant && victim == nil {
					victim = x
				}
			}
		}
		attacks[src.name] = []string{
			"spoofudp:" + victim.ip + ":" + peer.ip + ":9",
			"garp:" + victim.ip,
			"bcast:9",
		}
		r := p.asTenantQuiet(src.token, append([]string{"exec", src.name, "netprobe"}, attacks[src.name]...)...)
		if r.code != 0 || strings.Contains(r.stdout, " n/a") {
			t.Errorf("%s could not send its attacks (needs CAP_NET_RAW): %s %s", src.name, r.stdout, r.stderr)
		}
	}
	time.Sleep(500 * time.Millisecond)
	received := map[string]string{}
	for _, in := range insts {
		received[in.name] = p.asTenantQuiet(in.token, "exec", in.name, "cat", "/tmp/udp.log").stdout
	}

	// The table: one row per source; per target T(CP) U(DP) I(CMP) A(RP)
	// with + for reached, - for not, . for n/a; then the host columns.
	var b strings.Builder
	fmt.Fprintf(&b, "\n%-16s", "from \\ to")
	for _, dst := range insts {
		fmt.Fprintf(&b, " %-12s", dst.short())
	}
	fmt.Fprintf(&b, " | %-8s %-7s %-8s %-7s %-8s %-9s\n", "gw:tcp", "gw:icmp", "gw2:tcp", "hostip", "169.254", "127.0.0.1")
	bad := 0
	mark := func(c cell, want bool, naOK bool) string {
		switch {
		case c.res == "ok" && want:
			return "+"
		case c.res == "fail" && !want:
			return "-"
		case c.res == "n/a" && (naOK || !want):
			return "."
		}
		bad++
		if c.res == "ok" {
			return "+!"
		}
		return "-!"
	}
	for i, src := range insts {
		m := results[i]
		fmt.Fprintf(&b, "%-16s", src.short())
		for _, dst := range insts {
			if dst == src {
				fmt.Fprintf(&b, " %-12s", "")
				continue
			}
			same := dst.tenant == src.tenant
			s := "T" + mark(m["tcp:"+dst.ip+":80"], same, false) +
				"U" + mark(m["udp:"+dst.ip+":9"], same, false) +
				"I" + mark(m["icmp:"+dst.ip], same, src.runtime == "gvisor")
			if dst.host == src.host {
				s += "A" + mark(m["arp:"+dst.ip], same, src.runtime == "gvisor")
			}
			fmt.Fprintf(&b, " %-12s", s)
		}
		other := "h2"
		if src.host == "h2" {
			other = "h1"
		}
		fmt.Fprintf(&b, " | %-8s %-7s %-8s %-7s %-8s %-9s\n",
			mark(m["tcp:"+svcGateway[src.host]], false, false), mark(m["icmp:"+gateway[src.host]], false, true),
			mark(m["tcp:"+svcGateway[other]], false, false), mark(m["tcp:"+svcHostIP], false, false),
			mark(m["tcp:"+meta], false, false), mark(m[fmt.Sprintf("syn:127.0.0.1:%d", loPort[src.host])], false, true))
		if c, ok := m["exec"]; ok {
			fmt.Fprintf(&b, "   exec failed: %s\n", c.detail)
			bad++
		}
	}
	// Attacks: what arrived where, and the neighbour entries.
	fmt.Fprintf(&b, "\nattacks (runc and crun; gVisor cannot send them):\n")
	for _, src := range insts {
		if src.runtime == "gvisor" {
			continue
		}
		fmt.Fprintf(&b, "%-16s %s\n", src.short(), strings.Join(attacks[src.name], " "))
	}
	for _, in := range insts {
		for _, l := range strings.Split(strings.TrimSpace(received[in.name]), "\n") {
			if strings.Contains(l, "spoofed") || strings.Contains(l, "broadcast") {
				fmt.Fprintf(&b, "  ! %s received %q\n", in.short(), l)
				bad++
			}
		}
		if in.runtime == "gvisor" {
			continue
		}
		if got := neighbourMAC(t, p.agents[in.host].bridge, in.ip); victimMAC[in.ip] != "" && got != "" && got != victimMAC[in.ip] {
			fmt.Fprintf(&b, "  ! the host's neighbour entry of %s (%s) became %s, was %s\n", in.short(), in.ip, got, victimMAC[in.ip])
			bad++
		}
	}
	fmt.Fprintf(&b, "\n+ reached, - not reached, . n/a (gVisor: no packet or ping socket); ! against expectation\n")
	t.Log(b.String())
	if bad > 0 {
		t.Errorf("%d probes came out against expectation (marked !)", bad)
	}
}

// neighbourMACAfterDial makes the host resolve ip (a TCP connect from the
// host) and returns its neighbour entry on bridge.
func neighbourMACAfterDial(t *testing.T, bridge, ip string) string {
	t.Helper()
	if c, err := net.DialTimeout("tcp", net.JoinHostPort(ip, "80"), 3*time.Second); err == nil {
		c.Close()
	}
	return neighbourMAC(t, bridge, ip)
}
