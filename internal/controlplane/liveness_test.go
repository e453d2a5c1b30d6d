package controlplane_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/internal/controlplane"
)

// runCPWith starts a control-plane replica configured by mut.
func (e *env) runCPWith(id string, mut func(*controlplane.Config)) *controlplane.ControlPlane {
	cfg := controlplane.Config{Store: e.st, ID: id, Logger: quiet(),
		Policy: controlplane.DefaultPolicy, LeaderTTL: time.Second, StartupGrace: time.Second}
	mut(&cfg)
	cp := controlplane.New(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = cp.Run(ctx) }()
	e.t.Cleanup(func() { cancel(); <-done })
	return cp
}

// running places name on host as Running, as an agent would report it.
func (e *env) running(name, host string, policy api.RestartPolicy) {
	e.create(name, "1", policy, func(i *api.Instance) { i.Status.Host, i.Status.Phase = host, api.PhaseRunning })
}

// waitCondition waits for host's condition.
func (e *env) waitCondition(name, cond string) *api.Host {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(e.t.Context(), 30*time.Second)
	defer cancel()
	for hosts := range e.st.WatchHosts(ctx) {
		for i := range hosts {
			if hosts[i].Name == name && hosts[i].Status.Condition == cond {
				return &hosts[i]
			}
		}
	}
	h, _ := e.st.GetHost(e.t.Context(), name)
	e.t.Fatalf("host %s never got condition %q: %+v", name, cond, h)
	return nil
}

// kept fails unless name still runs on host with its first UID.
func (e *env) kept(name, host string) {
	e.t.Helper()
	got, err := e.st.GetInstance(e.ctx, name)
	if err != nil {
		e.t.Fatal(err)
	}
	if got.UID != "uid-"+name || got.Status.Host != host || got.Status.Phase != api.PhaseRunning {
		e.t.Fatalf("%s: uid %s host %s phase %s; want uid-%s still Running on %s", name, got.UID, got.Status.Host, got.Status.Phase, name, host)
	}
}

// TestSelfHostNeverLost: the host in the control plane's own process (kanga
// up) keeps its instances when its lease lapses, and shows why.
func TestSelfHostNeverLost(t *testing.T) {
	e := newEnv(t)
	e.addHost("self", 4, nil)
	e.addHost("spare", 4, nil)
	e.running("web", "self", api.RestartAlways)
	e.running("job", "self", api.RestartNever)
	e.runCPWith("cp", func(c *controlplane.Config) { c.Self = "self" })
	e.killHost("self")
	e.waitHost("self", api.HostNotReady)
	h := e.waitCondition("self", api.HostLeaseLapsed)
	if h.Status.ConditionMessage == "" {
		t.Fatalf("condition without a message: %+v", h.Status)
	}
	// The condition is written in the pass that kept the instances.
	e.kept("web", "self")
	e.kept("job", "self")
}

// TestLeaseLapsedButAlive: a host whose lease lapsed but that answers a
// liveness probe keeps its instances; once it stops answering, they are
// re-created (so the probe is what kept them).
func TestLeaseLapsedButAlive(t *testing.T) {
	e := newEnv(t)
	e.addHost("slow", 4, nil)
	e.addHost("spare", 4, nil)
	e.running("web", "slow", api.RestartAlways)
	var alive atomic.Bool
	alive.Store(true)
	var probes atomic.Int32
	cp := e.runCPWith("cp", func(c *controlplane.Config) {
		c.ProbeInterval = 100 * time.Millisecond
		c.Liveness = controlplane.LivenessFunc(func(_ context.Context, h *api.Host) (string, error) {
			probes.Add(1)
			// As a probe over the network, which takes a while.
			time.Sleep(50 * time.Millisecond)
			if h.Name != "slow" {
				t.Errorf("probed %s", h.Name)
			}
			if alive.Load() {
				return "fake link connected", nil
			}
			return "", errors.New("fake: no answer")
		})
	})
	e.killHost("slow")
	h := e.waitCondition("slow", api.HostLeaseLapsed)
	if h.Status.Phase != api.HostNotReady {
		t.Fatalf("lapsed host is %s", h.Status.Phase)
	}
	e.kept("web", "slow")
	if probes.Load() == 0 {
		t.Fatal("LeaseLapsed without a probe")
	}
	if n := cp.Stats().Recreated; n != 0 {
		t.Fatalf("%d instances re-created while the host answered", n)
	}
	// While the lease stays lapsed the host is asked again, and the loop
	// runs a pass or two per probe, not in a busy loop meanwhile.
	passes, asked := cp.Stats().Passes, probes.Load()
	for probes.Load() < asked+5 {
		time.Sleep(10 * time.Millisecond)
	}
	if n := cp.Stats().Passes - passes; n > 5*4 {
		t.Fatalf("%d passes for 5 probes of a lapsed host", n)
	}
	e.kept("web", "slow")

	alive.Store(false)
	web := e.wait("web", "re-created on spare", func(i *api.Instance) bool { return i.Status.Host == "spare" })
	if web.UID == "uid-web" {
		t.Fatal("re-created instance kept its UID")
	}
	e.waitCondition("slow", api.HostLost)
	if n := cp.Stats().Recreated; n != 1 {
		t.Fatalf("Stats().Recreated = %d after one re-creation", n)
	}
}

// TestSafetyBrake: when two of three hosts are lost at once, nothing is
// re-created; the lost hosts say why. Instances being deleted still go.
func TestSafetyBrake(t *testing.T) {
	e := newEnv(t)
	for _, h := range []string{"a", "b", "c"} {
		e.addHost(h, 4, nil)
	}
	e.running("on-a", "a", api.RestartAlways)
	e.running("on-b", "b", api.RestartNever)
	e.running("gone", "b", api.RestartAlways)
	if _, err := e.st.UpdateInstance(e.ctx, "gone", func(i *api.Instance) error {
		i.DeletionRequested, i.StopRequested = true, true
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// Both leases run out while no leader looks, so that the leader sees
	// them lost in one pass (after its startup grace), whichever expired
	// first.
	e.killHost("a")
	e.killHost("b")
	e.waitHost("a", api.HostNotReady)
	e.waitHost("b", api.HostNotReady)
	// Released as soon as few enough hosts are lost: TestBrakeSettles
	// covers the settle window.
	e.runCPWith("cp", func(c *controlplane.Config) { c.BrakeSettle = -1 })
	for _, h := range []string{"a", "b"} {
		e.waitCondition(h, api.HostSafetyBrake)
	}
	ctx, cancel := context.WithTimeout(e.ctx, 30*time.Second)
	defer cancel()
	if err := e.st.WaitInstanceGone(ctx, "gone"); err != nil {
		t.Fatalf("the instance being deleted was kept under the brake: %v", err)
	}
	e.kept("on-a", "a")
	e.kept("on-b", "b")

	// One host back: one of three lost is under the threshold, and the
	// remaining lost host's instance is re-created.
	e.addHost("a", 4, nil)
	e.waitCondition("a", "")
	on := e.wait("on-b", "failed", func(i *api.Instance) bool { return i.Status.Phase.Terminal() })
	if on.Status.Reason != controlplane.ReasonLost {
		t.Fatalf("on-b after the brake released: %+v", on.Status)
	}
	e.kept("on-a", "a")
}

// TestOnlyHostLostBrakes: losing the only host trips the brake: there is
// nowhere else to run, and re-creating would only replace the instances
// when it returns.
func TestOnlyHostLostBrakes(t *testing.T) {
	e := newEnv(t)
	e.addHost("only", 4, nil)
	e.running("web", "only", api.RestartAlways)
	e.runCPWith("cp", func(*controlplane.Config) {})
	e.killHost("only")
	e.waitCondition("only", api.HostSafetyBrake)
	e.kept("web", "only")
	e.addHost("only", 4, nil)
	e.waitCondition("only", "")
	e.kept("web", "only")
}

// TestRecreateRateLimit: with one re-creation a minute, a lost host's
// instances go one at a time; those not yet re-created stay when the host
// returns, with their UIDs.
func TestRecreateRateLimit(t *testing.T) {
	e := newEnv(t)
	e.addHost("a", 8, nil)
	e.addHost("spare", 8, nil)
	names := []string{"i1", "i2", "i3", "i4"}
	for _, n := range names {
		e.running(n, "a", api.RestartAlways)
	}
	e.runCPWith("cp", func(c *controlplane.Config) { c.RecreateRate = 1.0 / 60 })
	e.killHost("a")
	e.waitCondition("a", api.HostLost)
	// The first write of the pass that set Lost.
	e.wait("i1", "re-created", func(i *api.Instance) bool { return i.UID != "uid-i1" })
	e.addHost("a", 8, nil)
	e.waitCondition("a", "")
	for _, n := range names[1:] {
		e.kept(n, "a")
	}
}

// fakeClock is a settable clock for Config.Now.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// waitConditionMessage waits for host's condition with a message
// containing part.
func (e *env) waitConditionMessage(name, cond, part string) *api.Host {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(e.t.Context(), 30*time.Second)
	defer cancel()
	for hosts := range e.st.WatchHosts(ctx) {
		for i := range hosts {
			if hosts[i].Name == name && hosts[i].Status.Condition == cond && strings.Contains(hosts[i].Status.ConditionMessage, part) {
				return &hosts[i]
			}
		}
	}
	h, _ := e.st.GetHost(e.t.Context(), name)
	e.t.Fatalf("host %s never got condition %q with %q: %+v", name, cond, part, h)
	return nil
}

// TestBrakeSettles: after the safety brake trips, hosts coming back bring
// the share of lost hosts under the threshold, but the brake holds until
// that has lasted the settle window (on the control plane's clock, a fake
// one here); only then are the remaining lost host's instances
// re-created.
func TestBrakeSettles(t *testing.T) {
	e := newEnv(t)
	for _, h := range []string{"a", "b", "c"} {
		e.addHost(h, 4, nil)
	}
	e.running("on-a", "a", api.RestartAlways)
	e.running("on-b", "b", api.RestartAlways)
	e.killHost("a")
	e.killHost("b")
	e.waitHost("a", api.HostNotReady)
	e.waitHost("b", api.HostNotReady)
	clock := &fakeClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	const settle = 30 * time.Second
	cp := e.runCPWith("cp", func(c *controlplane.Config) { c.Now, c.BrakeSettle = clock.Now, settle })
	e.waitConditionMessage("b", api.HostSafetyBrake, "at once")

	// a returns: one of three lost is under the threshold, but the brake
	// settles first. The condition is written in the pass that kept on-b,
	// and no later pass re-creates it while the clock stands still.
	e.addHost("a", 4, nil)
	e.waitCondition("a", "")
	e.waitConditionMessage("b", api.HostSafetyBrake, "holds until")
	e.kept("on-b", "b")
	e.kept("on-a", "a")
	if n := cp.Stats().Recreated; n != 0 {
		t.Fatalf("%d instances re-created while the brake settled", n)
	}

	// Half the window later, still held: a new instance wakes the loop.
	clock.advance(settle / 2)
	e.create("poke-1", "1", api.RestartNever)
	e.wait("poke-1", "placed", placed)
	e.kept("on-b", "b")

	// Past the window: released, and on-b is re-created elsewhere.
	clock.advance(settle/2 + time.Second)
	e.create("poke-2", "1", api.RestartNever)
	on := e.wait("on-b", "re-created", func(i *api.Instance) bool { return i.UID != "uid-on-b" })
	if on.Status.Host == "b" {
		t.Fatalf("on-b re-created on the lost host: %+v", on.Status)
	}
	e.waitCondition("b", api.HostLost)
	e.kept("on-a", "a")
	if n := cp.Stats().Recreated; n != 1 {
		t.Fatalf("Stats().Recreated = %d, want 1", n)
	}
}
