package integration

import (
	"crypto/sha512"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	cnins "github.com/containernetworking/plugins/pkg/ns"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/internal/agent/network"
	"github.com/kanga-run/kanga/internal/testenv/harness"
)

// runSpec creates an instance from a full spec, as `kanga run -d -f -`.
func (p *platform) runSpec(req api.CreateInstanceRequest) {
	p.t.Helper()
	b, err := json.Marshal(req)
	if err != nil {
		p.t.Fatal(err)
	}
	if r := p.kangaIn(b, "run", "-d", "-f", "-"); r.code != 0 {
		p.t.Fatalf("run -f %s: exit %d: %s", b, r.code, r.stderr)
	}
}

// running waits until the instance runs and returns it.
func (p *platform) running(name string) api.Instance {
	p.t.Helper()
	var inst api.Instance
	p.eventually(name+" to run", 60*time.Second, func() bool {
		inst = p.inspect(name)
		return inst.Status.Phase == api.PhaseRunning && inst.Status.IP != ""
	})
	return inst
}

// kangaAsync runs the CLI in the background; the result arrives on the
// channel. Unlike kanga it never fails the test, so it may run outside the
// test goroutine.
func (p *platform) kangaAsync(args ...string) <-chan result {
	return p.kangaAsyncEnv(nil, args...)
}

// kangaAsyncEnv is kangaAsync with extra environment variables.
func (p *platform) kangaAsyncEnv(env []string, args ...string) <-chan result {
	ch := make(chan result, 1)
	go func() {
		r, _ := p.cli(2*time.Minute, env, nil, args...)
		ch <- r
	}()
	return ch
}

// gateway is the bridge's address: the first of the platform's subnet.
func (p *platform) gateway() string {
	p.t.Helper()
	pfx, err := netip.ParsePrefix(p.subnet)
	if err != nil {
		p.t.Fatal(err)
	}
	return pfx.Masked().Addr().Next().String()
}

const block = 64 << 10 // dd block size

// sendOut has instance name send count blocks with dd | nc to a listener
// beyond the host (a namespace of the test's, reached through the
// outbound NAT as the internet would be: the host's own services are
// closed to instances), and returns the rate the listener received them
// at, in bits/s, from connection to end of data.
func (p *platform) sendOut(name string, count int) float64 {
	p.t.Helper()
	ns, peer := outsideNet(p.t, "10.234")
	var l net.Listener
	if err := cnins.WithNetNSPath(ns, func(cnins.NetNS) error {
		var err error
		l, err = net.Listen("tcp4", net.JoinHostPort(peer, "0"))
		return err
	}); err != nil {
		p.t.Fatal(err)
	}
	defer l.Close()
	port := l.Addr().(*net.TCPAddr).Port
	done := p.kangaAsync("exec", name, "sh", "-c",
		fmt.Sprintf("dd if=/dev/zero bs=%d count=%d 2>/dev/null | nc %s %d", block, count, peer, port))
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	var c net.Conn
	select {
	case c = <-accepted:
	case r := <-done:
		p.t.Fatalf("dd | nc in %s ended before connecting: %d %s", name, r.code, r.stderr)
	case <-time.After(60 * time.Second):
		p.t.Fatalf("%s never connected to the host", name)
	}
	start := time.Now()
	c.SetDeadline(start.Add(2 * time.Minute))
	n, err := io.Copy(io.Discard, c) // nc shuts its side down when dd ends
	elapsed := time.Since(start)
	c.Close() // nc exits once the host closes its side
	if err != nil || n != int64(count*block) {
		p.t.Fatalf("received %d of %d bytes from %s: %v", n, count*block, name, err)
	}
	if r := <-done; r.code != 0 {
		p.t.Fatalf("dd | nc in %s: exit %d: %s", name, r.code, r.stderr)
	}
	return float64(n) * 8 / elapsed.Seconds()
}

// sendIn sends count blocks from the host to `nc -l` in instance name at
// its IP, and returns the rate in bits/s from connection until the
// instance had it all: until nc, which exits at the end of the data, has
// exited. The host's send buffer would hide megabytes, so the sender's
// own progress says nothing; and nc half-closes its side as soon as its
// empty stdin ends, so neither does the connection's EOF. The exec's
// return latency makes the rate err low, never high.
func (p *platform) sendIn(name, ip string, count int) float64 {
	p.t.Helper()
	const port = "9000"
	done := p.kangaAsync("exec", name, "sh", "-c", "nc -l -p "+port+" >/dev/null")
	var c net.Conn
	p.eventually("nc in "+name+" to listen", 60*time.Second, func() bool {
		var err error
		c, err = net.DialTimeout("tcp", net.JoinHostPort(ip, port), 5*time.Second)
		return err == nil
	})
	defer c.Close()
	start := time.Now()
	c.SetDeadline(start.Add(2 * time.Minute))
	if _, err := io.Copy(c, io.LimitReader(zeros{}, int64(count*block))); err != nil {
		p.t.Fatalf("send to %s: %v", name, err)
	}
	c.(*net.TCPConn).CloseWrite()
	r := <-done
	elapsed := time.Since(start)
	if r.code != 0 {
		p.t.Fatalf("nc -l in %s: exit %d: %s", name, r.code, r.stderr)
	}
	return float64(count*block) * 8 / elapsed.Seconds()
}

type zeros struct{}

func (zeros) Read(b []byte) (int, error) {
	clear(b)
	return len(b), nil
}

// TestInstanceBandwidth measures what the kernel lets through an instance
// limited to 8 Mbit/s each way, next to an unlimited one: each limited
// direction within 15% of 8 Mbit/s, each unlimited one at least 5x faster.
func TestInstanceBandwidth(t *testing.T) {
	p := startPlatform(t)
	p.importImages()
	const rate, tolerance = 8_000_000, 0.15
	p.runSpec(api.CreateInstanceRequest{Name: "bwlimited", Spec: api.InstanceSpec{
		Containers: []api.ContainerSpec{{Name: "main", Image: "kanga.test/busybox", Command: []string{"sleep", "1000"}}},
		Resources:  api.Resources{IngressBandwidth: "8M", EgressBandwidth: "8M"},
	}})
	p.must("run", "-d", "--name", "bwfree", "kanga.test/busybox", "sleep", "1000")
	limited, free := p.running("bwlimited"), p.running("bwfree")

	// About 3.4 seconds' worth at 8 Mbit/s; ten times more unlimited, so
	// that its transfer is not over before it is measurable.
	const count = 52
	outLimited := p.sendOut("bwlimited", count)
	outFree := p.sendOut("bwfree", 10*count)
	inLimited := p.sendIn("bwlimited", limited.Status.IP, count)
	inFree := p.sendIn("bwfree", free.Status.IP, 10*count)
	t.Logf("out of instance: limited %.2f Mbit/s, unlimited %.1f Mbit/s", outLimited/1e6, outFree/1e6)
	t.Logf("into instance:   limited %.2f Mbit/s, unlimited %.1f Mbit/s", inLimited/1e6, inFree/1e6)
	for _, c := range []struct {
		dir           string
		limited, free float64
	}{{"out of", outLimited, outFree}, {"into", inLimited, inFree}} {
		if c.limited < rate*(1-tolerance) || c.limited > rate*(1+tolerance) {
			t.Errorf("%s the instance limited to 8M: %.2f Mbit/s, want within %.0f%% of 8", c.dir, c.limited/1e6, tolerance*100)
		}
		if c.free < 5*c.limited {
			t.Errorf("%s the unlimited instance: %.2f Mbit/s, want at least 5x %.2f", c.dir, c.free/1e6, c.limited/1e6)
		}
	}
}

// TestInstanceNameResolutionAndPeers: an instance has a resolv.conf built
// from the host's, resolves its own name through /etc/hosts, and reaches
// another instance by IP.
func TestInstanceNameResolutionAndPeers(t *testing.T) {
	p := startPlatform(t)
	p.importImages()
	p.must("run", "-d", "--name", "peer-web", "kanga.test/httpd")
	p.must("run", "-d", "--name", "peer-client", "kanga.test/busybox", "sleep", "1000")
	web, client := p.running("peer-web"), p.running("peer-client")

	want, err := network.ResolvConf(network.HostResolvConf)
	if err != nil {
		t.Fatal(err)
	}
	if got := p.must("exec", "peer-client", "cat", "/etc/resolv.conf"); got != string(want) {
		t.Errorf("resolv.conf in the instance:\n%s\nwant:\n%s", got, want)
	}
	hosts := p.must("exec", "peer-client", "cat", "/etc/hosts")
	if !strings.Contains(hosts, client.Status.IP+"\tpeer-client\n") || !strings.Contains(hosts, "localhost") {
		t.Errorf("/etc/hosts lacks the instance's own name and address %s:\n%s", client.Status.IP, hosts)
	}
	if out := p.must("exec", "peer-client", "hostname"); out != "peer-client\n" {
		t.Errorf("hostname = %q", out)
	}
	// The own name resolves (through /etc/hosts, no DNS involved): busybox's
	// ping prints the address it resolved before it fails for want of the
	// raw socket instances have no NET_RAW for.
	// (busybox 1.35's static wget crashes with -T, hence no timeout flag.)
	if out := p.kanga("exec", "peer-client", "ping", "-c", "1", "-W", "5", "peer-client").stdout; !strings.Contains(out, "("+client.Status.IP+")") {
		t.Errorf("ping of the own name did not use %s:\n%s", client.Status.IP, out)
	}
	out := p.must("exec", "peer-client", "wget", "-q", "-O", "-", "http://"+web.Status.IP+":80/")
	if out != "hello from kanga\n" {
		t.Errorf("peer-client -> peer-web %s: %q", web.Status.IP, out)
	}
}

// TestNetworkCleanupAfterCrash: kill -9 of kanga up while an instance with
// published ports and bandwidth limits runs, a restart, then rm -f: no
// iptables rule, veth, ifb or IP lease of the instance remains.
func TestNetworkCleanupAfterCrash(t *testing.T) {
	p := startPlatform(t)
	p.importImages()
	baselineRules := iptablesRules(t)
	hostPort := harness.FreePort(t)
	p.runSpec(api.CreateInstanceRequest{Name: "crashweb", Spec: api.InstanceSpec{
		Containers: []api.ContainerSpec{{Name: "web", Image: "kanga.test/httpd"}},
		Ports: []api.PortMapping{
			{HostIP: "127.0.0.1", HostPort: hostPort, ContainerPort: 80},
			{HostPort: harness.FreePort(t), ContainerPort: 8080, Protocol: "udp"},
		},
		Resources: api.Resources{IngressBandwidth: "50M", EgressBandwidth: "50M"},
	}})
	inst := p.running("crashweb")
	uid, ip := inst.UID, inst.Status.IP
	ifb := "bwp" + fmt.Sprintf("%x", sha512.Sum512([]byte(network.DefaultNetworkName+uid)))[:12]
	lease := filepath.Join(p.dataDir, "network", "ipam", network.DefaultNetworkName, ip)

	// Everything is there to begin with, so its absence later means
	// something.
	rules := iptablesRules(t)
	if !strings.Contains(rules, uid) || !strings.Contains(rules, ip) {
		t.Fatalf("no iptables rules for %s / %s after start", uid, ip)
	}
	if n := p.bridgeVeths(); n != 1 {
		t.Fatalf("%d veths on %s, want 1", n, p.bridge)
	}
	if !linkExists(ifb) {
		t.Fatalf("no ifb %s for the egress limit", ifb)
	}
	if _, err := os.Stat(lease); err != nil {
		t.Fatalf("no IPAM lease: %v", err)
	}

	p.crash()
	p.start()
	p.running("crashweb")
	p.must("rm", "-f", "crashweb")
	p.eventually("crashweb to be gone", 60*time.Second, func() bool { return p.kanga("inspect", "crashweb").code != 0 })

	// Only rules that were not there before count: the host may carry
	// rules of other platforms, for addresses of a subnet this test reuses.
	added := diffLines(baselineRules, iptablesRules(t))
	for _, s := range []string{uid, ip + "/", ip + ":", "dport " + strconv.Itoa(hostPort)} {
		if strings.Contains(added, s) {
			t.Errorf("iptables still mention %q:\n%s", s, added)
		}
	}
	if n := p.bridgeVeths(); n != 0 {
		t.Errorf("%d veths left on %s", n, p.bridge)
	}
	if linkExists(ifb) {
		t.Errorf("ifb %s left", ifb)
	}
	if _, err := os.Stat(lease); !os.IsNotExist(err) {
		t.Errorf("IPAM lease %s left: %v", lease, err)
	}
	if m, _ := filepath.Glob("/run/kanga/netns/*/" + uid); len(m) > 0 {
		t.Errorf("netns left: %v", m)
	}
}

func iptablesRules(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("iptables-save").Output()
	if err != nil {
		t.Fatalf("iptables-save: %v", err)
	}
	// Drop the comment and counter lines that change on their own.
	var keep []string
	for _, l := range strings.Split(string(out), "\n") {
		if !strings.HasPrefix(l, "#") && !strings.HasPrefix(l, ":") {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n")
}

// diffLines returns the lines of b that are not in a.
func diffLines(a, b string) string {
	in := map[string]bool{}
	for _, l := range strings.Split(a, "\n") {
		in[l] = true
	}
	var d []string
	for _, l := range strings.Split(b, "\n") {
		if !in[l] {
			d = append(d, "+ "+l)
		}
	}
	return strings.Join(d, "\n")
}

// bridgeVeths counts the interfaces enslaved to the platform's bridge.
func (p *platform) bridgeVeths() int {
	out, err := exec.Command("ip", "-o", "link", "show", "master", p.bridge).Output()
	if err != nil {
		return 0 // no bridge, no veths
	}
	return strings.Count(string(out), "\n")
}

func linkExists(name string) bool {
	return exec.Command("ip", "link", "show", "dev", name).Run() == nil
}

// TestSubnetMasqueradeLifecycle: the instance subnet's outbound NAT is one
// jump for the whole subnet, there while instances are (across a restart
// of kanga up, which leaves them running, it stays and is not doubled),
// and gone after the last instance is removed and kanga up stops.
// internal/agent/network tests that it actually translates.
func TestSubnetMasqueradeLifecycle(t *testing.T) {
	p := startPlatform(t)
	p.importImages()
	jump := "-j KANGA-MASQ-" + p.bridge
	jumps := func() int {
		n := 0
		for _, l := range strings.Split(iptablesRules(t), "\n") {
			if strings.HasPrefix(l, "-A POSTROUTING -s "+p.subnet+" ") && strings.HasSuffix(l, jump) {
				n++
			}
		}
		return n
	}

	p.must("run", "-d", "--name", "masq1", "kanga.test/busybox", "sleep", "1000")
	p.running("masq1")
	if n := jumps(); n != 1 {
		t.Fatalf("%d masquerade jumps for %s, want 1", n, p.subnet)
	}
	p.stop() // instances keep running, and need their NAT
	if n := jumps(); n != 1 {
		t.Errorf("after stop with an instance running: %d masquerade jumps, want 1", n)
	}
	p.start()
	p.running("masq1")
	p.must("run", "-d", "--name", "masq2", "kanga.test/busybox", "sleep", "1000")
	p.running("masq2")
	if n := jumps(); n != 1 {
		t.Errorf("after restart: %d masquerade jumps, want 1", n)
	}
	p.must("rm", "-f", "masq1")
	p.must("rm", "-f", "masq2")
	p.stop()
	if n := jumps(); n != 0 {
		t.Errorf("after the last instance and stop: %d masquerade jumps left", n)
	}
	if rules := iptablesRules(t); strings.Contains(rules, "KANGA-MASQ-"+p.bridge+" ") {
		t.Errorf("masquerade chain left:\n%s", grepLines(rules, "KANGA-MASQ-"+p.bridge))
	}
}
