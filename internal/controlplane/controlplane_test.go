package controlplane_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/internal/controlplane"
	"github.com/kanga-run/kanga/internal/store"
	"github.com/kanga-run/kanga/internal/tenant"
)

// The tests run the control plane against a real embedded etcd; the
// hosts are records with leases, as agents would keep them (no agent runs
// anything here).

type env struct {
	t   *testing.T
	st  *store.Store
	ctx context.Context // tenant "t1"
	// keepers holds the cancel function of each host's lease keeper.
	mu      sync.Mutex
	keepers map[string]context.CancelFunc
	wg      sync.WaitGroup
}

func newEnv(t *testing.T) *env {
	t.Helper()
	st, err := store.Open(t.Context(), store.Config{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, st: st, ctx: tenant.WithName(context.Background(), "t1"), keepers: map[string]context.CancelFunc{}}
	t.Cleanup(func() {
		e.mu.Lock()
		for _, c := range e.keepers {
			c()
		}
		e.mu.Unlock()
		e.wg.Wait()
		st.Close()
	})
	return e
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// runCP starts a control-plane replica; the returned function stops it.
func (e *env) runCP(id string) (*controlplane.ControlPlane, func()) {
	cp := controlplane.New(controlplane.Config{Store: e.st, ID: id, Logger: quiet(),
		Policy: controlplane.DefaultPolicy, LeaderTTL: time.Second, StartupGrace: time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = cp.Run(ctx) }()
	stop := func() { cancel(); <-done }
	e.t.Cleanup(stop)
	return cp, stop
}

// addHost registers a host and keeps it alive with a 1 s lease.
func (e *env) addHost(name string, cpus int, labels map[string]string) {
	e.t.Helper()
	e.addHostCap(name, api.HostCapacity{CPUs: cpus, MemoryBytes: 8 << 30, Pods: 100}, labels)
}

func (e *env) addHostCap(name string, c api.HostCapacity, labels map[string]string) {
	e.t.Helper()
	h := api.Host{Name: name, Labels: labels, RuntimeClasses: []string{"runc", "crun"}, Capacity: c}
	ctx, cancel := context.WithCancel(context.Background())
	held, err := e.st.HoldHost(ctx, h, time.Second, store.HoldOptions{Backoff: 10 * time.Millisecond})
	if err != nil {
		cancel()
		e.t.Fatal(err)
	}
	e.mu.Lock()
	e.keepers[name] = cancel
	e.mu.Unlock()
	e.wg.Add(1)
	go func() { defer e.wg.Done(); <-held }()
	e.waitHost(name, api.HostReady)
}

// killHost stops a host's lease keeper, as a crashed agent would.
func (e *env) killHost(name string) {
	e.mu.Lock()
	e.keepers[name]()
	e.mu.Unlock()
}

func (e *env) waitHost(name, phase string) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(e.t.Context(), 30*time.Second)
	defer cancel()
	for hosts := range e.st.WatchHosts(ctx) {
		for _, h := range hosts {
			if h.Name == name && h.Status.Phase == phase {
				return
			}
		}
	}
	e.t.Fatalf("host %s never became %s", name, phase)
}

// create stores a Pending instance as the API does.
func (e *env) create(name, cpu string, policy api.RestartPolicy, mut ...func(*api.Instance)) {
	e.t.Helper()
	inst := &api.Instance{Name: name, Tenant: "t1", UID: "uid-" + name, CreatedAt: time.Now().UTC(),
		Spec: api.InstanceSpec{
			Containers:    []api.ContainerSpec{{Name: "main", Image: "busybox"}},
			Resources:     api.Resources{CPU: cpu},
			RestartPolicy: policy, Runtime: "runc",
		},
		Status: api.InstanceStatus{Phase: api.PhasePending}}
	for _, m := range mut {
		m(inst)
	}
	if err := e.st.CreateInstance(e.ctx, inst); err != nil {
		e.t.Fatal(err)
	}
}

// wait returns the instance once cond holds.
func (e *env) wait(name string, what string, cond func(*api.Instance) bool) *api.Instance {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(e.ctx, 30*time.Second)
	defer cancel()
	inst, err := e.st.WaitInstance(ctx, name, cond)
	if err != nil {
		cur, _ := e.st.GetInstance(e.ctx, name)
		e.t.Fatalf("waiting for %s to be %s: %v; it is %+v", name, what, err, cur)
	}
	return inst
}

func placed(i *api.Instance) bool { return i.Status.Host != "" }

func decided(i *api.Instance) bool { return i.Status.Host != "" || i.Status.Reason != "" }

// TestPlacementCountsDisk: a host's disk capacity (its volume storage's
// free space) is charged with each placed instance's resources.disk; one
// past it waits Pending with the reason naming disk, and is placed once
// an instance frees its disk.
func TestPlacementCountsDisk(t *testing.T) {
	e := newEnv(t)
	e.addHostCap("h", api.HostCapacity{CPUs: 8, MemoryBytes: 8 << 30, Pods: 100, DiskBytes: 1 << 30}, nil)
	e.runCP("cp1")
	withDisk := func(d string) func(*api.Instance) {
		return func(i *api.Instance) { i.Spec.Resources.Disk = d }
	}
	e.create("d0", "1", api.RestartNever, withDisk("600Mi"))
	e.wait("d0", "placed", placed)
	e.create("d1", "1", api.RestartNever, withDisk("600Mi"))
	got := e.wait("d1", "decided", decided)
	if got.Status.Host != "" || got.Status.Message != "0/1 hosts available: 1 insufficient disk." {
		t.Fatalf("d1: host %q reason %q message %q", got.Status.Host, got.Status.Reason, got.Status.Message)
	}
	// Without a disk limit it asks for none and fits.
	e.create("d2", "1", api.RestartNever)
	e.wait("d2", "placed", placed)
	if err := e.st.DeleteInstance(e.ctx, "d0"); err != nil {
		t.Fatal(err)
	}
	e.wait("d1", "placed", placed)
}

func TestPlacementRespectsCapacity(t *testing.T) {
	e := newEnv(t)
	e.addHost("small", 2, nil)
	e.addHost("big", 4, nil)
	e.runCP("cp1")

	for i := range 3 {
		e.create(fmt.Sprintf("i%d", i), "2", api.RestartNever)
	}
	used := map[string]int{}
	for i := range 3 {
		used[e.wait(fmt.Sprintf("i%d", i), "placed", placed).Status.Host] += 2
	}
	if used["small"] != 2 || used["big"] != 4 {
		t.Fatalf("cores used per host: %v, want small 2, big 4", used)
	}

	// A fourth fits nowhere: it stays Pending with the reason per filter.
	e.create("i3", "2", api.RestartNever)
	got := e.wait("i3", "decided", decided)
	if got.Status.Host != "" || got.Status.Reason != controlplane.ReasonInsufficientCPU ||
		got.Status.Message != "0/2 hosts available: 2 insufficient cpu." {
		t.Fatalf("i3: host %q reason %q message %q", got.Status.Host, got.Status.Reason, got.Status.Message)
	}

	// Freeing cores places it.
	if err := e.st.DeleteInstance(e.ctx, "i0"); err != nil {
		t.Fatal(err)
	}
	got = e.wait("i3", "placed", placed)
	if got.Status.Reason != "" {
		t.Fatalf("placed i3 keeps reason %q", got.Status.Reason)
	}
	// Terminal instances free their resources too.
	e.create("i4", "2", api.RestartNever)
	e.wait("i4", "decided", decided)
	if _, err := e.st.UpdateInstance(e.ctx, "i1", func(in *api.Instance) error {
		in.Status.Phase = api.PhaseSucceeded
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	e.wait("i4", "placed", placed)
}

func TestSelectorsClassesAndCordon(t *testing.T) {
	e := newEnv(t)
	e.addHost("a", 4, map[string]string{"zone": "a"})
	e.addHost("b", 4, map[string]string{"zone": "b"})
	e.runCP("cp1")

	e.create("in-b", "", api.RestartNever, func(i *api.Instance) { i.Spec.HostSelector = map[string]string{"zone": "b"} })
	if h := e.wait("in-b", "placed", placed).Status.Host; h != "b" {
		t.Fatalf("zone=b instance on %s", h)
	}
	e.create("nowhere", "", api.RestartNever, func(i *api.Instance) { i.Spec.HostSelector = map[string]string{"zone": "c"} })
	if got := e.wait("nowhere", "decided", decided); got.Status.Reason != controlplane.ReasonUnschedulable ||
		got.Status.Message != "0/2 hosts available: 2 selector mismatch." {
		t.Fatalf("zone=c instance: %+v", got.Status)
	}
	e.create("secret", "", api.RestartNever, func(i *api.Instance) { i.Spec.Runtime = "enclave" })
	if got := e.wait("secret", "decided", decided); got.Status.Host != "" ||
		!strings.Contains(got.Status.Message, "runtime class enclave not offered") || !strings.Contains(got.Status.Message, "sgx") {
		t.Fatalf("enclave instance: %+v", got.Status)
	}

	if _, err := e.st.UpdateHost(t.Context(), "a", func(h *api.Host) error { h.Cordoned = true; return nil }); err != nil {
		t.Fatal(err)
	}
	e.create("in-a", "", api.RestartNever, func(i *api.Instance) { i.Spec.HostSelector = map[string]string{"zone": "a"} })
	if got := e.wait("in-a", "decided", decided); got.Status.Message != "0/2 hosts available: 1 cordoned, 1 selector mismatch." {
		t.Fatalf("zone=a instance on a cordoned host: %+v", got.Status)
	}
	if _, err := e.st.UpdateHost(t.Context(), "a", func(h *api.Host) error { h.Cordoned = false; return nil }); err != nil {
		t.Fatal(err)
	}
	if h := e.wait("in-a", "placed", placed).Status.Host; h != "a" {
		t.Fatalf("zone=a instance on %s after uncordon", h)
	}
}

func TestTenantSpread(t *testing.T) {
	e := newEnv(t)
	for _, h := range []string{"h1", "h2", "h3"} {
		e.addHost(h, 8, nil)
	}
	e.runCP("cp1")
	for i := range 3 {
		e.create(fmt.Sprintf("w%d", i), "1", api.RestartNever)
	}
	hosts := map[string]bool{}
	for i := range 3 {
		hosts[e.wait(fmt.Sprintf("w%d", i), "placed", placed).Status.Host] = true
	}
	if len(hosts) != 3 {
		t.Fatalf("three instances of one tenant on hosts %v, want three different hosts", hosts)
	}
}

func TestLostHost(t *testing.T) {
	e := newEnv(t)
	e.addHost("a", 4, nil)
	e.runCP("cp1")
	e.create("web", "1", api.RestartAlways)
	e.create("job", "1", api.RestartNever)
	for _, n := range []string{"web", "job"} {
		in := e.wait(n, "placed", placed)
		// Pretend the agent runs them.
		if _, err := e.st.UpdateInstance(e.ctx, n, func(i *api.Instance) error {
			i.Status.Phase = api.PhaseRunning
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		_ = in
	}
	e.addHost("b", 4, nil)
	e.killHost("a")
	e.waitHost("a", api.HostNotReady)

	web := e.wait("web", "re-placed on b", func(i *api.Instance) bool { return i.Status.Host == "b" })
	if web.UID == "uid-web" || web.Status.Phase != api.PhasePending {
		t.Fatalf("re-created web: uid %s phase %s; want a new UID, Pending", web.UID, web.Status.Phase)
	}
	lost := false
	for _, ev := range web.Status.Events {
		lost = lost || ev.Reason == controlplane.ReasonLost
	}
	if !lost {
		t.Fatalf("re-created web has no Lost event: %+v", web.Status.Events)
	}
	job := e.wait("job", "failed", func(i *api.Instance) bool { return i.Status.Phase.Terminal() })
	if job.Status.Phase != api.PhaseFailed || job.Status.Reason != controlplane.ReasonLost || job.Status.Host != "" {
		t.Fatalf("job on the lost host: %+v", job.Status)
	}
}

func TestDrain(t *testing.T) {
	e := newEnv(t)
	e.addHost("a", 4, nil)
	e.runCP("cp1")
	e.create("web", "1", api.RestartAlways)
	e.create("job", "1", api.RestartNever)
	e.wait("web", "placed", placed)
	e.wait("job", "placed", placed)
	e.addHost("b", 4, nil)

	rep, err := controlplane.Drain(t.Context(), e.st, "a", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(rep.Moved) != "[t1/web]" || len(rep.Remaining) != 1 || rep.Remaining[0].Instance != "t1/job" ||
		!strings.Contains(rep.Remaining[0].Reason, "Never") {
		t.Fatalf("drain report %+v", rep)
	}
	if h := e.wait("web", "moved to b", func(i *api.Instance) bool { return i.Status.Host == "b" }); h.Status.Host != "b" {
		t.Fatal("unreachable")
	}
	if h, err := e.st.GetHost(t.Context(), "a"); err != nil || !h.Cordoned {
		t.Fatalf("drained host: %+v, %v; want cordoned", h, err)
	}
	if _, err := controlplane.Drain(t.Context(), e.st, "nope", time.Now()); err == nil {
		t.Fatal("draining an unknown host succeeded")
	}
}

// TestFailover: two replicas, one leads; when it stops, the other takes
// over and keeps placing, and nothing is placed twice.
func TestFailover(t *testing.T) {
	e := newEnv(t)
	e.addHost("a", 64, nil)
	cp1, stop1 := e.runCP("cp1")
	e.create("first", "1", api.RestartNever)
	e.wait("first", "placed", placed)
	cp2, _ := e.runCP("cp2")
	if !cp1.Leading() || cp2.Leading() {
		t.Fatalf("leading: cp1 %v, cp2 %v; want cp1 only", cp1.Leading(), cp2.Leading())
	}
	stop1()
	e.create("second", "1", api.RestartNever)
	e.wait("second", "placed", placed)
	if !cp2.Leading() {
		t.Fatal("cp2 placed without leading")
	}
	for _, n := range []string{"first", "second"} {
		in, _ := e.st.GetInstance(e.ctx, n)
		scheduled := 0
		for _, ev := range in.Status.Events {
			if ev.Reason == "Scheduled" {
				scheduled++
			}
		}
		if scheduled != 1 {
			t.Fatalf("%s scheduled %d times: %+v", n, scheduled, in.Status.Events)
		}
	}
}

func TestInstanceLimit(t *testing.T) {
	e := newEnv(t)
	e.addHost("a", 64, nil) // Pods: 100
	if _, err := e.st.UpdateHost(t.Context(), "a", func(h *api.Host) error { h.Capacity.Pods = 2; return nil }); err != nil {
		t.Fatal(err)
	}
	e.runCP("cp1")
	for _, n := range []string{"p1", "p2", "p3"} {
		e.create(n, "", api.RestartNever)
		e.wait(n, "decided", decided)
	}
	if got, _ := e.st.GetInstance(e.ctx, "p3"); got.Status.Host != "" || got.Status.Message != "0/1 hosts available: 1 too many instances." {
		t.Fatalf("third instance on a 2-instance host: %+v", got.Status)
	}
}

// TestStopUnplaced: an instance stopped while no host can take it ends.
func TestStopUnplaced(t *testing.T) {
	e := newEnv(t)
	e.addHost("a", 1, nil)
	e.runCP("cp1")
	e.create("big", "4", api.RestartNever)
	e.wait("big", "decided", decided)
	if _, err := e.st.UpdateInstance(e.ctx, "big", func(i *api.Instance) error { i.StopRequested = true; return nil }); err != nil {
		t.Fatal(err)
	}
	got := e.wait("big", "terminal", func(i *api.Instance) bool { return i.Status.Phase.Terminal() })
	if got.Status.Phase != api.PhaseFailed || got.Status.Reason != "Stopped" || got.Status.Host != "" {
		t.Fatalf("stopped unplaced instance: %+v", got.Status)
	}
}

// TestStartupGrace: a new leader gives hosts that were already NotReady
// when it took over the startup grace to come back (as agents reconnect
// after a control-plane restart); one that returns in time keeps its
// instances, one that does not loses them.
func TestStartupGrace(t *testing.T) {
	e := newEnv(t)
	for _, h := range []string{"back", "gone"} {
		if err := e.st.RegisterHost(t.Context(), &api.Host{Name: h, RuntimeClasses: []string{"runc"},
			Capacity: api.HostCapacity{CPUs: 4, MemoryBytes: 8 << 30}}); err != nil {
			t.Fatal(err)
		}
	}
	e.addHost("spare", 8, nil)
	for _, h := range []string{"back", "gone"} {
		e.create("on-"+h, "1", api.RestartAlways, func(i *api.Instance) {
			i.Status.Host, i.Status.Phase = h, api.PhaseRunning
		})
	}
	cp := controlplane.New(controlplane.Config{Store: e.st, ID: "cp", Logger: quiet(), Policy: controlplane.DefaultPolicy,
		LeaderTTL: time.Second, StartupGrace: 2 * time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = cp.Run(ctx) }()
	defer func() { cancel(); <-done }()
	for !cp.Leading() {
		time.Sleep(10 * time.Millisecond)
	}
	// "back" reconnects within the grace.
	e.addHost("back", 4, nil)

	moved := e.wait("on-gone", "re-created on spare", func(i *api.Instance) bool { return i.Status.Host == "spare" })
	if moved.UID == "uid-on-gone" {
		t.Fatal("re-created instance kept its UID")
	}
	// By now the grace is over; the returned host kept its instance.
	if got, _ := e.st.GetInstance(e.ctx, "on-back"); got.UID != "uid-on-back" || got.Status.Host != "back" {
		t.Fatalf("instance of the host that returned in time: uid %s host %s", got.UID, got.Status.Host)
	}
}

// TestHostPorts: a host port is a per-host resource held from placement
// until the instance is removed (a terminal instance keeps its port
// mappings on its host until then); an instance whose port is taken on
// every host waits with the port named, and is placed once it frees.
func TestHostPorts(t *testing.T) {
	e := newEnv(t)
	e.addHost("h1", 4, nil)
	e.runCP("cp1")
	port := func(ip string) func(*api.Instance) {
		return func(in *api.Instance) {
			in.Spec.Ports = []api.PortMapping{{HostIP: ip, HostPort: 8080, ContainerPort: 80, Protocol: "tcp"}}
		}
	}
	e.create("web", "", api.RestartNever, port("127.0.0.1"))
	e.wait("web", "placed", placed)
	e.create("other-address", "", api.RestartNever, port("10.9.9.9"))
	e.wait("other-address", "placed", placed)
	e.create("web2", "", api.RestartNever, port(""))
	got := e.wait("web2", "decided", decided)
	if got.Status.Host != "" || got.Status.Reason != controlplane.ReasonUnschedulable ||
		got.Status.Message != "0/1 hosts available: 1 host port 8080/tcp in use." {
		t.Fatalf("web2: host %q reason %q message %q", got.Status.Host, got.Status.Reason, got.Status.Message)
	}
	// Terminal, web and other-address still hold the port; removed, they
	// free it.
	for _, n := range []string{"web", "other-address"} {
		if _, err := e.st.UpdateInstance(e.ctx, n, func(in *api.Instance) error {
			in.Status.Phase = api.PhaseSucceeded
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	e.create("nudge", "", api.RestartNever) // a pass after the updates
	e.wait("nudge", "placed", placed)
	if cur, _ := e.st.GetInstance(e.ctx, "web2"); cur.Status.Host != "" {
		t.Fatalf("web2 placed while terminal instances still hold port 8080 on %s", cur.Status.Host)
	}
	for _, n := range []string{"web", "other-address"} {
		if err := e.st.DeleteInstance(e.ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	e.wait("web2", "placed", placed)
}
