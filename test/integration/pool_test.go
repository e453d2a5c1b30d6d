package integration

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/internal/agent/network"
	"github.com/kanga-run/kanga/internal/agent/pool"
)

// poolStatus reads the status file the agent's pool keeps.
func (p *platform) poolStatus() pool.Status {
	p.t.Helper()
	var st pool.Status
	b, err := os.ReadFile(filepath.Join(p.dataDir, "agent", "pool.json"))
	if err == nil {
		_ = json.Unmarshal(b, &st)
	}
	return st
}

// netnsDir is where the agent keeps this platform's namespace files.
func (p *platform) netnsDir() string {
	sum := sha256.Sum256([]byte(filepath.Join(p.dataDir, "network")))
	return filepath.Join("/run/kanga/netns", hex.EncodeToString(sum[:])[:12])
}

// netID is the network sandbox instance uid uses, as the agent records it.
func (p *platform) netID(uid string) string {
	p.t.Helper()
	b, err := os.ReadFile(filepath.Join(p.dataDir, "agent", "sandboxes", uid, "netns-id"))
	if err != nil {
		p.t.Fatalf("no netns-id for %s: %v", uid, err)
	}
	return strings.TrimSpace(string(b))
}

// poolNetNS lists the pooled sandboxes that have a namespace file.
func (p *platform) poolNetNS() map[string]bool {
	ids := map[string]bool{}
	entries, _ := os.ReadDir(p.netnsDir())
	for _, e := range entries {
		if pool.IsPoolID(e.Name()) {
			ids[e.Name()] = true
		}
	}
	return ids
}

// leases maps the holder of each host-local address lease to the address.
func (p *platform) leases() map[string]string {
	held := map[string]string{}
	dir := filepath.Join(p.dataDir, "network", "ipam", network.DefaultNetworkName)
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			continue
		}
		if f := strings.Fields(string(b)); len(f) > 0 {
			held[f[0]] = e.Name()
		}
	}
	return held
}

// gone tells whether nothing of network sandbox id is left; assertGone
// says what is.
func (p *platform) gone(id string) bool {
	if _, err := os.Stat(filepath.Join(p.netnsDir(), id)); !os.IsNotExist(err) {
		return false
	}
	if _, ok := p.leases()[id]; ok {
		return false
	}
	return !strings.Contains(iptablesRules(p.t), id)
}

// assertGone checks that nothing of network sandbox id is left: namespace
// file, address lease, iptables rule.
func (p *platform) assertGone(id string) {
	p.t.Helper()
	if _, err := os.Stat(filepath.Join(p.netnsDir(), id)); !os.IsNotExist(err) {
		p.t.Errorf("netns file of %s left (%v)", id, err)
	}
	if ip, ok := p.leases()[id]; ok {
		p.t.Errorf("address %s still leased to %s", ip, id)
	}
	if rules := iptablesRules(p.t); strings.Contains(rules, id) {
		p.t.Errorf("iptables rules of %s left:\n%s", id, grepLines(rules, id))
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestPoolInstanceNetwork: instances started from the warm pool get a
// working network of their own (distinct sandboxes and addresses, the
// gateway and each other reachable); deleting them hands their sandboxes
// back for the tenant only, and stopping the platform destroys them.
func TestPoolInstanceNetwork(t *testing.T) {
	p := startPlatformWith(t, "--pool-min", "2", "--pool-max", "4")
	p.importImages()
	p.eventually("2 pooled sandboxes", 60*time.Second, func() bool { return p.poolStatus().Ready == 2 })

	p.must("run", "-d", "--name", "pool-a", "kanga.test/busybox", "sleep", "1000")
	p.must("run", "-d", "--name", "pool-b", "kanga.test/busybox", "sleep", "1000")
	a, b := p.running("pool-a"), p.running("pool-b")
	ida, idb := p.netID(a.UID), p.netID(b.UID)
	if !pool.IsPoolID(ida) || !pool.IsPoolID(idb) {
		t.Fatalf("sandboxes %q and %q are not pooled", ida, idb)
	}
	if ida == idb {
		t.Fatalf("both instances use sandbox %s", ida)
	}
	if a.Status.IP == b.Status.IP {
		t.Fatalf("both instances have address %s", a.Status.IP)
	}
	if st := p.poolStatus(); st.Hits < 2 {
		t.Errorf("pool status %+v: want 2 hits", st)
	}
	held := p.leases()
	if held[ida] != a.Status.IP || held[idb] != b.Status.IP {
		t.Errorf("leases %v do not match %s=%s, %s=%s", held, ida, a.Status.IP, idb, b.Status.IP)
	}
	// The instance's own name resolves to the pooled sandbox's address.
	if hosts := p.must("exec", "pool-a", "cat", "/etc/hosts"); !strings.Contains(hosts, a.Status.IP+"\tpool-a\n") {
		t.Errorf("/etc/hosts of pool-a lacks %s:\n%s", a.Status.IP, hosts)
	}
	p.pingFromHost(a.Status.IP)
	p.ping("pool-a", b.Status.IP)
	p.ping("pool-b", a.Status.IP)

	p.must("rm", "-f", "pool-a", "pool-b")
	p.eventually("both gone", 60*time.Second, func() bool {
		return p.kanga("inspect", "pool-a").code != 0 && p.kanga("inspect", "pool-b").code != 0
	})
	if _, err := os.Stat(filepath.Join(p.dataDir, "agent", "sandboxes", a.UID)); !os.IsNotExist(err) {
		t.Errorf("sandbox dir of pool-a left (%v)", err)
	}
	p.eventually("both sandboxes recycled", 30*time.Second, func() bool { return p.poolStatus().Recycled == 2 })
	p.stop()
	p.assertGone(ida)
	p.assertGone(idb)
}

// TestPoolFollowsBurst: a burst of creates raises the pool's target above
// its minimum, and a window without creates brings it back.
func TestPoolFollowsBurst(t *testing.T) {
	p := startPlatformWith(t, "--pool-min", "1", "--pool-max", "8", "--pool-window", "10s")
	p.importImages()
	p.eventually("1 pooled sandbox", 60*time.Second, func() bool { return p.poolStatus().Ready == 1 })

	const n = 10
	var runs []<-chan result
	for i := 0; i < n; i++ {
		runs = append(runs, p.kangaAsync("run", "-d", "--name", fmt.Sprintf("burst-%d", i), "kanga.test/busybox", "sleep", "1000"))
	}
	for i, ch := range runs {
		if r := <-ch; r.code != 0 {
			t.Fatalf("run burst-%d: exit %d: %s", i, r.code, r.stderr)
		}
	}
	grew := 0
	p.eventually("the target to grow", 60*time.Second, func() bool {
		grew = p.poolStatus().Target
		return grew > 1
	})
	ips, ids := map[string]string{}, map[string]string{}
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("burst-%d", i)
		inst := p.running(name)
		if other, ok := ips[inst.Status.IP]; ok {
			t.Errorf("%s and %s share address %s", name, other, inst.Status.IP)
		}
		ips[inst.Status.IP] = name
		if b, err := os.ReadFile(filepath.Join(p.dataDir, "agent", "sandboxes", inst.UID, "netns-id")); err == nil {
			id := strings.TrimSpace(string(b))
			if other, ok := ids[id]; ok {
				t.Errorf("%s and %s share sandbox %s", name, other, id)
			}
			ids[id] = name
		}
	}
	log, _ := os.ReadFile(p.logPath)
	if !strings.Contains(string(log), "pool target changed") {
		t.Error("the agent did not log the target change")
	}
	t.Logf("target grew to %d; %d of %d instances got a pooled sandbox; status %+v", grew, len(ids), n, p.poolStatus())

	p.eventually("the pool to shrink back to 1", 90*time.Second, func() bool {
		st := p.poolStatus()
		return st.Target == 1 && st.Ready == 1 && st.Filling == 0
	})
	p.eventually("one pooled namespace", 30*time.Second, func() bool {
		return len(p.poolNetNS())-len(ids) == 1
	})
}

// TestPoolCrashLeaksNothing: kill -9 of kanga up with sandboxes ready in
// the pool and one in use by an instance. After a restart the unclaimed
// ones are destroyed, the claimed one keeps serving its instance and goes
// with it, and a clean stop leaves no pooled sandbox at all.
func TestPoolCrashLeaksNothing(t *testing.T) {
	baseline := iptablesRules(t)
	p := startPlatformWith(t, "--pool-min", "3", "--pool-max", "3")
	p.importImages()
	p.eventually("3 pooled sandboxes", 60*time.Second, func() bool { return p.poolStatus().Ready == 3 })
	p.must("run", "-d", "--name", "survivor", "kanga.test/busybox", "sleep", "1000")
	inst := p.running("survivor")
	used := p.netID(inst.UID)
	if !pool.IsPoolID(used) {
		t.Fatalf("survivor's sandbox %q is not pooled", used)
	}
	p.eventually("the pool refilled", 60*time.Second, func() bool {
		return p.poolStatus().Ready == 3 && len(p.poolNetNS()) == 4
	})
	unclaimed := p.poolNetNS()
	delete(unclaimed, used)
	held := p.leases()
	for id := range unclaimed {
		if _, ok := held[id]; !ok {
			t.Fatalf("pooled sandbox %s holds no lease before the crash", id)
		}
	}

	p.crash()
	p.start()
	again := p.running("survivor")
	if again.Status.IP != inst.Status.IP || p.netID(inst.UID) != used {
		t.Errorf("after restart survivor has %s in %s, want %s in %s", again.Status.IP, p.netID(inst.UID), inst.Status.IP, used)
	}
	if _, err := os.Stat(filepath.Join(p.netnsDir(), used)); err != nil {
		t.Errorf("survivor's sandbox is gone after the restart: %v", err)
	}
	p.pingFromHost(again.Status.IP)
	// The restarted agent cleans up in the background of the API.
	p.eventually("the unclaimed sandboxes to be destroyed", 60*time.Second, func() bool {
		for id := range unclaimed {
			if !p.gone(id) {
				return false
			}
		}
		return true
	})
	for id := range unclaimed {
		p.assertGone(id)
	}

	p.must("rm", "-f", "survivor")
	p.eventually("survivor to be gone", 60*time.Second, func() bool { return p.kanga("inspect", "survivor").code != 0 })
	p.eventually("survivor's sandbox recycled", 30*time.Second, func() bool { return p.poolStatus().Recycled == 1 })

	p.stop() // a clean stop destroys the pool, recycled sandboxes included
	p.assertGone(used)
	if left := p.poolNetNS(); len(left) > 0 {
		t.Errorf("pooled namespaces left after stop: %v", left)
	}
	for id, ip := range p.leases() {
		if pool.IsPoolID(id) {
			t.Errorf("address %s still leased to %s after stop", ip, id)
		}
	}
	if added := diffLines(baseline, iptablesRules(t)); strings.Contains(added, pool.Prefix) {
		t.Errorf("iptables rules of pooled sandboxes left:\n%s", grepLines(added, pool.Prefix))
	}
}

// asTenant runs the CLI with another tenant's token.
// pingFromHost checks that the host reaches an instance (instances do not
// reach the host's own addresses).
func (p *platform) pingFromHost(ip string) {
	p.t.Helper()
	if out, err := exec.Command("/bin/busybox", "ping", "-c", "1", "-W", "5", ip).CombinedOutput(); err != nil {
		p.t.Fatalf("the host does not reach %s: %v: %s", ip, err, out)
	}
}

func (p *platform) asTenant(token string, args ...string) result {
	p.t.Helper()
	r, err := p.cli(0, []string{"KANGA_TOKEN=" + token}, nil, args...)
	if err != nil {
		p.t.Fatalf("kanga %v: %v", args, err)
	}
	return r
}

// conntrackOf lists the host's connection-tracking entries that name ip.
func conntrackOf(t *testing.T, ip string) []string {
	t.Helper()
	b, err := os.ReadFile("/proc/net/nf_conntrack")
	if err != nil {
		t.Skipf("no /proc/net/nf_conntrack: %v", err)
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, "src="+ip+" ") || strings.Contains(l, "dst="+ip+" ") {
			out = append(out, l)
		}
	}
	return out
}

// TestPoolSandboxCarriesNothing: an instance of another tenant, started
// from the pool after one was deleted, finds nothing of it: not its files,
// environment or processes, not its sandbox or address, and the host keeps
// no connection-tracking entry of the deleted instance's address for
// whoever gets it next.
func TestPoolSandboxCarriesNothing(t *testing.T) {
	p := startPlatformWith(t, "--pool-min", "2", "--pool-max", "2")
	p.importImages()
	token := strings.TrimSpace(p.must("tenant", "create", "second-tenant"))
	if r := p.asTenant(token, "image", "import", p.imagePath("busybox.tar")); r.code != 0 {
		t.Fatalf("import as second-tenant: %s", r.stderr)
	}
	p.eventually("2 pooled sandboxes", 60*time.Second, func() bool { return p.poolStatus().Ready == 2 })

	p.must("run", "-d", "--name", "first", "-e", "SECRET=first-secret", "kanga.test/busybox",
		"sh", "-c", "echo first-secret > /tmp/left-behind; sleep 1001 & exec sleep 1000")
	first := p.running("first")
	firstNet := p.netID(first.UID)
	if !pool.IsPoolID(firstNet) {
		t.Fatalf("first's sandbox %q is not pooled", firstNet)
	}
	p.eventually("first's file", 30*time.Second, func() bool {
		return p.kanga("exec", "first", "cat", "/tmp/left-behind").code == 0
	})
	// Traffic with the host leaves connection-tracking entries of first's
	// address in the host's table: the premise of the check after delete.
	p.pingFromHost(first.Status.IP)
	if len(conntrackOf(t, first.Status.IP)) == 0 {
		t.Fatalf("no conntrack entry of %s after a ping: the check below would prove nothing", first.Status.IP)
	}

	p.must("rm", "-f", "first")
	p.eventually("first to be gone", 60*time.Second, func() bool { return p.kanga("inspect", "first").code != 0 })
	// first's sandbox is kept for the default tenant only (or destroyed).
	p.eventually("first's sandbox recycled or destroyed", 30*time.Second, func() bool {
		return p.poolStatus().Recycled == 1 || p.gone(firstNet)
	})
	if left := conntrackOf(t, first.Status.IP); len(left) > 0 {
		t.Errorf("conntrack entries of deleted first's address %s left:\n%s", first.Status.IP, strings.Join(left, "\n"))
	}

	if r := p.asTenant(token, "run", "-d", "--name", "second", "kanga.test/busybox", "sleep", "1000"); r.code != 0 {
		t.Fatalf("run as second-tenant: %s", r.stderr)
	}
	var second api.Instance
	p.eventually("second to run", 60*time.Second, func() bool {
		r := p.asTenant(token, "inspect", "second")
		var insts []api.Instance
		if r.code != 0 || json.Unmarshal([]byte(r.stdout), &insts) != nil || len(insts) != 1 {
			return false
		}
		second = insts[0]
		return second.Status.Phase == api.PhaseRunning && second.Status.IP != ""
	})
	secondNet := p.netID(second.UID)
	if !pool.IsPoolID(secondNet) || secondNet == firstNet {
		t.Errorf("second's sandbox is %q; want a pooled one other than first's %q", secondNet, firstNet)
	}
	inSecond := func(args ...string) result {
		return p.asTenant(token, append([]string{"exec", "second"}, args...)...)
	}
	if r := inSecond("cat", "/tmp/left-behind"); r.code == 0 {
		t.Errorf("second reads first's file: %q", r.stdout)
	}
	if r := inSecond("env"); r.code != 0 || strings.Contains(r.stdout, "first-secret") {
		t.Errorf("second's environment (exit %d) holds first's: %q", r.code, r.stdout)
	}
	if r := inSecond("ps"); r.code != 0 || strings.Contains(r.stdout, "1001") || !strings.Contains(r.stdout, "sleep 1000") {
		t.Errorf("second's processes (exit %d):\n%s", r.code, r.stdout)
	}
	r := inSecond("ip", "-o", "-4", "addr")
	if r.code != 0 || !strings.Contains(r.stdout, second.Status.IP+"/") {
		t.Errorf("second's addresses (exit %d) lack its own %s:\n%s", r.code, second.Status.IP, r.stdout)
	}
	if second.Status.IP != first.Status.IP && strings.Contains(r.stdout, first.Status.IP+"/") {
		t.Errorf("second's namespace holds first's address %s:\n%s", first.Status.IP, r.stdout)
	}
	if r := p.asTenant(token, "rm", "-f", "second"); r.code != 0 {
		t.Errorf("rm second: %s", r.stderr)
	}
	p.eventually("second to be gone", 60*time.Second, func() bool {
		return p.asTenant(token, "inspect", "second").code != 0
	})
	p.stop() // destroys the sandboxes kept for their tenants
	p.assertGone(firstNet)
	p.assertGone(secondNet)
}

// TestImagePrewarm: kanga image prewarm makes the image ready on the host
// and fills the pool to its maximum ahead of a burst; an image the tenant
// does not have and cannot pull is refused with a clear error; image ls
// reports when an image was last started.
func TestImagePrewarm(t *testing.T) {
	p := startPlatformWith(t, "--pool-min", "1", "--pool-max", "5")
	p.importImages()
	p.eventually("1 pooled sandbox", 60*time.Second, func() bool { return p.poolStatus().Ready == 1 })

	if ls := p.must("image", "ls"); !strings.Contains(ls, "LAST STARTED") ||
		!strings.HasSuffix(strings.TrimSpace(grepLines(ls, "kanga.test/busybox:latest")), " -") {
		t.Errorf("image ls before any start:\n%s", ls)
	}
	out := p.must("image", "prewarm", "kanga.test/busybox", "--hosts", "2")
	if !strings.Contains(out, "kanga.test/busybox:latest") || !strings.Contains(out, "false") {
		t.Errorf("prewarm output:\n%s", out)
	}
	p.eventually("the pool to fill to its maximum", 60*time.Second, func() bool {
		st := p.poolStatus()
		return st.Target == 5 && st.Ready == 5
	})
	if st := p.poolStatus(); st.Recent != 0 || st.Hits != 0 {
		t.Errorf("prewarm counted as creates: %+v", st)
	}

	// A local archive name cannot be pulled: the answer names the image
	// and says why, and nothing is left half done.
	r := p.kanga("image", "prewarm", "127.0.0.1:1/nothing/here:v1")
	if r.code == 0 || !strings.Contains(r.stderr, "127.0.0.1:1/nothing/here:v1") {
		t.Errorf("prewarm of a missing image: exit %d, %q", r.code, r.stderr)
	}
	if r := p.kanga("image", "prewarm", "kanga.test/busybox", "--hosts", "-1"); r.code == 0 || !strings.Contains(r.stderr, "--hosts") {
		t.Errorf("prewarm --hosts -1: exit %d, %q", r.code, r.stderr)
	}

	p.must("run", "-d", "--name", "warm", "kanga.test/busybox", "sleep", "1000")
	p.running("warm")
	ls := p.must("image", "ls")
	if line := strings.TrimSpace(grepLines(ls, "kanga.test/busybox:latest")); !strings.HasSuffix(line, "ago") {
		t.Errorf("image ls after a start shows no last start:\n%s", ls)
	}
	p.must("rm", "-f", "warm")
}

// TestPoolRecyclesWithinTenant: a deleted instance's pooled sandbox serves
// the same tenant's next instance (same namespace and address, no CNI),
// which finds nothing of the previous one: no file, environment, process
// or connection-tracking entry; another tenant never gets it.
func TestPoolRecyclesWithinTenant(t *testing.T) {
	p := startPlatformWith(t, "--pool-min", "1", "--pool-max", "4")
	p.importImages()
	token := strings.TrimSpace(p.must("tenant", "create", "other-tenant"))
	if r := p.asTenant(token, "image", "import", p.imagePath("busybox.tar")); r.code != 0 {
		t.Fatalf("import as other-tenant: %s", r.stderr)
	}
	p.eventually("1 pooled sandbox", 60*time.Second, func() bool { return p.poolStatus().Ready == 1 })

	p.must("run", "-d", "--name", "one", "-e", "SECRET=one-secret", "kanga.test/busybox",
		"sh", "-c", "echo one-secret > /tmp/left-behind; sleep 1001 & exec sleep 1000")
	one := p.running("one")
	sb := p.netID(one.UID)
	if !pool.IsPoolID(sb) {
		t.Fatalf("one's sandbox %q is not pooled", sb)
	}
	p.eventually("one's file", 30*time.Second, func() bool {
		return p.kanga("exec", "one", "cat", "/tmp/left-behind").code == 0
	})
	p.pingFromHost(one.Status.IP)
	p.must("rm", "-f", "one")
	p.eventually("one to be gone", 60*time.Second, func() bool { return p.kanga("inspect", "one").code != 0 })
	p.eventually("one's sandbox recycled", 30*time.Second, func() bool { return p.poolStatus().Recycled == 1 })
	if left := conntrackOf(t, one.Status.IP); len(left) > 0 {
		t.Errorf("conntrack entries of %s left for the recycled sandbox:\n%s", one.Status.IP, strings.Join(left, "\n"))
	}

	// Another tenant gets a fresh sandbox, never the recycled one.
	if r := p.asTenant(token, "run", "-d", "--name", "stranger", "kanga.test/busybox", "sleep", "1000"); r.code != 0 {
		t.Fatalf("run as other-tenant: %s", r.stderr)
	}
	p.eventually("stranger to run", 60*time.Second, func() bool {
		r := p.asTenant(token, "inspect", "stranger")
		return r.code == 0 && strings.Contains(r.stdout, `"phase": "Running"`)
	})
	if st := p.poolStatus(); st.Recycled != 1 || st.Reused != 0 {
		t.Errorf("pool status %+v after another tenant's create: the recycled sandbox must stay", st)
	}

	p.must("run", "-d", "--name", "two", "kanga.test/busybox", "sleep", "1000")
	two := p.running("two")
	if got := p.netID(two.UID); got != sb || two.Status.IP != one.Status.IP {
		t.Errorf("two has sandbox %s with %s; want one's recycled %s with %s", got, two.Status.IP, sb, one.Status.IP)
	}
	if st := p.poolStatus(); st.Reused != 1 || st.Recycled != 0 {
		t.Errorf("pool status %+v: want the recycled sandbox reused", st)
	}
	if r := p.kanga("exec", "two", "cat", "/tmp/left-behind"); r.code == 0 {
		t.Errorf("two reads one's file: %q", r.stdout)
	}
	if env := p.must("exec", "two", "env"); strings.Contains(env, "one-secret") {
		t.Errorf("two's environment holds one's: %q", env)
	}
	if ps := p.must("exec", "two", "ps"); strings.Contains(ps, "1001") {
		t.Errorf("two sees one's process:\n%s", ps)
	}
	if hosts := p.must("exec", "two", "cat", "/etc/hosts"); !strings.Contains(hosts, two.Status.IP+"\ttwo\n") || strings.Contains(hosts, "\tone\n") {
		t.Errorf("/etc/hosts of two:\n%s", hosts)
	}
	p.pingFromHost(two.Status.IP)

	p.must("rm", "-f", "two")
	if r := p.asTenant(token, "rm", "-f", "stranger"); r.code != 0 {
		t.Errorf("rm stranger: %s", r.stderr)
	}
	p.eventually("both gone", 60*time.Second, func() bool {
		return p.kanga("inspect", "two").code != 0 && p.asTenant(token, "inspect", "stranger").code != 0
	})
	p.stop()
	p.assertGone(sb)
}
