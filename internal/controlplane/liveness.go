package controlplane

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/kanga-run/kanga/api"
)

// A lapsed lease is a weak signal: under CPU or I/O starvation etcd's
// keep-alives miss their deadline while the host, its agent and its
// instances run on. Re-creating the instances of a host that is only slow
// doubles the load exactly when the pool is overloaded, and turns a slow
// host into an outage. So the failure detector, before it acts on a host
// without a lease, asks whether the host still answers by another path
// (Liveness), never acts on the host that shares its own process (Self),
// re-creates at a bounded rate, and stops re-creating altogether when too
// many hosts look lost at once (the safety brake), as Kubernetes' node
// lifecycle controller does for an unhealthy zone: that many hosts failing
// together is more likely a fault on the control plane's side (its etcd,
// its network) than on theirs.

// Liveness tells whether a host whose lease lapsed still answers by
// another path than its lease.
type Liveness interface {
	// Alive returns how host answered (for its condition message, e.g.
	// "its link is connected") or why it did not. It must return by ctx's
	// deadline.
	Alive(ctx context.Context, host *api.Host) (string, error)
}

// LivenessFunc adapts a function to Liveness.
type LivenessFunc func(ctx context.Context, host *api.Host) (string, error)

// Alive implements Liveness.
func (f LivenessFunc) Alive(ctx context.Context, host *api.Host) (string, error) { return f(ctx, host) }

// Defaults of the safeguards (Config).
const (
	DefaultProbeInterval  = time.Second
	DefaultProbeTimeout   = 2 * time.Second
	DefaultRecreateRate   = 20
	DefaultBrakeThreshold = 0.55
	DefaultBrakeSettle    = 30 * time.Second
)

// verdict is the failure detector's view of one host.
type verdict int

const (
	// healthy: the host holds its lease.
	healthy verdict = iota
	// lapsed: no lease, but the host answers (or is this process): its
	// instances stay.
	lapsed
	// waiting: no lease, and no decision yet (startup grace, first probe
	// in flight).
	waiting
	// dead: no lease and no answer: its instances are lost.
	dead
)

// probe is the last liveness probe of a host without a lease.
type probe struct {
	running bool
	done    bool
	how     string
	err     error
	at      time.Time
}

// probeResult is a finished probe, sent to the loop.
type probeResult struct {
	host string
	how  string
	err  error
	at   time.Time
}

// bucket is a token bucket: rate tokens a second, at most burst held.
// rate <= 0 is no limit.
type bucket struct {
	rate, burst, tokens float64
	at                  time.Time
}

func newBucket(rate float64, now time.Time) *bucket {
	burst := max(rate, 1)
	return &bucket{rate: rate, burst: burst, tokens: burst, at: now}
}

// take takes a token if one is there.
func (b *bucket) take(now time.Time) bool {
	if b.rate <= 0 {
		return true
	}
	if now.After(b.at) {
		b.tokens = min(b.burst, b.tokens+now.Sub(b.at).Seconds()*b.rate)
		b.at = now
	}
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// next is when the next token will be there.
func (b *bucket) next(now time.Time) time.Time {
	if b.rate <= 0 || b.tokens >= 1 {
		return now
	}
	return now.Add(time.Duration((1 - b.tokens) / b.rate * float64(time.Second)))
}

// verdictOf decides about host at now, starting a liveness probe when one
// is due. It returns the verdict and, for lapsed, how the host answers.
func (c *ControlPlane) verdictOf(ctx context.Context, st *state, host string, now time.Time) (verdict, string) {
	if h, ok := st.hosts[host]; ok && h.Status.Phase == api.HostReady {
		delete(st.probes, host)
		return healthy, ""
	}
	if c.cfg.Self != "" && host == c.cfg.Self {
		// This process is the host: while it runs the loop, the host
		// runs. Its lease keeper takes a new lease on its own.
		return lapsed, "the host runs in the control plane's own process"
	}
	if !st.lost(host) {
		return waiting, ""
	}
	rec, registered := st.hosts[host]
	if c.cfg.Liveness == nil || !registered || len(st.byHost[host]) == 0 {
		// Nothing to ask, or nothing to keep: a host without instances
		// is not probed, only counted.
		return dead, ""
	}
	p := st.probes[host]
	if p == nil {
		p = &probe{}
		st.probes[host] = p
	}
	if !p.running && (!p.done || now.Sub(p.at) >= c.cfg.ProbeInterval) {
		p.running = true
		go c.runProbe(ctx, st.probed, *rec)
	}
	switch {
	case !p.done:
		return waiting, ""
	case p.err == nil:
		// Ask again while the lease stays lapsed: a host that answered
		// may stop answering. A probe in flight wakes the loop itself
		// when it ends.
		if !p.running {
			st.wakeAt = earliest(st.wakeAt, p.at.Add(c.cfg.ProbeInterval))
		}
		return lapsed, p.how
	default:
		return dead, ""
	}
}

// runProbe asks Liveness about h and sends the answer to the loop.
func (c *ControlPlane) runProbe(ctx context.Context, out chan<- probeResult, h api.Host) {
	pctx, cancel := context.WithTimeout(ctx, c.cfg.ProbeTimeout)
	how, err := c.cfg.Liveness.Alive(pctx, &h)
	cancel()
	select {
	case out <- probeResult{host: h.Name, how: how, err: err, at: c.cfg.Now()}:
	case <-ctx.Done():
	}
}

// applyProbe folds a finished probe into st.
func (st *state) applyProbe(r probeResult) {
	p := st.probes[r.host]
	if p == nil {
		return // the host got its lease back meanwhile
	}
	*p = probe{done: true, how: r.how, err: r.err, at: r.at}
}

// braked reports whether the safety brake holds: every host is lost, or,
// with three hosts or more, more than threshold of them.
func braked(lost, total int, threshold float64) bool {
	if threshold < 0 || lost == 0 {
		return false
	}
	return lost == total || (total >= 3 && float64(lost) > threshold*float64(total))
}

// updateBrake folds this pass's brake condition (trip: too many hosts
// lost at once) into the brake's state. It returns whether the brake
// holds, and whether it holds only because its condition has not been
// clear for Config.BrakeSettle yet; then the loop wakes when it will have
// been.
func (c *ControlPlane) updateBrake(st *state, trip bool, lost, total int, lostHosts []string, now time.Time) (brake, settling bool) {
	switch {
	case trip:
		c.clearSince = time.Time{}
		if !c.brake {
			c.brake = true
			c.log.Warn(fmt.Sprintf("safety brake: %d of %d hosts lost at once; not re-creating their instances", lost, total),
				"lost_hosts", lostHosts)
		}
		return true, false
	case !c.brake:
		return false, false
	}
	if c.clearSince.IsZero() {
		c.clearSince = now
		if c.cfg.BrakeSettle > 0 {
			c.log.Info("safety brake settling: few enough hosts lost; releasing if that lasts", "lost_hosts", lost, "hosts", total, "settle", c.cfg.BrakeSettle)
		}
	}
	if end := c.clearSince.Add(c.cfg.BrakeSettle); c.cfg.BrakeSettle > 0 && now.Before(end) {
		st.wakeAt = earliest(st.wakeAt, end)
		return true, true
	}
	c.brake, c.clearSince = false, time.Time{}
	c.log.Info("safety brake released", "lost_hosts", lost, "hosts", total)
	return false, false
}

// setCondition records host's condition if it changed, and logs the
// change once.
func (c *ControlPlane) setCondition(ctx context.Context, st *state, host, cond, msg string) {
	h, registered := st.hosts[host]
	if !registered {
		return
	}
	if want := cond + "\x00" + msg; st.conds[host] == want || (h.Status.Condition == cond && h.Status.ConditionMessage == msg) {
		st.conds[host] = want
		return
	}
	level, logMsg := slog.LevelWarn, msg
	switch cond {
	case "":
		level, logMsg = slog.LevelInfo, "the host holds its lease again"
	case api.HostLeaseLapsed:
		level = slog.LevelInfo
	}
	c.log.Log(ctx, level, "host condition", "host", host, "condition", cond, "message", logMsg)
	if hc, ok := c.cfg.Store.(HostConditioner); ok {
		if err := hc.SetHostCondition(ctx, host, cond, msg); err != nil {
			c.log.Warn("recording the host's condition failed", "host", host, "err", err)
			return
		}
	}
	st.conds[host] = cond + "\x00" + msg
}

// HostConditioner is implemented by stores that record a host's
// condition (store.Store), shown by kanga host ls.
type HostConditioner interface {
	SetHostCondition(ctx context.Context, name, cond, msg string) error
}

func earliest(a, b time.Time) time.Time {
	if a.IsZero() || b.Before(a) {
		return b
	}
	return a
}

func lapsedMessage(how string) string {
	return fmt.Sprintf("the lease lapsed but the host answers (%s); its instances are kept", how)
}
