// Package pool keeps network sandboxes ready ahead of demand, so that an
// instance start does not pay for creating a network namespace and
// running CNI ADD (about 70 ms on a 2-core host, more under load).
//
// A pooled sandbox is a network namespace with CNI ADD done under a pool
// id (Prefix + random hex) and its address known. It serves instances
// without published ports and without bandwidth limits only: those shape
// the attachment through CNI runtime config (portmap, bandwidth) that
// exists only at ADD time, so such instances keep setting up their own.
//
// A sandbox is recycled only within its tenant: when an instance that
// used one is deleted, the agent may hand it back (Recycle) once the
// instance's containers are gone and the connection-tracking entries of
// its address are flushed, and only a later Take for the same tenant gets
// it again, with the same address. That saves CNI DEL and ADD (most of the
// CPU of an instance's network) for a tenant that keeps creating and
// deleting. Nothing of one tenant can reach another through the pool: a
// fresh sandbox has never held a process or file of anyone, a recycled one
// never leaves its tenant, and an address returns to IPAM only through a
// full CNI DEL, after which it is as fresh as any other. Recycled
// sandboxes unused for a Window, or beyond Max, are destroyed.
//
// The filler sets sandboxes up at the lowest CPU priority while starts are
// under way and the pool has more than one ready (see fill.LowPriority): on a
// 2-core host its CNI plugin processes otherwise slow down the starts it
// prepares for.
//
// The pool does not survive the agent: ready sandboxes are destroyed when
// Run returns, and after a crash the agent tears down every attachment
// with the prefix that no instance records as its own (see IsPoolID).
package pool

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/kanga-run/kanga/internal/agent/fill"
	"github.com/kanga-run/kanga/internal/agent/network"
)

// Prefix starts the id of every pooled sandbox, so that a restarted agent
// recognises the ones a previous run left behind.
const Prefix = "pool-"

// IsPoolID tells whether id names a pooled sandbox.
func IsPoolID(id string) bool { return strings.HasPrefix(id, Prefix) }

// Network is the part of the host network the pool drives.
type Network interface {
	Setup(ctx context.Context, id string, ports []network.Port, limits network.Limits) (*network.Attachment, error)
	Teardown(ctx context.Context, id string, ports []network.Port) error
}

// Sandbox is a ready network sandbox.
type Sandbox struct {
	ID string
	network.Attachment
}

// recycled is a sandbox handed back by an instance of tenant.
type recycled struct {
	Sandbox
	tenant string
	at     time.Time
}

// Status is the pool's state, written to Config.StatusFile whenever it
// changes, for operators and tests (the API has no place for it).
type Status struct {
	Target   int     `json:"target"`
	Ready    int     `json:"ready"`
	Filling  int     `json:"filling"`
	Recycled int     `json:"recycled"` // handed back, held for their tenant
	Reused   uint64  `json:"reused"`   // creates served a recycled sandbox
	Hits     uint64  `json:"hits"`     // creates served from the pool
	Misses   uint64  `json:"misses"`   // eligible creates that found it empty
	Recent   int     `json:"recent"`   // eligible creates within the window
	RefillMS float64 `json:"refillMs"` // smoothed setup time of one sandbox
}

// Config configures a Pool.
type Config struct {
	Network Network
	Policy  fill.Policy
	// StatusFile, if set, receives the Status as JSON.
	StatusFile string
	Logger     *slog.Logger
	// Now is the clock; tests replace it.
	Now func() time.Time
}

// initialRefill is the setup time assumed before one is measured: CNI
// ADD with bridge, host-local and portmap on this kind of host.
const initialRefill = 100 * time.Millisecond

// Pool keeps sandboxes ready. Take is safe for concurrent use; Run must
// be running for the pool to fill.
type Pool struct {
	cfg    Config
	log    *slog.Logger
	filler fill.Filler

	mu       sync.Mutex
	ready    []Sandbox
	recycled []recycled  // oldest first
	creates  []time.Time // eligible creates, oldest first
	inflight int         // setups and teardowns running
	filling  int         // of inflight, setups
	refill   time.Duration
	failures int       // consecutive setup failures
	retryAt  time.Time // no setup before this, after failures
	hits     uint64
	reused   uint64
	misses   uint64
	target   int
	stopped  bool      // Run returned: nothing is kept any more
	expect   time.Time // keep Max ready until then (see Expect)
	lastTake time.Time
	last     Status // last written
}

// New returns a pool; it fills once Run runs.
func New(cfg Config) *Pool {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	cfg.Policy = cfg.Policy.WithDefaults()
	return &Pool{
		cfg:    cfg,
		log:    cfg.Logger.With("component", "pool"),
		filler: fill.NewFiller(),
		refill: initialRefill,
		target: cfg.Policy.Min,
	}
}

// Take hands out a ready sandbox for an instance of tenant: one the
// tenant's instances recycled, else a fresh one. It then belongs to the
// caller: it is the caller's to tear down (Network.Teardown with its ID)
// or to Recycle. Call it only for instances the pool can serve (no
// published ports, no bandwidth limits): every call counts as demand,
// served or not.
func (p *Pool) Take(tenant string) (Sandbox, bool) {
	p.mu.Lock()
	now := p.cfg.Now()
	p.creates = append(p.creates, now)
	p.lastTake = now
	p.trimLocked(now)
	var (
		sb Sandbox
		ok bool
	)
	for i := len(p.recycled) - 1; i >= 0; i-- {
		if p.recycled[i].tenant == tenant {
			sb, ok = p.recycled[i].Sandbox, true
			p.recycled = append(p.recycled[:i], p.recycled[i+1:]...)
			p.hits++
			p.reused++
			break
		}
	}
	if !ok {
		if n := len(p.ready); n > 0 {
			sb, ok = p.ready[n-1], true
			p.ready = p.ready[:n-1]
			p.hits++
		} else {
			p.misses++
		}
	}
	p.mu.Unlock()
	p.filler.Poke()
	return sb, ok
}

// Recycle hands sb back for later instances of tenant. The caller must
// have made it clean: no process left in the namespace (every container
// of the instance deleted), the host's connection-tracking entries of its
// address flushed, nothing recording it as the instance's any more. It
// reports false when the pool does not keep it (it holds Max already, or
// is stopping): the caller then tears it down as usual.
func (p *Pool) Recycle(tenant string, sb Sandbox) bool {
	p.mu.Lock()
	if p.stopped || tenant == "" || len(p.recycled) >= p.cfg.Policy.Max {
		p.mu.Unlock()
		return false
	}
	p.recycled = append(p.recycled, recycled{Sandbox: sb, tenant: tenant, at: p.cfg.Now()})
	p.mu.Unlock()
	p.filler.Poke() // for the status file
	return true
}

// Forget gives up the sandboxes recycled for tenant (it was deleted): they
// are torn down next, as if they had waited a window for nobody.
func (p *Pool) Forget(tenant string) {
	p.mu.Lock()
	var keep, doomed []recycled
	for _, r := range p.recycled {
		if r.tenant == tenant {
			r.at = time.Time{}
			doomed = append(doomed, r)
		} else {
			keep = append(keep, r)
		}
	}
	p.recycled = append(doomed, keep...)
	p.mu.Unlock()
	p.filler.Poke()
}

// MaxIdle is the most sandboxes the pool holds unclaimed.
func (p *Pool) MaxIdle() int { return p.cfg.Policy.Max }

// Expect announces a burst: the pool fills to Policy.Max and stays there
// for one Policy.Window (longer if creates keep coming), then sizes itself
// from demand again.
func (p *Pool) Expect() {
	p.mu.Lock()
	p.expect = p.cfg.Now().Add(p.cfg.Policy.Window)
	p.mu.Unlock()
	p.filler.Poke()
}

// trimLocked forgets creates older than the window.
func (p *Pool) trimLocked(now time.Time) {
	from := now.Add(-p.cfg.Policy.Window)
	i := 0
	for i < len(p.creates) && p.creates[i].Before(from) {
		i++
	}
	p.creates = p.creates[i:]
}

// Status reports the pool's current state.
func (p *Pool) Status() Status {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.statusLocked()
}

func (p *Pool) statusLocked() Status {
	return Status{
		Target: p.target, Ready: len(p.ready), Filling: p.filling,
		Recycled: len(p.recycled), Reused: p.reused,
		Hits: p.hits, Misses: p.misses, Recent: len(p.creates),
		RefillMS: float64(p.refill.Microseconds()) / 1000,
	}
}

// Run keeps the pool at its target until ctx ends, then destroys the
// sandboxes still ready. At most Policy.Parallel setups or teardowns run
// at a time, so the filler never crowds out the request path.
func (p *Pool) Run(ctx context.Context) {
	p.filler.Run(ctx, p.next, p.writeStatus, p.drain)
}

// next picks the next setup or teardown to run, if any is due and a slot
// is free, and accounts for it as in flight.
func (p *Pool) next() func(context.Context) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.cfg.Now()
	p.trimLocked(now)
	target := p.cfg.Policy.Target(now, p.creates, p.refill)
	if now.Before(p.expect) {
		target = p.cfg.Policy.Max
	}
	if target != p.target {
		p.log.Info("pool target changed", "from", p.target, "to", target,
			"recent_creates", len(p.creates), "refill", p.refill, "ready", len(p.ready))
		p.target = target
	}
	if p.inflight >= p.cfg.Policy.Parallel {
		return nil
	}
	// A recycled sandbox nobody of its tenant took within a window goes.
	if len(p.recycled) > 0 && !now.Before(p.recycled[0].at.Add(p.cfg.Policy.Window)) {
		sb := p.recycled[0].Sandbox
		p.recycled = p.recycled[1:]
		p.inflight++
		return func(ctx context.Context) {
			p.destroy(ctx, sb.ID)
			p.mu.Lock()
			p.inflight--
			p.mu.Unlock()
		}
	}
	switch {
	case len(p.ready)+p.filling < target && !now.Before(p.retryAt):
		p.inflight++
		p.filling++
		// At low CPU priority while starts are under way and the pool
		// still has sandboxes to give: the starts win the CPU. When the
		// host is quiet there is nothing to give way to (and at the lowest
		// priority a busy neighbour would starve the filler); when the
		// pool is about to run dry, a start would pay the whole network
		// setup. Either way the refill runs at normal priority.
		low := len(p.ready) > 1 && now.Before(p.lastTake.Add(fill.BusyFor))
		return func(ctx context.Context) { p.fill(ctx, low) }
	case len(p.ready) > target:
		// The oldest first: the newest are handed out first (Take pops the
		// end), so this keeps the pool's order simple.
		sb := p.ready[0]
		p.ready = p.ready[1:]
		p.inflight++
		return func(ctx context.Context) {
			p.destroy(ctx, sb.ID)
			p.mu.Lock()
			p.inflight--
			p.mu.Unlock()
		}
	}
	return nil
}

// fill sets up one sandbox and adds it to the ready list.
func (p *Pool) fill(ctx context.Context, low bool) {
	id := newID()
	start := p.cfg.Now()
	var (
		att *network.Attachment
		err error
	)
	setup := func() { att, err = p.cfg.Network.Setup(ctx, id, nil, network.Limits{}) }
	if low {
		fill.LowPriority(setup)
	} else {
		setup()
	}
	took := p.cfg.Now().Sub(start)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.inflight--
	p.filling--
	if err != nil {
		// Setup undoes its own partial work. Back off so that a broken
		// network (subnet exhausted, plugin missing) does not spin.
		p.failures++
		backoff := min(time.Second<<min(p.failures-1, 5), 30*time.Second)
		p.retryAt = p.cfg.Now().Add(backoff)
		if ctx.Err() == nil {
			p.log.Warn("setting up a pooled sandbox failed", "id", id, "err", err, "retry_in", backoff)
		}
		return
	}
	p.failures = 0
	if ctx.Err() != nil {
		// Stopping: do not hand out what nobody will destroy.
		p.mu.Unlock()
		p.destroy(context.WithoutCancel(ctx), id)
		p.mu.Lock()
		return
	}
	// Smoothed, so one slow setup under load does not swing the target.
	p.refill = (p.refill*3 + took) / 4
	p.ready = append(p.ready, Sandbox{ID: id, Attachment: *att})
}

func (p *Pool) destroy(ctx context.Context, id string) {
	if err := p.cfg.Network.Teardown(ctx, id, nil); err != nil {
		// The next agent start removes it as an unclaimed pool id.
		p.log.Warn("destroying a pooled sandbox failed", "id", id, "err", err)
	}
}

// drain destroys every ready sandbox, with a bound on the time it takes
// (the next start cleans up whatever is left).
func (p *Pool) drain(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	p.mu.Lock()
	ready := p.ready
	for _, r := range p.recycled {
		ready = append(ready, r.Sandbox)
	}
	p.ready, p.recycled, p.stopped = nil, nil, true
	p.mu.Unlock()
	for _, sb := range ready {
		p.destroy(ctx, sb.ID)
	}
	p.writeStatus()
}

func (p *Pool) writeStatus() {
	if p.cfg.StatusFile == "" {
		return
	}
	p.mu.Lock()
	st := p.statusLocked()
	changed := st != p.last
	p.last = st
	p.mu.Unlock()
	if !changed {
		return
	}
	b, _ := json.Marshal(st)
	if err := fill.WriteStatusFile(p.cfg.StatusFile, b); err != nil {
		p.log.Debug("writing the pool status failed", "err", err)
	}
}

func newID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return Prefix + hex.EncodeToString(b)
}
