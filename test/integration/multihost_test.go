package integration

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/client"
	"github.com/kanga-run/kanga/internal/testenv"
	"github.com/kanga-run/kanga/internal/testenv/harness"
)

// hostPool is one `kanga server` and real `kanga agent` processes on this
// machine, each agent with its own data dir, containerd, bridge (kangamhN)
// and subnet (10.231.N.0/24). The CLI half of platform (kanga, must,
// inspect, eventually) drives the server's API.
type hostPool struct {
	*platform
	srv      *harness.Process // kanga server
	srvArgs  []string         // extra flags of kanga server
	agentURL string
	joinURL  string // what agents --join (default agentURL)
	// agentArgs are extra flags of kanga agent (set by beforeAgents).
	agentArgs []string
	agents    map[string]*hostAgent
}

// hostAgent is one `kanga agent` process.
type hostAgent struct {
	name, dataDir, bridge, subnet, listen, logPath string
	labels                                         []string
	proc                                           *harness.Process
}

var mhSeq = 0

// startPool starts a server and one agent per name (with labels zone=<zone>).
func startPool(t *testing.T, zones map[string]string) *hostPool {
	t.Helper()
	return startPoolWith(t, zones, nil, nil)
}

// startPoolWith is startPool with extra server flags, and beforeAgents
// called once the server serves and before any agent joins.
func startPoolWith(t *testing.T, zones map[string]string, srvArgs []string, beforeAgents func(*hostPool)) *hostPool {
	t.Helper()
	testenv.RequireRoot(t)
	testenv.RequireBinaries(t, "containerd", "runc")
	dir, err := os.MkdirTemp("", "kanga-mh-")
	if err != nil {
		t.Fatal(err)
	}
	p := &hostPool{
		platform: &platform{t: t, bin: binary(t), dataDir: filepath.Join(dir, "server"), config: filepath.Join(dir, "client.json"),
			listen: "127.0.0.1:" + strconv.Itoa(harness.FreePort(t)), logPath: filepath.Join(dir, "server.log")},
		agentURL: "https://127.0.0.1:" + strconv.Itoa(harness.FreePort(t)),
		agents:   map[string]*hostAgent{},
		srvArgs:  srvArgs,
	}
	p.joinURL = p.agentURL
	t.Cleanup(func() {
		p.purgeAll()
		for _, a := range p.agents {
			p.stopAgent(a)
		}
		p.stopServer()
		if t.Failed() {
			for _, f := range append([]string{p.logPath}, p.agentLogs()...) {
				if b, err := os.ReadFile(f); err == nil {
					t.Logf("%s:\n%s", f, harness.Tail(string(b), 4000))
				}
			}
		}
		for _, a := range p.agents {
			harness.RemoveHostLeftovers(t, a.dataDir, a.bridge, a.subnet)
		}
		os.RemoveAll(dir)
	})
	p.startServer()
	if beforeAgents != nil {
		beforeAgents(p)
	}
	names := make([]string, 0, len(zones))
	for n := range zones {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		mhSeq++
		seq := (os.Getpid()*7+mhSeq)%250 + 1
		a := &hostAgent{name: n, dataDir: filepath.Join(dir, n), bridge: fmt.Sprintf("kangamh%d", seq),
			subnet: fmt.Sprintf("10.231.%d.0/24", seq), listen: "127.0.0.1:" + strconv.Itoa(harness.FreePort(t)),
			logPath: filepath.Join(dir, n+".log"), labels: []string{"zone=" + zones[n]}}
		p.agents[n] = a
		p.startAgent(a, p.joinToken())
	}
	p.waitReady(names...)
	return p
}

func (p *hostPool) agentLogs() []string {
	var out []string
	for _, a := range p.agents {
		out = append(out, a.logPath)
	}
	return out
}

func (p *hostPool) startServer() {
	t := p.t
	t.Helper()
	srv, err := harness.StartProcess(p.bin, p.logPath, nil, append([]string{"server", "--data-dir", p.dataDir, "--listen", p.listen,
		"--agent-listen", strings.TrimPrefix(p.agentURL, "https://"), "--write-config", p.config}, p.srvArgs...)...)
	if err != nil {
		t.Fatal(err)
	}
	p.srv = srv
	p.eventually("kanga server to serve", 60*time.Second, func() bool {
		select {
		case <-srv.Done():
			b, _ := os.ReadFile(p.logPath)
			t.Fatalf("kanga server exited early:\n%s", harness.Tail(string(b), 4000))
		default:
		}
		_, err := os.Stat(filepath.Join(p.dataDir, "join-token"))
		return err == nil && fileExists(p.config) && p.kanga("version").code == 0
	})
}

func fileExists(path string) bool { _, err := os.Stat(path); return err == nil }

func (p *hostPool) joinToken() string {
	b, err := os.ReadFile(filepath.Join(p.dataDir, "join-token"))
	if err != nil {
		p.t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// agentFlags are the flags of kanga agent a, joining with token ("": the
// credentials of its data dir).
func (p *hostPool) agentFlags(a *hostAgent, token string) []string {
	args := []string{"agent", "--join", p.joinURL, "--data-dir", a.dataDir, "--host-name", a.name,
		"--listen", a.listen, "--bridge", a.bridge, "--subnet", a.subnet, "--pool-max", "0",
		"--cgroup-root", harness.CgroupRootFor(a.dataDir)}
	if token != "" {
		args = append(args, "--token", token)
	}
	for _, l := range a.labels {
		args = append(args, "--labels", l)
	}
	return append(args, p.agentArgs...)
}

// agentCmd is kanga agent a as a command to run to its end.
func (p *hostPool) agentCmd(a *hostAgent, token string) *exec.Cmd {
	cmd := exec.Command(p.bin, p.agentFlags(a, token)...)
	cmd.Env = p.env()
	return cmd
}

func (p *hostPool) startAgent(a *hostAgent, token string) {
	p.t.Helper()
	proc, err := harness.StartProcess(p.bin, a.logPath, p.env(), p.agentFlags(a, token)...)
	if err != nil {
		p.t.Fatal(err)
	}
	a.proc = proc
}

// sdk returns an API client from the config the server wrote.
func (p *hostPool) sdk() *client.Client {
	p.t.Helper()
	cfg, err := client.LoadConfig(p.config)
	if err != nil {
		p.t.Fatal(err)
	}
	opts, err := cfg.Options()
	if err != nil {
		p.t.Fatal(err)
	}
	c, err := client.New(cfg.Addr, cfg.Token, opts...)
	if err != nil {
		p.t.Fatal(err)
	}
	return c
}

// hosts returns the registry as the API shows it, through the SDK.
func (p *hostPool) hosts() map[string]api.Host {
	p.t.Helper()
	list, err := p.sdk().ListHosts(p.t.Context())
	if err != nil {
		p.t.Fatalf("listing hosts: %v", err)
	}
	m := map[string]api.Host{}
	for _, h := range list {
		m[h.Name] = h
	}
	return m
}

// get reads an instance through the SDK; unlike kanga inspect it asks no
// host for counters, so it answers while a host hangs.
func (p *hostPool) get(name string) api.Instance {
	p.t.Helper()
	in, err := p.sdk().GetInstance(p.t.Context(), name)
	if err != nil {
		p.t.Fatalf("get %s: %v", name, err)
	}
	return in
}

func (p *hostPool) waitReady(names ...string) {
	p.t.Helper()
	p.eventually("hosts "+strings.Join(names, ",")+" to be Ready", 90*time.Second, func() bool {
		for _, a := range p.agents {
			select {
			case <-a.proc.Done():
				b, _ := os.ReadFile(a.logPath)
				p.t.Fatalf("kanga agent %s exited:\n%s", a.name, harness.Tail(string(b), 4000))
			default:
			}
		}
		hs := p.hosts()
		for _, n := range names {
			if hs[n].Status.Phase != api.HostReady {
				return false
			}
		}
		return true
	})
}

// crashAgent kills the agent and its containerd with SIGKILL; the shims,
// and so the instances, keep running: the host is cut off, as behind a
// network partition.
func (p *hostPool) crashAgent(a *hostAgent) (containerdPID int) {
	containerdPID = harness.ContainerdPID(a.dataDir)
	a.proc.Kill()
	if containerdPID > 0 {
		_ = syscall.Kill(containerdPID, syscall.SIGKILL)
	}
	return containerdPID
}

func (p *hostPool) stopAgent(a *hostAgent) {
	a.proc.Stop()
	harness.KillContainerd(a.dataDir)
}

func (p *hostPool) stopServer() { p.srv.Stop() }

// purgeAll removes every instance through the API while the agents run,
// then kills whatever task is left in any agent's containerd (a crashed
// host's leftovers), so that nothing outlives the test.
func (p *hostPool) purgeAll() {
	if p.srv.Running() {
		for _, name := range strings.Fields(p.kanga("ps", "-aq").stdout) {
			p.kanga("rm", "-f", name)
		}
	}
	// Let the agents finish their teardowns (tasks gone, network
	// namespaces released: CNI DEL removed the rules) before they stop.
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		busy := false
		for _, a := range p.agents {
			if !a.proc.Running() {
				continue
			}
			netns, _ := os.ReadDir(harness.NetnsDir(a.dataDir))
			if len(netns) > 0 || len(strings.Split(strings.TrimSpace(a.ctrOut("tasks", "ls")), "\n")) > 1 {
				busy = true
			}
		}
		if !busy {
			break
		}
	}
	for _, a := range p.agents {
		if !a.proc.Running() {
			continue
		}
		for _, line := range strings.Split(a.ctrOut("tasks", "ls"), "\n")[1:] {
			if f := strings.Fields(line); len(f) > 1 {
				a.ctrOut("tasks", "rm", "-f", f[0])
			}
		}
	}
}

// ctrOut runs containerd's CLI against the agent's containerd.
func (a *hostAgent) ctrOut(args ...string) string {
	sock := filepath.Join(a.dataDir, "containerd", "containerd.sock")
	out, _ := exec.Command("ctr", append([]string{"-a", sock, "-n", "kanga"}, args...)...).CombinedOutput()
	return string(out)
}

// importEverywhere imports the busybox image through the API (the server
// imports it on every host it is connected to) until every host has it: a
// host that registered a moment ago may not be in the server's directory
// yet (it follows the registry's watch).
func (p *hostPool) importEverywhere() {
	p.t.Helper()
	missing := ""
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
		p.must("image", "import", p.imagePath("busybox.tar"))
		missing = ""
		for _, a := range p.agents {
			if out := a.ctrOut("images", "ls", "-q"); !strings.Contains(out, "kanga.test/busybox") {
				missing += a.name + ": " + out + "\n"
			}
		}
		if missing == "" {
			return
		}
	}
	p.t.Fatalf("hosts without the imported image after 30s:\n%s", missing)
}

// TestMultiHost: three real agents joined to one server. Placement
// respects capacity (each host has 2 CPUs) and zone selectors, spread
// puts one tenant's instances on three hosts, logs and exec reach the
// instance's own host, and what an agent sends without the right
// certificate or token is refused.
func TestMultiHost(t *testing.T) {
	p := startPool(t, map[string]string{"mh-a": "a", "mh-b": "b", "mh-c": "c"})
	p.importEverywhere()
	hosts := p.hosts()
	for n, h := range hosts {
		if h.Capacity.CPUs < 1 || h.Address == "" || !slices.Contains(h.RuntimeClasses, "runc") {
			t.Fatalf("host %s registered as %+v", n, h)
		}
	}
	cpus := strconv.Itoa(hosts["mh-a"].Capacity.CPUs)

	t.Run("capacity", func(t *testing.T) {
		// One whole host each: three fit, on three hosts; a fourth waits.
		on := map[string]bool{}
		for i := range 3 {
			name := fmt.Sprintf("big%d", i)
			p.must("run", "-d", "--name", name, "--cpu", cpus, "kanga.test/busybox", "sleep", "1000")
			p.eventually(name+" to run", 60*time.Second, func() bool { return p.inspect(name).Status.Phase == api.PhaseRunning })
			on[p.inspect(name).Status.Host] = true
		}
		if len(on) != 3 {
			t.Fatalf("three full-host instances on hosts %v, want three distinct hosts", on)
		}
		p.kanga("run", "-d", "--name", "big3", "--cpu", cpus, "kanga.test/busybox", "sleep", "1000")
		w := p.inspect("big3")
		if w.Status.Phase != api.PhasePending || w.Status.Host != "" || !strings.Contains(w.Status.Message, "0/3 hosts available") ||
			!strings.Contains(w.Status.Message, "insufficient cpu") {
			t.Fatalf("fourth full-host instance: %s on %q: %s %s", w.Status.Phase, w.Status.Host, w.Status.Reason, w.Status.Message)
		}
		// Freeing one host lets it in.
		p.must("rm", "-f", "big0")
		p.eventually("big3 to run once big0 is gone", 60*time.Second, func() bool {
			return p.inspect("big3").Status.Phase == api.PhaseRunning
		})
		for _, n := range []string{"big1", "big2", "big3"} {
			p.must("rm", "-f", n)
		}
	})

	t.Run("selector", func(t *testing.T) {
		for _, zone := range []string{"b", "c", "b"} {
			name := "in-" + zone + strconv.Itoa(int(time.Now().UnixNano()%1000))
			p.must("run", "-d", "--name", name, "--host-selector", "zone="+zone, "kanga.test/busybox", "sleep", "1000")
			p.eventually(name+" to run", 60*time.Second, func() bool { return p.inspect(name).Status.Phase == api.PhaseRunning })
			if h := p.inspect(name).Status.Host; h != "mh-"+zone {
				t.Fatalf("%s with zone=%s selector runs on %s", name, zone, h)
			}
			p.must("rm", "-f", name)
		}
		p.kanga("run", "-d", "--name", "nowhere", "--host-selector", "zone=x", "kanga.test/busybox", "true")
		if w := p.inspect("nowhere"); w.Status.Phase != api.PhasePending || w.Status.Host != "" || !strings.Contains(w.Status.Message, "0/3 hosts available") {
			t.Fatalf("instance selecting a missing zone: %s on %q: %s", w.Status.Phase, w.Status.Host, w.Status.Message)
		}
		p.must("rm", "-f", "nowhere")
	})

	t.Run("spread", func(t *testing.T) {
		on := map[string]string{}
		for i := range 3 {
			name := fmt.Sprintf("sp%d", i)
			p.must("run", "-d", "--name", name, "--cpu", "0.1", "--scheduling-policy", "spread", "kanga.test/busybox", "sleep", "1000")
			p.eventually(name+" to run", 60*time.Second, func() bool { return p.inspect(name).Status.Phase == api.PhaseRunning })
			on[p.inspect(name).Status.Host] = name
		}
		if len(on) != 3 {
			t.Fatalf("spread instances on hosts %v, want three distinct hosts", on)
		}
		// logs, exec and stats go to each instance's own host.
		for host, name := range on {
			if out := strings.TrimSpace(p.must("exec", name, "cat", "/etc/hostname")); out == "" {
				t.Fatalf("exec in %s on %s printed nothing", name, host)
			}
			if out := p.must("stats", name); !strings.Contains(out, name) {
				t.Fatalf("stats of %s on %s:\n%s", name, host, out)
			}
			p.must("rm", "-f", name)
		}
		out := p.must("run", "--rm", "--host-selector", "zone=c", "kanga.test/busybox", "echo", "hello from c")
		if !strings.Contains(out, "hello from c") {
			t.Fatalf("attached run on mh-c printed %q", out)
		}
	})

	t.Run("host ports", func(t *testing.T) { testHostPorts(t, p) })

	t.Run("refusals", func(t *testing.T) { testRefusals(t, p) })
}

// testHostPorts: a host port is a per-host resource. (The agents share
// this machine's network namespace, so the rules of one host would shadow
// another's here; only placement and the agent's own check are looked at.)
func testHostPorts(t *testing.T, p *hostPool) {
	port := harness.FreePort(t)
	pub := fmt.Sprintf("127.0.0.1:%d:80", port)
	on := map[string]bool{}
	for i := range 3 {
		name := fmt.Sprintf("pub%d", i)
		p.must("run", "-d", "--name", name, "-p", pub, "kanga.test/busybox", "sleep", "1000")
		p.eventually(name+" to run", 60*time.Second, func() bool { return p.inspect(name).Status.Phase == api.PhaseRunning })
		on[p.inspect(name).Status.Host] = true
	}
	if len(on) != 3 {
		t.Fatalf("three instances publishing port %d on hosts %v, want three distinct hosts", port, on)
	}
	p.kanga("run", "-d", "--name", "pub3", "-p", pub, "kanga.test/busybox", "sleep", "1000")
	want := fmt.Sprintf("0/3 hosts available: 3 host port 127.0.0.1:%d/tcp in use.", port)
	if w := p.inspect("pub3"); w.Status.Phase != api.PhasePending || w.Status.Host != "" || w.Status.Message != want {
		t.Fatalf("a fourth: %s on %q: %s; want Pending with %q", w.Status.Phase, w.Status.Host, w.Status.Message, want)
	}
	// With the host certain, the API knows at once.
	host := p.inspect("pub0").Status.Host
	r := p.kanga("run", "-d", "--name", "pub4", "-p", pub, "--host-selector", "zone="+strings.TrimPrefix(host, "mh-"), "kanga.test/busybox", "sleep", "1000")
	if r.code == 0 || !strings.Contains(r.stderr, fmt.Sprintf("host port 127.0.0.1:%d/tcp is in use by instance", port)) {
		t.Errorf("a create bound to %s: exit %d %s", host, r.code, r.stderr)
	}
	p.must("rm", "-f", "pub0")
	p.eventually("pub3 to run once pub0 is gone", 60*time.Second, func() bool {
		return p.inspect("pub3").Status.Phase == api.PhaseRunning
	})
	// A host process's port: refused at admission when the host is
	// certain (the server asks the agent), by the agent otherwise.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	busy := fmt.Sprintf("127.0.0.1:%d:80", l.Addr().(*net.TCPAddr).Port)
	r = p.kanga("run", "-d", "--name", "over-host-a", "-p", busy, "--host-selector", "zone=a", "kanga.test/busybox", "sleep", "1000")
	if r.code == 0 || !strings.Contains(r.stderr, "is in use by a process on host mh-a") || strings.Contains(r.stderr, "conflict: conflict") {
		t.Errorf("publishing over a host process's port on mh-a: exit %d %s", r.code, r.stderr)
	}
	if r := p.kanga("inspect", "over-host-a"); r.code == 0 {
		t.Error("the refused instance was stored")
	}
	r = p.kanga("run", "-d", "--name", "over-host", "-p", busy, "kanga.test/busybox", "sleep", "1000")
	if r.code == 0 || !strings.Contains(r.stderr, "PortInUse") {
		t.Errorf("publishing over a host process's port: exit %d %s", r.code, r.stderr)
	}
	p.eventually("over-host to fail", 60*time.Second, func() bool { return p.inspect("over-host").Status.Phase == api.PhaseFailed })
	if w := p.inspect("over-host"); w.Status.Reason != "PortInUse" || !strings.Contains(w.Status.Message, "in use by a process on host mh-") {
		t.Errorf("over-host: %s: %s", w.Status.Reason, w.Status.Message)
	}
	for _, n := range []string{"pub1", "pub2", "pub3", "over-host"} {
		p.must("rm", "-f", n)
	}
}

// testRefusals calls the agent link and the host API as a rogue agent
// would: with no certificate, with a wrong join token, and with another
// host's certificate. Each gets 401 or 403 and nothing else; the same
// calls with the right certificate succeed, so the refusals are not an
// accident of the request.
func testRefusals(t *testing.T, p *hostPool) {
	p.must("run", "-d", "--name", "secret", "--host-selector", "zone=b", "kanga.test/busybox", "sleep", "1000")
	p.eventually("secret to run", 60*time.Second, func() bool { return p.inspect("secret").Status.Phase == api.PhaseRunning })
	defer p.must("rm", "-f", "secret")

	caPEM, err := os.ReadFile(filepath.Join(p.dataDir, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	certOf := func(host string) []tls.Certificate {
		dir := filepath.Join(p.agents[host].dataDir, "pki")
		c, err := tls.LoadX509KeyPair(filepath.Join(dir, "agent.crt"), filepath.Join(dir, "agent.key"))
		if err != nil {
			t.Fatal(err)
		}
		return []tls.Certificate{c}
	}
	call := func(certs []tls.Certificate, method, url, body string) (int, string) {
		hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: roots, Certificates: certs}}}
		req, _ := http.NewRequest(method, url, strings.NewReader(body))
		resp, err := hc.Do(req)
		if err != nil {
			// The host API requires a certificate in the handshake.
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	link := p.agentURL + "/hostlink/v1/hosts/"
	secretPath := "mh-b/instances/default/secret"

	// The right certificate reads its host's instances.
	if code, body := call(certOf("mh-b"), "GET", link+"mh-b/instances", ""); code != 200 || !strings.Contains(body, `"secret"`) {
		t.Fatalf("mh-b listing its own instances: %d %s", code, body)
	}
	cases := []struct {
		name         string
		certs        []tls.Certificate
		method, path string
		body         string
		want         int
	}{
		{"no certificate lists", nil, "GET", "mh-b/instances", "", 401},
		{"no certificate watches", nil, "GET", "mh-b/watch?rev=0", "", 401},
		{"no certificate reads", nil, "GET", secretPath, "", 401},
		{"no certificate registers", nil, "POST", "mh-b/register", `{"name":"mh-b"}`, 401},
		{"another host's certificate lists", certOf("mh-a"), "GET", "mh-b/instances", "", 403},
		{"another host's certificate watches", certOf("mh-a"), "GET", "mh-b/watch?rev=0", "", 403},
		{"another host's certificate reads", certOf("mh-a"), "GET", secretPath, "", 403},
		{"another host's certificate writes status", certOf("mh-a"), "PUT", secretPath, `{"status":{"phase":"Failed"}}`, 403},
		{"another host's certificate deletes", certOf("mh-a"), "DELETE", secretPath, "", 403},
		{"another host's certificate heartbeats", certOf("mh-a"), "GET", "mh-b/heartbeat", "", 403},
	}
	for _, c := range cases {
		code, body := call(c.certs, c.method, link+c.path, c.body)
		if code != c.want || strings.Contains(body, "sleep") || strings.Contains(body, `"secret"`) {
			t.Errorf("%s: %d %s, want %d and no instance data", c.name, code, body, c.want)
		}
	}
	// A host's certificate reads nothing of the instance it does not run,
	// even through its own path.
	if code, body := call(certOf("mh-a"), "GET", link+"mh-a/instances/default/secret", ""); code != 404 || strings.Contains(body, "sleep") {
		t.Errorf("mh-a reading mh-b's instance through its own path: %d %s", code, body)
	}
	if s := p.inspect("secret"); s.Status.Phase != api.PhaseRunning || s.Status.Host != "mh-b" {
		t.Errorf("secret after the refused writes: %s on %s", s.Status.Phase, s.Status.Host)
	}

	// The agents' host API takes only the servers' certificate.
	hostAPI := p.hosts()["mh-b"].Address + "/v1/instances/secret/logs"
	if code, _ := call(nil, "GET", hostAPI, ""); code != 0 {
		t.Errorf("host API without a certificate: HTTP %d, want the handshake refused", code)
	}
	if code, body := call(certOf("mh-a"), "GET", hostAPI, ""); code != 403 {
		t.Errorf("host API with an agent's certificate: %d %s, want 403", code, body)
	}

	// A wrong join token: the join is refused, the agent exits with the
	// reason, and no host of that name appears.
	tok := p.joinToken()
	wrong := tok[:strings.Index(tok, "::")+2] + "00000000000000000000000000000000"
	if code, body := call(nil, "POST", p.agentURL+"/hostlink/v1/join", `{"name":"rogue","secret":"0000","csr":""}`); code != 401 || strings.Contains(body, "CERTIFICATE") {
		t.Errorf("join with a wrong secret: %d %s", code, body)
	}
	rogue := &hostAgent{name: "rogue", dataDir: filepath.Join(filepath.Dir(p.dataDir), "rogue"), bridge: "kangamhrogue",
		subnet: "10.231.251.0/24", listen: "127.0.0.1:" + strconv.Itoa(harness.FreePort(t))}
	cmd := p.agentCmd(rogue, wrong)
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "join token is not valid") {
		t.Errorf("kanga agent with a wrong token: %v\n%s", err, harness.Tail(string(out), 2000))
	}
	if fileExists(filepath.Join(rogue.dataDir, "pki", "agent.crt")) {
		t.Errorf("the refused agent got a certificate")
	}
	if _, ok := p.hosts()["rogue"]; ok {
		t.Errorf("the refused agent's host was registered")
	}
}

// TestMultiHostAgentLost: an agent and its containerd are killed (the
// shims live on: a host cut off). Its restartable instance comes back
// Running on another host, its one-shot instance is marked Lost; when the
// agent returns it stops its old copy, so one copy runs in the pool.
func TestMultiHostAgentLost(t *testing.T) {
	p := startPool(t, map[string]string{"mh-a": "a", "mh-b": "b", "mh-c": "c"})
	p.importEverywhere()
	p.must("run", "-d", "--name", "web", "--restart", "always", "kanga.test/busybox", "sleep", "1000")
	p.eventually("web to run", 60*time.Second, func() bool { return p.inspect("web").Status.Phase == api.PhaseRunning })
	web := p.inspect("web")
	victim := p.agents[web.Status.Host]
	oldPID := web.Status.Containers[0].PID
	p.must("run", "-d", "--name", "once", "--host-selector", "zone="+strings.TrimPrefix(victim.name, "mh-"), "kanga.test/busybox", "sleep", "1000")
	p.eventually("once to run", 60*time.Second, func() bool { return p.inspect("once").Status.Phase == api.PhaseRunning })

	killed := time.Now()
	p.crashAgent(victim)
	if syscall.Kill(oldPID, 0) != nil {
		t.Fatalf("web's process %d died with its agent; the test needs it alive (a partition)", oldPID)
	}
	// The lease runs out 5 s after the agent's link broke; the instance
	// is re-created and placed within a pass. 15 s is the promise.
	p.eventually("web to run on another host", 15*time.Second, func() bool {
		w := p.inspect("web")
		return w.Status.Phase == api.PhaseRunning && w.Status.Host != "" && w.Status.Host != victim.name
	})
	t.Logf("web Running on %s %.1fs after its host %s was killed (observed by polling)", p.inspect("web").Status.Host, time.Since(killed).Seconds(), victim.name)
	moved := p.inspect("web")
	if moved.UID == web.UID {
		t.Fatalf("re-created web kept its UID %s", web.UID)
	}
	if h := p.hosts()[victim.name]; h.Status.Phase != api.HostNotReady {
		t.Fatalf("lost host %s is %s", victim.name, h.Status.Phase)
	}
	if o := p.inspect("once"); o.Status.Phase != api.PhaseFailed || o.Status.Reason != "Lost" {
		t.Fatalf("one-shot instance on the lost host: %s (%s)", o.Status.Phase, o.Status.Reason)
	}

	// The agent returns (its certificate is in its data dir: no token).
	p.startAgent(victim, "")
	p.waitReady(victim.name)
	p.eventually("the returning agent to stop its old copy of web", 60*time.Second, func() bool {
		return syscall.Kill(oldPID, 0) != nil && !strings.Contains(victim.ctrOut("tasks", "ls"), web.UID)
	})
	copies := 0
	for _, a := range p.agents {
		tasks := a.ctrOut("tasks", "ls")
		if strings.Contains(tasks, web.UID) {
			t.Errorf("host %s still runs the lost copy %s:\n%s", a.name, web.UID, tasks)
		}
		copies += strings.Count(tasks, moved.UID)
	}
	if copies != 1 {
		t.Fatalf("%d running copies of web's new instance %s, want 1", copies, moved.UID)
	}
	if w := p.inspect("web"); w.UID != moved.UID || w.Status.Phase != api.PhaseRunning {
		t.Fatalf("web after the agent returned: uid %s %s", w.UID, w.Status.Phase)
	}
}

// TestMultiHostServerRestart: the control plane's process is killed
// (SIGKILL, embedded etcd with it) and started again on its data dir.
// The agents reconnect with their certificates, and nothing is taken for
// lost: the running instances keep their UID, host and process, and new
// instances are placed again.
func TestMultiHostServerRestart(t *testing.T) {
	p := startPool(t, map[string]string{"mh-a": "a", "mh-b": "b"})
	p.importEverywhere()
	before := map[string]api.Instance{}
	for _, zone := range []string{"a", "b"} {
		name := "svc-" + zone
		p.must("run", "-d", "--name", name, "--restart", "always", "--host-selector", "zone="+zone, "kanga.test/busybox", "sleep", "1000")
		p.eventually(name+" to run", 60*time.Second, func() bool { return p.inspect(name).Status.Phase == api.PhaseRunning })
		before[name] = p.inspect(name)
	}

	p.srv.Kill()
	p.startServer()
	p.waitReady("mh-a", "mh-b")
	// Longer than the lease and the new leader's startup grace together:
	// had anything been declared lost, it would show by now.
	time.Sleep(12 * time.Second)
	for name, b := range before {
		a := p.inspect(name)
		if a.UID != b.UID || a.Status.Host != b.Status.Host || a.Status.Phase != api.PhaseRunning ||
			a.Status.Containers[0].PID != b.Status.Containers[0].PID {
			t.Errorf("%s after the control plane restarted: uid %s on %s %s pid %d; before: uid %s on %s pid %d",
				name, a.UID, a.Status.Host, a.Status.Phase, a.Status.Containers[0].PID, b.UID, b.Status.Host, b.Status.Containers[0].PID)
		}
	}
	for n, h := range p.hosts() {
		if h.Status.Phase != api.HostReady {
			t.Errorf("host %s is %s after the restart", n, h.Status.Phase)
		}
	}
	out := p.must("run", "--rm", "--host-selector", "zone=b", "kanga.test/busybox", "echo", "after the restart")
	if !strings.Contains(out, "after the restart") {
		t.Fatalf("attached run after the restart printed %q", out)
	}
}

// TestMultiHostAgentFrozen: an agent stops answering without its
// connections breaking (SIGSTOP: the kernel still acknowledges its TCP
// segments, as a hung process or a host behind a silent partition would
// look until TCP gives up many minutes later). The server must still see
// it gone: its restartable instance runs elsewhere, and when the agent
// wakes up it stops its own copy without being restarted.
func TestMultiHostAgentFrozen(t *testing.T) {
	p := startPool(t, map[string]string{"mh-a": "a", "mh-b": "b"})
	p.importEverywhere()
	// web starts on mh-a (mh-b cordoned), and may only move to mh-b.
	p.must("host", "cordon", "mh-b")
	p.must("run", "-d", "--name", "web", "--restart", "always", "kanga.test/busybox", "sleep", "1000")
	p.eventually("web to run", 60*time.Second, func() bool { return p.get("web").Status.Phase == api.PhaseRunning })
	web := p.get("web")
	if web.Status.Host != "mh-a" {
		t.Fatalf("web runs on %q with mh-b cordoned", web.Status.Host)
	}
	oldPID := web.Status.Containers[0].PID
	frozen := p.agents["mh-a"]
	p.must("host", "cordon", "mh-a")
	p.must("host", "uncordon", "mh-b")

	if err := syscall.Kill(frozen.proc.Pid(), syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	thawed := false
	thaw := func() {
		if !thawed {
			thawed = true
			_ = syscall.Kill(frozen.proc.Pid(), syscall.SIGCONT)
		}
	}
	defer thaw()
	stopped := time.Now()
	var last api.Instance
	defer func() {
		if t.Failed() {
			t.Logf("web last seen: uid %s %s on %q: %s %s", last.UID, last.Status.Phase, last.Status.Host, last.Status.Reason, last.Status.Message)
		}
	}()
	p.eventually("web to run on mh-b while mh-a is frozen", 60*time.Second, func() bool {
		last = p.get("web")
		return last.Status.Phase == api.PhaseRunning && last.Status.Host == "mh-b"
	})
	t.Logf("web Running on mh-b %.1fs after mh-a's agent was frozen (observed by polling)", time.Since(stopped).Seconds())
	moved := p.get("web")

	thaw()
	p.eventually("the thawed agent to stop its copy of web", 60*time.Second, func() bool {
		return syscall.Kill(oldPID, 0) != nil && !strings.Contains(frozen.ctrOut("tasks", "ls"), web.UID)
	})
	p.waitReady("mh-a")
	if n := strings.Count(p.agents["mh-b"].ctrOut("tasks", "ls"), moved.UID); n != 1 {
		t.Fatalf("%d copies of the re-created web on mh-b, want 1", n)
	}
	p.must("host", "uncordon", "mh-a")
}

// TestMultiHostReplicas: two kanga server replicas on a real three-member
// etcd cluster; the agent names both. The replica it is connected to is
// killed: the agent moves to the other, its host stays in the pool and
// nothing is re-created; the other replica serves the API and places.
func TestMultiHostReplicas(t *testing.T) {
	bin := k8sBinaries(t)
	endpoints, _ := startEtcdCluster(t, filepath.Join(bin, "etcd"), t.TempDir())
	etcdFlag := []string{"--etcd-endpoints", strings.Join(endpoints, ",")}
	var second *hostPool
	p := startPoolWith(t, map[string]string{"mh-a": "a"}, etcdFlag, func(p *hostPool) {
		dir := filepath.Dir(p.dataDir)
		second = &hostPool{
			platform: &platform{t: t, bin: p.bin, dataDir: filepath.Join(dir, "server2"), config: filepath.Join(dir, "client2.json"),
				listen: "127.0.0.1:" + strconv.Itoa(harness.FreePort(t)), logPath: filepath.Join(dir, "server2.log")},
			agentURL: "https://127.0.0.1:" + strconv.Itoa(harness.FreePort(t)),
			srvArgs:  etcdFlag,
		}
		second.startServer()
		t.Cleanup(second.stopServer)
		// The first replica's URL first: that is the one the agent uses.
		p.joinURL = p.agentURL + "," + second.agentURL
	})
	if a, b := p.joinToken(), second.joinToken(); a != b {
		t.Fatalf("replicas on one etcd cluster hand out different join tokens:\n%s\n%s", a, b)
	}
	p.importEverywhere()
	p.must("run", "-d", "--name", "web", "--restart", "always", "kanga.test/busybox", "sleep", "1000")
	p.eventually("web to run", 60*time.Second, func() bool { return p.get("web").Status.Phase == api.PhaseRunning })
	before := p.get("web")

	p.srv.Kill()
	// From here the pool is driven (and cleaned up) through the second
	// replica.
	p.srv, p.platform, second.srv = second.srv, second.platform, nil
	p.waitReady("mh-a")
	// Longer than the lease and a new leader's startup grace together.
	time.Sleep(12 * time.Second)
	after := p.get("web")
	if after.UID != before.UID || after.Status.Host != "mh-a" || after.Status.Phase != api.PhaseRunning ||
		after.Status.Containers[0].PID != before.Status.Containers[0].PID {
		t.Fatalf("web after its agent's replica died: uid %s on %q %s pid %d; before: uid %s pid %d",
			after.UID, after.Status.Host, after.Status.Phase, after.Status.Containers[0].PID, before.UID, before.Status.Containers[0].PID)
	}
	out := p.must("run", "--rm", "kanga.test/busybox", "echo", "through the second replica")
	if !strings.Contains(out, "through the second replica") {
		t.Fatalf("attached run through the second replica printed %q", out)
	}
	// The lease is held through the second replica now.
	b, _ := os.ReadFile(p.agents["mh-a"].logPath)
	if !strings.Contains(string(b), "holding its lease\" component=hostlink host=mh-a server="+second.agentURL) {
		t.Fatalf("the agent never held its lease through the second replica %s:\n%s", second.agentURL, harness.Tail(string(b), 3000))
	}
}
