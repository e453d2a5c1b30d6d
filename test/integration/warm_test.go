package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/internal/agent/warm"
	"github.com/kanga-run/kanga/internal/testenv"
	"github.com/kanga-run/kanga/internal/testenv/harness"
)

// startWarmPlatform starts `kanga up` with warm containers on (and the
// network pool off, so every warm container's network is its own), on a
// bridge kangawmN and subnet 10.241.N.0/24 of its own. The holder binary
// is built next to the test's kanga binary (binary), where the agent
// looks for it.
func startWarmPlatform(t *testing.T, upArgs ...string) *platform {
	t.Helper()
	testenv.RequireRoot(t)
	testenv.RequireBinaries(t, "containerd", "crun")
	return startPlatformOn(t, harness.Net{DirPrefix: "kanga-wm-", BridgePrefix: "kangawm", SubnetPrefix: "10.241"},
		append([]string{"--pool-max", "0", "--debug"}, upArgs...)...)
}

func (p *platform) warmStatus() warm.Status {
	var st warm.Status
	b, err := os.ReadFile(filepath.Join(p.dataDir, "agent", "warm.json"))
	if err == nil {
		_ = json.Unmarshal(b, &st)
	}
	return st
}

func (p *platform) warmReady() int {
	n := 0
	for _, k := range p.warmStatus().Keys {
		n += k.Ready
	}
	return n
}

// warmOf is the warm container the (one-container) instance uid claimed,
// or "".
func (p *platform) warmOf(uid string) string {
	recs, _ := filepath.Glob(filepath.Join(p.dataDir, "agent", "sandboxes", uid, "ctr-*"))
	if len(recs) != 1 {
		return ""
	}
	b, err := os.ReadFile(recs[0])
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// warmLeft lists what is left on the host of warm container id.
func (p *platform) warmLeft(id string) []string {
	var left []string
	if strings.Contains(p.ctr("containers", "ls", "-q"), id) {
		left = append(left, "containerd container")
	}
	if strings.Contains(p.ctr("snapshots", "ls"), id) {
		left = append(left, "snapshot")
	}
	if out, _ := exec.Command("pgrep", "-f", "--", "-id "+id).Output(); len(out) > 0 {
		left = append(left, "shim "+strings.TrimSpace(string(out)))
	}
	left = append(left, cgroupsOf(id, "*")...)
	if _, err := os.Stat(filepath.Join(p.netnsDir(), id)); err == nil {
		left = append(left, "netns")
	}
	for _, d := range []string{"sandboxes", "logs"} {
		if _, err := os.Stat(filepath.Join(p.dataDir, "agent", d, id)); err == nil {
			left = append(left, d+" dir")
		}
	}
	return left
}

func (p *platform) warmRun(name string, spec api.InstanceSpec) api.Instance {
	p.t.Helper()
	p.eventually("a warm container ready", 60*time.Second, func() bool { return p.warmReady() > 0 })
	p.runSpec(api.CreateInstanceRequest{Name: name, Spec: spec})
	inst := p.running(name)
	if !strings.HasPrefix(p.warmOf(inst.UID), warm.Prefix) {
		p.t.Fatalf("%s did not start in a warm container", name)
	}
	return inst
}

func busybox(args ...string) api.ContainerSpec {
	return api.ContainerSpec{Name: "main", Image: "kanga.test/busybox", Command: args}
}

// TestWarmContainer: an instance started in a warm container runs its own
// process with its own args, env, cwd, hostname, /etc/hosts, address and
// limits; logs, exec, stats and restarts work; /.kanga shows the holder
// only; a warm container serves one instance only; delete leaves nothing.
func TestWarmContainer(t *testing.T) {
	p := startWarmPlatform(t, "--warm-max", "2")
	p.importImages()
	// The first create of the image is a miss that teaches the pool the
	// key (and gives a container made the usual way to compare with).
	p.must("run", "-d", "--name", "cold", "--runtime", "crun", "kanga.test/busybox", "sleep", "1000")
	cold := p.running("cold")
	if p.warmOf(cold.UID) != "" {
		t.Fatal("the first instance of the image found a warm container")
	}

	c := busybox("sh", "-c", "echo started $GREETING; exec sleep 1000")
	c.Env = []api.EnvVar{{Name: "GREETING", Value: "hello-warm"}}
	c.WorkingDir = "/tmp"
	inst := p.warmRun("w1", api.InstanceSpec{
		Containers: []api.ContainerSpec{c}, Runtime: "crun",
		Resources: api.Resources{Memory: "48Mi", CPU: "500m", Pids: 77},
	})
	warmID := p.warmOf(inst.UID)

	out := p.must("exec", "w1", "sh", "-c",
		`hostname; cat /etc/hostname; grep w1 /etc/hosts; echo "$(cat /proc/1/cmdline | tr '\0' ' ')"; readlink /proc/1/cwd; tr '\0' '\n' </proc/1/environ | grep -E '^(GREETING|HOSTNAME)=' | sort; ls -A /.kanga`)
	// sh exec'd sleep: pid 1 is sleep now.
	want := []string{"w1", "w1", inst.Status.IP + "\tw1", "sleep 1000 ", "/tmp", "GREETING=hello-warm", "HOSTNAME=w1", "init"}
	got := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("inside w1:\n got %q\nwant %q", got, want)
	}
	// The sandbox a container made the usual way gets: capabilities,
	// seccomp filter and no_new_privs (the holder's survive its execve).
	sandbox := func(name string) string {
		return strings.TrimSpace(p.must("exec", name, "grep", "-E", "^(Cap|Seccomp|NoNewPrivs)", "/proc/1/status"))
	}
	warmSandbox, coldSandbox := sandbox("w1"), sandbox("cold")
	if warmSandbox != coldSandbox {
		t.Errorf("the sandbox differs from a usual container's:\nwarm: %s\ncold: %s", warmSandbox, coldSandbox)
	}
	for _, want := range []string{"Seccomp:\t2", "NoNewPrivs:\t1", "CapEff:\t" + defaultCapEff} {
		if !strings.Contains(warmSandbox, want) {
			t.Errorf("warm container's /proc/1/status lacks %q:\n%s", want, warmSandbox)
		}
	}
	if r := p.kanga("exec", "w1", "unshare", "-Urm", "true"); r.code == 0 {
		t.Error("unshare -Urm worked in a warm container")
	}
	// Limits, read from the cgroup files the kernel enforces.
	read := func(ctrl, file string) string {
		b, err := os.ReadFile(cgroupPath(warmID, ctrl, file))
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(b))
	}
	if v := read("memory", "memory.limit_in_bytes"); v != strconv.Itoa(48<<20) {
		t.Errorf("memory limit %s, want %d", v, 48<<20)
	}
	if v := read("pids", "pids.max"); v != "77" {
		t.Errorf("pids.max %s, want 77", v)
	}
	if q, per := read("cpu", "cpu.cfs_quota_us"), read("cpu", "cpu.cfs_period_us"); q+"/"+per != "50000/100000" {
		t.Errorf("cpu quota %s/%s, want 50000/100000", q, per)
	}
	// The process is in the warm leaf, under the limited parent.
	if pids := read("memory", "warm/cgroup.procs"); !strings.Contains(pids, strconv.Itoa(inst.Status.Containers[0].PID)) {
		t.Errorf("pid %d not in the container cgroup (%s)", inst.Status.Containers[0].PID, pids)
	}
	p.eventually("w1's log", 30*time.Second, func() bool {
		return strings.Contains(p.kanga("logs", "w1").stdout, "started hello-warm")
	})
	if r := p.kanga("stats", "w1"); r.code != 0 || !strings.Contains(r.stdout, "w1") {
		t.Errorf("stats w1: exit %d: %s%s", r.code, r.stdout, r.stderr)
	}

	// Never reused: the next instance gets another container and address.
	inst2 := p.warmRun("w2", api.InstanceSpec{Containers: []api.ContainerSpec{busybox("sleep", "1000")}, Runtime: "crun"})
	if p.warmOf(inst2.UID) == warmID || inst2.Status.IP == inst.Status.IP {
		t.Errorf("w2 got w1's warm container or address: %s %s", p.warmOf(inst2.UID), inst2.Status.IP)
	}

	// A restart after an exit runs the instance's process directly.
	inst3 := p.warmRun("r1", api.InstanceSpec{
		Containers: []api.ContainerSpec{busybox("sh", "-c", "echo run; sleep 1; exit 3")},
		Runtime:    "crun", RestartPolicy: api.RestartAlways,
	})
	p.eventually("r1 to restart twice", 60*time.Second, func() bool {
		i := p.inspect("r1")
		return i.Status.Containers[0].RestartCount >= 2
	})
	if n := strings.Count(p.kanga("logs", "r1").stdout, "run\n"); n < 3 {
		t.Errorf("r1 logged %d runs, want at least 3", n)
	}
	if info := p.ctr("containers", "info", p.warmOf(inst3.UID)); !strings.Contains(info, `"kanga.dev/uid": "`+inst3.UID) || strings.Contains(info, "/.kanga") {
		t.Errorf("r1's container does not carry its own spec and labels:\n%s", harness.Tail(info, 2000))
	}

	ids := []string{warmID, p.warmOf(inst2.UID), p.warmOf(inst3.UID)}
	uids := []string{inst.UID, inst2.UID, inst3.UID}
	for _, n := range []string{"w1", "w2", "r1"} {
		p.must("rm", "-f", n)
	}
	for _, n := range []string{"w1", "w2", "r1"} {
		p.eventually(n+" to be gone", 60*time.Second, func() bool { return p.kanga("inspect", n).code != 0 })
	}
	for i, id := range ids {
		if left := p.warmLeft(id); len(left) > 0 {
			t.Errorf("left of %s's warm container %s: %v", uids[i], id, left)
		}
		if _, err := os.Stat(filepath.Join(p.dataDir, "agent", "sandboxes", uids[i])); err == nil {
			t.Errorf("sandbox dir of %s left", uids[i])
		}
		if hs := cgroupsOf(uids[i], "*"); len(hs) > 0 {
			t.Errorf("cgroups of %s left: %v", uids[i], hs)
		}
	}
	// The agent made network namespaces (the pool's, the cold instance's)
	// and set warm containers' hostnames from threads that joined their
	// namespaces; the process itself (its first thread, which /proc/PID/
	// net follows and which Go never ends) must still be in the host's.
	for _, ns := range []string{"net", "uts"} {
		want, err := os.Readlink("/proc/self/ns/" + ns)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/%s", p.Pid(), ns)); err != nil || got != want {
			t.Errorf("kanga up's %s namespace: %s %v; want the host's %s", ns, got, err, want)
		}
	}
}

// TestWarmTenants: warm containers are per tenant: another tenant's
// instance of the same image never gets one made for the first.
func TestWarmTenants(t *testing.T) {
	p := startWarmPlatform(t, "--warm-max", "1")
	p.importImages()
	token := strings.TrimSpace(p.must("tenant", "create", "other-tenant"))
	if r := p.asTenant(token, "image", "import", p.imagePath("busybox.tar")); r.code != 0 {
		t.Fatalf("import as other-tenant: %s", r.stderr)
	}
	p.must("run", "-d", "--name", "seed", "--runtime", "crun", "kanga.test/busybox", "sleep", "1000")
	p.running("seed")
	p.eventually("a warm container for the default tenant", 60*time.Second, func() bool { return p.warmReady() == 1 })
	if r := p.asTenant(token, "run", "-d", "--name", "theirs", "--runtime", "crun", "kanga.test/busybox", "sleep", "1000"); r.code != 0 {
		t.Fatalf("run as other-tenant: %s", r.stderr)
	}
	var theirs api.Instance
	p.eventually("theirs to run", 60*time.Second, func() bool {
		r := p.asTenant(token, "inspect", "theirs")
		var list []api.Instance
		if json.Unmarshal([]byte(r.stdout), &list) == nil && len(list) == 1 {
			theirs = list[0]
		} else if json.Unmarshal([]byte(r.stdout), &theirs) != nil {
			return false
		}
		return theirs.Status.Phase == api.PhaseRunning
	})
	if id := p.warmOf(theirs.UID); id != "" {
		t.Errorf("the other tenant's instance got warm container %s made for the default tenant", id)
	}
	for _, k := range p.warmStatus().Keys {
		if k.Tenant == "default" && k.Ready != 1 {
			t.Errorf("the default tenant's warm container is gone: %+v", k)
		}
	}
	p.asTenant(token, "rm", "-f", "theirs")
}

// TestWarmCrashLeaksNothing: after a kill -9 of the agent with warm
// containers ready and one claimed, the restarted agent adopts the claimed
// one and destroys the others, leaving nothing of them.
func TestWarmCrashLeaksNothing(t *testing.T) {
	p := startWarmPlatform(t, "--warm-max", "2", "--warm-min", "2")
	p.importImages()
	p.must("run", "-d", "--name", "seed", "--runtime", "crun", "kanga.test/busybox", "sleep", "1000")
	p.running("seed")
	inst := p.warmRun("survivor", api.InstanceSpec{Containers: []api.ContainerSpec{busybox("sleep", "1000")}, Runtime: "crun"})
	claimed := p.warmOf(inst.UID)
	p.eventually("2 warm containers ready", 60*time.Second, func() bool { return p.warmReady() == 2 })
	var unclaimed []string
	for _, id := range strings.Fields(p.ctr("containers", "ls", "-q")) {
		if strings.HasPrefix(id, warm.Prefix) && id != claimed {
			unclaimed = append(unclaimed, id)
		}
	}
	if len(unclaimed) != 2 {
		t.Fatalf("want 2 unclaimed warm containers, have %v", unclaimed)
	}

	p.crash()
	p.start()
	again := p.running("survivor")
	if again.Status.IP != inst.Status.IP || p.warmOf(inst.UID) != claimed {
		t.Errorf("after restart survivor has %s in %s, want %s in %s", again.Status.IP, p.warmOf(inst.UID), inst.Status.IP, claimed)
	}
	if out := p.must("exec", "survivor", "hostname"); strings.TrimSpace(out) != "survivor" {
		t.Errorf("exec in survivor after restart: %q", out)
	}
	p.eventually("the unclaimed warm containers destroyed", 60*time.Second, func() bool {
		for _, id := range unclaimed {
			if len(p.warmLeft(id)) > 0 {
				return false
			}
		}
		return true
	})
	for _, id := range unclaimed {
		if left := p.warmLeft(id); len(left) > 0 {
			t.Errorf("left of unclaimed %s: %v", id, left)
		}
	}
	p.must("rm", "-f", "survivor")
	p.eventually("survivor to be gone", 60*time.Second, func() bool { return p.kanga("inspect", "survivor").code != 0 })
	if left := p.warmLeft(claimed); len(left) > 0 {
		t.Errorf("left of survivor's %s: %v", claimed, left)
	}
	// A clean stop destroys the warm containers still ready.
	var ready []string
	for _, id := range strings.Fields(p.ctr("containers", "ls", "-q")) {
		if strings.HasPrefix(id, warm.Prefix) {
			ready = append(ready, id)
		}
	}
	p.purge()
	p.stop()
	for _, id := range ready {
		if out, _ := exec.Command("pgrep", "-f", "--", "-id "+id).Output(); len(out) > 0 {
			t.Errorf("shim of ready %s left after stop", id)
		}
		hs := cgroupsOf(id, "*")
		if len(hs) > 0 {
			t.Errorf("cgroups of ready %s left after stop: %v", id, hs)
		}
	}
}

// TestWarmRunc: warm containers work with runc as with crun: exec (runc
// finds the container by its cgroup paths), restart and delete.
func TestWarmRunc(t *testing.T) {
	p := startWarmPlatform(t, "--warm-max", "1")
	p.importImages()
	p.must("run", "-d", "--name", "seed", "--runtime", "runc", "kanga.test/busybox", "sleep", "1000")
	p.running("seed")
	inst := p.warmRun("w", api.InstanceSpec{
		Containers: []api.ContainerSpec{busybox("sh", "-c", "echo run; sleep 1; exit 1")},
		Runtime:    "runc", RestartPolicy: api.RestartAlways,
	})
	id := p.warmOf(inst.UID)
	if out := p.must("exec", "w", "hostname"); strings.TrimSpace(out) != "w" {
		t.Errorf("hostname in w: %q", out)
	}
	p.eventually("w to restart", 60*time.Second, func() bool {
		return p.inspect("w").Status.Containers[0].RestartCount >= 1
	})
	p.must("rm", "-f", "w")
	p.eventually("w to be gone", 60*time.Second, func() bool { return p.kanga("inspect", "w").code != 0 })
	if left := p.warmLeft(id); len(left) > 0 {
		t.Errorf("left of w's warm container %s: %v", id, left)
	}
}

// TestWarmClaimCutShort: an agent killed while its holder has not exec'd
// the process yet (here the holder is stopped, so the claim hangs in the
// hand-over) leaves a container still running the holder; the restarted
// agent must not adopt it as running, but start it anew with its real
// spec.
func TestWarmClaimCutShort(t *testing.T) {
	p := startWarmPlatform(t, "--warm-max", "1")
	p.importImages()
	p.must("run", "-d", "--name", "seed", "--runtime", "crun", "kanga.test/busybox", "sleep", "1000")
	p.running("seed")
	p.eventually("a warm container ready", 60*time.Second, func() bool { return p.warmReady() == 1 })
	var id, pid string
	for _, line := range strings.Split(p.ctr("tasks", "ls"), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && strings.HasPrefix(f[0], warm.Prefix) {
			id, pid = f[0], f[1]
		}
	}
	if id == "" {
		t.Fatal("no warm task found")
	}
	if err := exec.Command("kill", "-STOP", pid).Run(); err != nil {
		t.Fatal(err)
	}
	// In the background: run -d waits for the start, which hangs.
	runDone := p.kangaAsync("run", "-d", "--name", "cut", "--runtime", "crun", "kanga.test/busybox", "sleep", "1000")
	var uid string
	p.eventually("the claim to be recorded", 20*time.Second, func() bool {
		if r := p.kanga("inspect", "cut"); r.code != 0 {
			return false
		}
		uid = p.inspect("cut").UID
		return p.warmOf(uid) == id
	})
	p.crash()
	<-runDone
	p.start()
	inst := p.running("cut")
	if p.warmOf(uid) != id {
		t.Fatalf("cut no longer records %s", id)
	}
	if out := p.must("exec", "cut", "sh", "-c", `hostname; tr '\0' ' ' </proc/1/cmdline`); out != "cut\nsleep 1000 " {
		t.Errorf("inside cut after the restart: %q", out)
	}
	if inst.Status.Containers[0].PID == 0 || strconv.Itoa(inst.Status.Containers[0].PID) == pid {
		t.Errorf("cut runs as pid %d, the stopped holder was %s", inst.Status.Containers[0].PID, pid)
	}
	if info := p.ctr("containers", "info", id); strings.Contains(info, "/.kanga") {
		t.Errorf("cut's container still has the holder's spec")
	}
	p.must("rm", "-f", "cut")
	p.eventually("cut to be gone", 60*time.Second, func() bool { return p.kanga("inspect", "cut").code != 0 })
	if left := p.warmLeft(id); len(left) > 0 {
		t.Errorf("left of cut's %s: %v", id, left)
	}
}

// TestWarmTenantPurge: warm containers made for a tenant (here by a
// prewarm) go when the tenant is deleted, with everything they held.
func TestWarmTenantPurge(t *testing.T) {
	p := startWarmPlatform(t, "--warm-max", "2")
	tok := strings.TrimSpace(p.must("tenant", "create", "warm-gone"))
	defer p.kanga("tenant", "rm", "warm-gone")
	if r := p.asTenant(tok, "image", "import", p.imagePath("busybox.tar")); r.code != 0 {
		t.Fatalf("import: %s", r.stderr)
	}
	if r := p.asTenant(tok, "image", "prewarm", "kanga.test/busybox"); r.code != 0 {
		t.Fatalf("prewarm: %s", r.stderr)
	}
	count := func(ready bool) int {
		n := 0
		for _, k := range p.warmStatus().Keys {
			if k.Tenant == "warm-gone" {
				n += k.Ready
				if !ready {
					n += k.Filling
				}
			}
		}
		return n
	}
	mine := func() int { return count(false) }
	// Ready ones only: a fill is counted before its container exists.
	p.eventually("the tenant's warm containers", 60*time.Second, func() bool { return count(true) == 2 })
	var ids []string
	for _, id := range strings.Fields(p.ctr("containers", "ls", "-q")) {
		if strings.HasPrefix(id, warm.Prefix) {
			ids = append(ids, id)
		}
	}
	if len(ids) != 2 {
		t.Fatalf("warm containers in containerd: %v, want 2", ids)
	}
	p.must("tenant", "rm", "warm-gone")
	p.eventually("the deleted tenant's warm containers gone", 60*time.Second, func() bool {
		if mine() != 0 {
			return false
		}
		for _, id := range ids {
			if len(p.warmLeft(id)) > 0 {
				return false
			}
		}
		return true
	})
}
