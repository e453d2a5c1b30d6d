package integration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/client"
	"github.com/kanga-run/kanga/errdefs"
	"github.com/kanga-run/kanga/internal/testenv/harness"
)

// Finding 5 of issue 12: no default limits, no quotas, unbounded logs and
// unbounded instances. These tests run kanga up on real containerd and
// read what the kernel enforces.

func startQuotaPlatform(t *testing.T, upArgs ...string) *platform {
	t.Helper()
	p := startPlatformOn(t, harness.Net{DirPrefix: "kanga-qt-", BridgePrefix: "kangaqt", SubnetPrefix: "10.247"},
		append([]string{"--pool-max", "0"}, upArgs...)...)
	p.must("image", "import", p.imagePath("busybox.tar"))
	return p
}

// newTenant creates a tenant (with the platform's default quota, or the
// quota flag given), imports busybox into it and returns its token. Its
// instances are removed when the test ends, before the platform stops.
func (p *platform) newTenant(name string, args ...string) string {
	p.t.Helper()
	token := strings.TrimSpace(p.must(append([]string{"tenant", "create", name}, args...)...))
	if r := p.asTenant(token, "image", "import", p.imagePath("busybox.tar")); r.code != 0 {
		p.t.Fatalf("import as %s: %s", name, r.stderr)
	}
	p.t.Cleanup(func() {
		if !p.Running() {
			return
		}
		for _, n := range strings.Fields(p.asTenant(token, "ps", "-aq").stdout) {
			p.asTenant(token, "rm", "-f", n)
		}
	})
	return token
}

// inspectAs is inspect with a tenant's token.
func (p *platform) inspectAs(token, name string) api.Instance {
	p.t.Helper()
	r := p.asTenant(token, "inspect", name)
	var insts []api.Instance
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &insts) != nil || len(insts) != 1 {
		p.t.Fatalf("inspect %s: exit %d: %s%s", name, r.code, r.stdout, r.stderr)
	}
	return insts[0]
}

func (p *platform) runningAs(token, name string) api.Instance {
	p.t.Helper()
	var inst api.Instance
	p.eventually(name+" to run", 60*time.Second, func() bool {
		inst = p.inspectAs(token, name)
		return inst.Status.Phase == api.PhaseRunning
	})
	return inst
}

func readTrim(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// An instance created without flags gets the default type's CPU cap,
// memory and pids limits, in its cgroup files, under its tenant's cgroup;
// kanga inspect says which type applied.
func TestDefaultLimits(t *testing.T) {
	p := startQuotaPlatform(t)
	p.must("run", "-d", "--name", "plain", "kanga.test/busybox", "sleep", "600")
	inst := p.running("plain")
	if r := inst.Spec.Resources; inst.Spec.InstanceType != "k1.default" || r.CPULimit != "1" || r.Memory != "256Mi" || r.Pids != 1024 ||
		r.LogSize != "10Mi" || r.LogFiles != 2 {
		t.Fatalf("inspect shows type %q, resources %+v; want k1.default's", inst.Spec.InstanceType, r)
	}
	for _, c := range []struct{ ctrl, file, want string }{
		{"cpu", "cpu.cfs_quota_us", "100000"},
		{"cpu", "cpu.cfs_period_us", "100000"},
		{"memory", "memory.limit_in_bytes", strconv.Itoa(256 << 20)},
		{"pids", "pids.max", "1024"},
	} {
		path := cgroupPath(inst.UID, c.ctrl, c.file)
		if got := readTrim(t, path); got != c.want {
			t.Errorf("%s = %s, want %s", path, got, c.want)
		}
	}
	if dir := filepath.Dir(cgroupPath(inst.UID, "memory", "")); filepath.Base(dir) != "tenant-default" {
		t.Errorf("the instance cgroup is not under its tenant's: %s", dir)
	}
}

// 101 containers and a 1 MB environment variable are refused with a 400
// that names the field, before anything is stored.
func TestInstanceCaps(t *testing.T) {
	p := startQuotaPlatform(t)
	var req api.CreateInstanceRequest
	req.Name = "many"
	for i := range 101 {
		req.Spec.Containers = append(req.Spec.Containers, api.ContainerSpec{Name: fmt.Sprintf("c%d", i), Image: "kanga.test/busybox", Args: []string{"true"}})
	}
	b, _ := json.Marshal(req)
	r := p.kangaIn(b, "run", "-d", "-f", "-")
	if r.code == 0 || !strings.Contains(r.stderr, "spec.containers has 101 containers, at most 20") {
		t.Fatalf("101 containers: exit %d: %s", r.code, r.stderr)
	}
	r = p.kanga("run", "-d", "--name", "env", "-e", "BIG="+strings.Repeat("x", 100000), "kanga.test/busybox", "true")
	if r.code == 0 || !strings.Contains(r.stderr, "spec.containers[0].env[0].value: 100000 bytes, at most 32768") {
		t.Fatalf("100 kB env var: exit %d: %s", r.code, r.stderr)
	}
	if out := p.must("ps", "-aq"); strings.TrimSpace(out) != "" {
		t.Fatalf("refused specs left instances: %s", out)
	}
}

// With the default quota for new tenants, one tenant cannot reserve the
// whole pool: its reservation past half the pool is refused with a 403
// naming the quota, and another tenant's small instance still runs.
func TestQuotaKeepsPoolShared(t *testing.T) {
	p := startQuotaPlatform(t)
	greedy := p.newTenant("greedy")
	other := p.newTenant("other")
	half := fmt.Sprintf("%dm", runtime.NumCPU()*500)
	if r := p.asTenant(greedy, "run", "-d", "--name", "big", "--cpu", half, "kanga.test/busybox", "sleep", "600"); r.code != 0 {
		t.Fatalf("half the pool: exit %d: %s", r.code, r.stderr)
	}
	p.runningAs(greedy, "big")
	r := p.asTenant(greedy, "run", "-d", "--name", "rest", "--cpu", half, "kanga.test/busybox", "sleep", "600")
	if r.code == 0 {
		t.Fatalf("the rest of the pool was admitted: %s", r.stdout)
	}
	for _, want := range []string{"tenant greedy: quota cpu", "in use, this instance asks for", "kanga tenant quota greedy --cpu N"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("refusal %q does not say %q", r.stderr, want)
		}
	}
	if r := p.asTenant(other, "run", "-d", "--name", "small", "--cpu", "100m", "kanga.test/busybox", "sleep", "600"); r.code != 0 {
		t.Fatalf("the other tenant's small instance: exit %d: %s", r.code, r.stderr)
	}
	p.runningAs(other, "small")
	out := p.must("tenant", "inspect", "greedy")
	if !strings.Contains(out, "cpu ") || !strings.Contains(out, "50%") {
		t.Errorf("tenant inspect shows no cpu quota of 50%%:\n%s", out)
	}
}

// 30 creates racing a quota of 10 through the API end with exactly 10
// instances and 20 refusals that name the quota.
func TestQuotaRace(t *testing.T) {
	p := startQuotaPlatform(t)
	token := p.newTenant("racer", "--quota", "instances=10")
	admin := apiClient(t, p)
	cfg, err := client.LoadConfig(p.config)
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(cfg.Addr, token)
	if err != nil {
		t.Fatal(err)
	}
	const n = 30
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			_, errs[i] = c.CreateInstance(context.Background(), api.CreateInstanceRequest{Name: fmt.Sprintf("r%02d", i),
				Spec: api.InstanceSpec{Containers: []api.ContainerSpec{{Image: "kanga.test/busybox", Args: []string{"sleep", "600"}}}}})
		}()
	}
	close(start)
	wg.Wait()
	created, refused := 0, 0
	for _, err := range errs {
		switch {
		case err == nil:
			created++
		case errors.Is(err, errdefs.ErrPermissionDenied) && strings.Contains(err.Error(), "tenant racer: quota instances 10/10 in use") &&
			strings.Contains(err.Error(), "kanga tenant quota racer --instances N"):
			refused++
		default:
			t.Errorf("create: %v", err)
		}
	}
	if created != 10 || refused != 20 {
		t.Fatalf("%d created, %d refused of %d creates racing a quota of 10", created, refused, n)
	}
	list, err := c.ListInstances(context.Background())
	if err != nil || len(list) != 10 {
		t.Fatalf("the tenant has %d instances (%v), want 10", len(list), err)
	}
	q, err := admin.GetTenantQuota(context.Background(), "racer")
	if err != nil || q.Used.Instances != 10 || q.Limits.Instances != 10 {
		t.Fatalf("quota of racer: %+v, %v", q, err)
	}
	// Removing one frees one place.
	if err := c.DeleteInstance(context.Background(), list[0].Name, true); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateInstance(context.Background(), api.CreateInstanceRequest{Name: "again",
		Spec: api.InstanceSpec{Containers: []api.ContainerSpec{{Image: "kanga.test/busybox", Args: []string{"true"}}}}}); err != nil {
		t.Fatalf("create after a removal: %v", err)
	}
}

// logDiskUse is what the files of an instance's logs take on the host.
func logDiskUse(t *testing.T, p *platform, uid string) int64 {
	t.Helper()
	var n int64
	files, _ := filepath.Glob(filepath.Join(p.dataDir, "agent", "logs", uid, "*.log*"))
	for _, f := range files {
		if strings.HasSuffix(f, ".base") || strings.HasSuffix(f, ".runs") {
			continue
		}
		if fi, err := os.Stat(f); err == nil {
			n += fi.Size()
		}
	}
	return n
}

// A log past its cap is rotated and the disk use stays bounded: 25 MB of
// output keep at most the default 10 MiB x 2; kanga logs ends with the
// last output. kanga logs -f follows an instance whose log rotates many
// times (64 KiB x 5 files) without losing or repeating a line.
func TestLogRotation(t *testing.T) {
	p := startQuotaPlatform(t)
	p.must("run", "-d", "--name", "chatty", "kanga.test/busybox", "sh", "-c",
		"yes 0123456789abcdef | head -c 25000013; echo END")
	p.eventually("chatty to finish", 2*time.Minute, func() bool { return p.inspect("chatty").Status.Phase.Terminal() })
	inst := p.inspect("chatty")
	if use := logDiskUse(t, p, inst.UID); use > 20<<20 || use < 10<<20 {
		t.Fatalf("25 MB of output take %d bytes of log on the host, want between 10 MiB and the cap of 20 MiB", use)
	}
	out := p.must("logs", "chatty")
	if len(out) > 20<<20 || !strings.HasSuffix(out, "0123456789abcdef\nEND\n") {
		t.Fatalf("kanga logs: %d bytes ending %q", len(out), out[max(0, len(out)-40):])
	}
	for i, line := range strings.Split(strings.TrimSuffix(out, "\nEND\n"), "\n") {
		if line != "0123456789abcdef" {
			t.Fatalf("line %d of the kept log is %q: rotation split or lost a line", i, line)
		}
	}

	// Slow enough that the follower's polls keep up with five 64 KiB
	// files; fast enough to rotate some 20 times.
	const lines = 200000
	p.must("run", "-d", "--name", "counted", "--log-size", "64Ki", "--log-files", "5", "kanga.test/busybox", "sh", "-c",
		fmt.Sprintf("sleep 1; i=0; while [ $i -lt %d ]; do echo $i; i=$((i+1)); done; echo END", lines))
	follow := p.kangaAsync("logs", "-f", "counted")
	var r result
	select {
	case r = <-follow:
	case <-time.After(3 * time.Minute):
		t.Fatal("kanga logs -f did not end with the instance")
	}
	if r.code != 0 {
		t.Fatalf("logs -f: exit %d: %s", r.code, r.stderr)
	}
	got := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
	if len(got) != lines+1 || got[lines] != "END" {
		t.Fatalf("logs -f printed %d lines ending %q, want %d and END", len(got), got[len(got)-1], lines+1)
	}
	for i, l := range got[:lines] {
		if l != strconv.Itoa(i) {
			t.Fatalf("logs -f line %d is %q: a rotation lost or repeated output", i, l)
		}
	}
	inst = p.inspect("counted")
	if use := logDiskUse(t, p, inst.UID); use > 5*64<<10 {
		t.Fatalf("the log takes %d bytes, more than 5 x 64 KiB", use)
	}
	if out := p.must("logs", "counted"); !strings.HasSuffix(out, fmt.Sprintf("%d\nEND\n", lines-1)) || len(out) > 5*64<<10 {
		t.Fatalf("kanga logs of the rotated log: %d bytes ending %q", len(out), out[max(0, len(out)-20):])
	}
}

// The tenant's parent cgroup holds two CPU hogs of the tenant together to
// its CPU quota: measured from cpuacct over a few seconds, with a
// tolerance for the kernel's bandwidth accounting.
func TestTenantCPUCap(t *testing.T) {
	p := startQuotaPlatform(t)
	token := p.newTenant("capped", "--quota", "cpu=0.5")
	for _, n := range []string{"hog1", "hog2"} {
		if r := p.asTenant(token, "run", "-d", "--name", n, "kanga.test/busybox", "sh", "-c", "while :; do :; done"); r.code != 0 {
			t.Fatalf("run %s: exit %d: %s", n, r.code, r.stderr)
		}
	}
	uids := []string{p.runningAs(token, "hog1").UID, p.runningAs(token, "hog2").UID}
	tenantCg := filepath.Dir(cgroupPath(uids[0], "cpuacct", ""))
	if filepath.Base(tenantCg) != "tenant-capped" {
		t.Fatalf("hog1's cgroup is not under the tenant's: %s", tenantCg)
	}
	if q := readTrim(t, filepath.Join(strings.Replace(tenantCg, "/cpuacct/", "/cpu/", 1), "cpu.cfs_quota_us")); q != "50000" {
		t.Fatalf("tenant cfs quota %s, want 50000", q)
	}
	usage := func(dir string) uint64 {
		v, err := strconv.ParseUint(readTrim(t, filepath.Join(dir, "cpuacct.usage")), 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	time.Sleep(time.Second) // past the start
	u0, i0, t0 := usage(tenantCg), []uint64{usage(cgroupPath(uids[0], "cpuacct", "")), usage(cgroupPath(uids[1], "cpuacct", ""))}, time.Now()
	time.Sleep(4 * time.Second)
	u1, i1, t1 := usage(tenantCg), []uint64{usage(cgroupPath(uids[0], "cpuacct", "")), usage(cgroupPath(uids[1], "cpuacct", ""))}, time.Now()
	cores := float64(u1-u0) / float64(t1.Sub(t0).Nanoseconds())
	t.Logf("tenant with cpu quota 0.5: two hogs used %.3f cores together (%.3f and %.3f)", cores,
		float64(i1[0]-i0[0])/float64(t1.Sub(t0).Nanoseconds()), float64(i1[1]-i0[1])/float64(t1.Sub(t0).Nanoseconds()))
	if cores > 0.5*1.15 {
		t.Fatalf("two hogs of a tenant with a CPU quota of 0.5 used %.3f cores together", cores)
	}
	if cores < 0.1 || i1[0] == i0[0] || i1[1] == i0[1] {
		t.Fatalf("the hogs hardly ran (%.3f cores): the measurement shows nothing", cores)
	}
}

// TestDiskCapacityAndQuota: disk counts where capacity is decided. The
// host reports its volume storage's free space as its disk capacity; a
// disk past it is a 400 naming spec.resources.disk; two instances whose
// disks fit the host one at a time run one at a time, the second Pending
// with "insufficient disk" until the first is removed; a tenant's disk
// quota refuses an instance past it with a 403 naming the quota.
func TestDiskCapacityAndQuota(t *testing.T) {
	p := startQuotaPlatform(t)
	var hosts api.HostList
	if err := json.Unmarshal([]byte(p.must("host", "ls", "-o", "json")), &hosts); err != nil || len(hosts.Items) != 1 {
		t.Fatalf("host ls: %v, %+v", err, hosts)
	}
	capacity := hosts.Items[0].Capacity.DiskBytes
	if capacity < 1<<30 {
		t.Fatalf("host disk capacity %d: want the volume storage's free space", capacity)
	}
	mi := func(n int64) string { return fmt.Sprintf("%dMi", n>>20) }
	if r := p.kanga("run", "-d", "--name", "huge", "--disk", mi(2*capacity), "kanga.test/busybox", "true"); r.code == 0 ||
		!strings.Contains(r.stderr, "spec.resources.disk "+mi(2*capacity)+" is more than any host can give") {
		t.Fatalf("a disk twice the host's: exit %d, %s", r.code, r.stderr)
	}
	// Sparse: the host gives these only what is written.
	most := mi(capacity * 6 / 10)
	p.must("run", "-d", "--name", "d1", "--disk", most, "kanga.test/busybox", "sleep", "600")
	p.running("d1")
	p.must("run", "-d", "--name", "d2", "--disk", most, "kanga.test/busybox", "sleep", "600")
	p.eventually("d2 to wait for disk", 30*time.Second, func() bool {
		st := p.inspect("d2").Status
		return st.Phase == api.PhasePending && st.Message == "0/1 hosts available: 1 insufficient disk."
	})
	p.must("rm", "-f", "d1")
	p.running("d2")
	p.must("rm", "-f", "d2")

	token := p.newTenant("disky", "--quota", "disk=300Mi")
	if r := p.asTenant(token, "run", "-d", "--name", "a", "--disk", "200Mi", "kanga.test/busybox", "sleep", "600"); r.code != 0 {
		t.Fatalf("200Mi of a 300Mi disk quota: exit %d: %s", r.code, r.stderr)
	}
	r := p.asTenant(token, "run", "-d", "--name", "b", "--disk", "200Mi", "kanga.test/busybox", "sleep", "600")
	if r.code == 0 || !strings.Contains(r.stderr, "tenant disky: quota disk 200Mi/300Mi in use, this instance asks for 200Mi") ||
		!strings.Contains(r.stderr, "--disk N") {
		t.Fatalf("past the disk quota: exit %d: %s", r.code, r.stderr)
	}
	if out := p.must("tenant", "inspect", "disky"); !strings.Contains(out, "disk ") || !strings.Contains(out, "300Mi") {
		t.Errorf("tenant inspect shows no disk quota:\n%s", out)
	}
}
