// Package controlplane runs the control plane's background loops: the
// scheduler loop that places pending instances and the failure detector
// that re-creates the instances of hosts whose lease expired.
//
// Every replica of kanga server runs a ControlPlane; an etcd election picks
// the one that acts, and every write it makes is fenced by its leader key
// and by the mod revision of the instance it read, so that neither a
// deposed leader nor a stale snapshot can double-book a host.
//
// The loop is event driven: it lists the instances and hosts when it
// becomes leader, then follows their watches and runs a pass after each
// batch of events (everything that arrived while the previous pass ran),
// with no polling tick. A pass hands the pending instances to the pure
// scheduler.Schedule and applies its plan.
package controlplane

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
	"github.com/kanga-run/kanga/internal/model"
	"github.com/kanga-run/kanga/internal/scheduler"
	"github.com/kanga-run/kanga/internal/store"
)

// Store is what the control plane needs of the state store.
type Store interface {
	Campaign(ctx context.Context, name, id string, ttl time.Duration) (*store.Leader, error)
	ListAllInstanceVersions(ctx context.Context) ([]store.InstanceEvent, int64, error)
	WatchAllInstances(ctx context.Context, fromRevision int64) <-chan store.InstanceEvent
	WatchHostSnapshots(ctx context.Context) <-chan store.HostsSnapshot
	HostsChangedSince(ctx context.Context, rev int64) (bool, error)
	ListHostSnapshot(ctx context.Context) (store.HostsSnapshot, error)
	PutInstanceIf(ctx context.Context, l *store.Leader, inst *api.Instance, modRev int64) (int64, error)
	PutInstancesIf(ctx context.Context, l *store.Leader, writes []store.InstanceWrite) (int64, error)
	DeleteInstanceIf(ctx context.Context, l *store.Leader, tenantName, name string, modRev int64) error
}

// Config configures a ControlPlane.
type Config struct {
	Store Store
	// ID names this replica in the election (host name, pid, ...).
	ID     string
	Logger *slog.Logger
	// Policy is the scheduling policy; requests may override its mode.
	// The zero value bin-packs without tenant spread; kanga uses
	// DefaultPolicy.
	Policy scheduler.Policy
	// LeaderTTL is how long a leader that stopped answering keeps the
	// leadership; 5 s by default.
	LeaderTTL time.Duration
	// StartupGrace is how long a new leader waits before it treats a host
	// that was already NotReady when it took over as lost, so that hosts
	// reconnecting after a control-plane restart are not evicted; hosts it
	// sees go from Ready to NotReady are handled at once. LeaderTTL by
	// default.
	StartupGrace time.Duration
	// Now is the clock; time.Now by default.
	Now func() time.Time
	// ApplyParallelism bounds concurrent placement writes; 32 by default.
	ApplyParallelism int
	// UsageReconcile is how often the leader recomputes the tenants'
	// quota usage from their instances (also once when it takes over),
	// if the store can; 10 minutes by default.
	UsageReconcile time.Duration

	// The failure detector's safeguards (see liveness.go).
	//
	// Self names the host that runs in this replica's process (kanga
	// up): while the loop runs, so does that host, and its instances are
	// never handled as lost.
	Self string
	// Liveness, if set, is asked whether a host without a lease still
	// answers before its instances are handled as lost; it is asked
	// again every ProbeInterval (1 s) while the lease stays lapsed, each
	// time for at most ProbeTimeout (2 s).
	Liveness      Liveness
	ProbeInterval time.Duration
	ProbeTimeout  time.Duration
	// RecreateRate bounds how many instances of lost hosts are
	// re-created (or failed) a second, with a burst of one second's
	// worth; 0 is DefaultRecreateRate, negative is no limit.
	RecreateRate float64
	// BrakeThreshold is the share of hosts that may be lost at once
	// before the safety brake stops re-creating (with three hosts or
	// more; losing every host always trips it); 0 is
	// DefaultBrakeThreshold, negative turns the brake off.
	BrakeThreshold float64
	// BrakeSettle is how long the share of lost hosts must stay at or
	// under the threshold before a tripped brake releases: hosts coming
	// back after a mass loss do so one by one, and releasing at the first
	// dip would re-create the instances of the rest in a flurry, on the
	// hosts just back. 0 is DefaultBrakeSettle, negative releases at once.
	BrakeSettle time.Duration
}

// NoSafeguards turns the failure detector's safeguards off: every host
// without a lease is lost at once, and its instances are re-created with
// no limit. For comparisons only.
func (cfg *Config) NoSafeguards() {
	cfg.Self, cfg.Liveness = "", nil
	cfg.RecreateRate, cfg.BrakeThreshold, cfg.BrakeSettle = -1, -1, -1
}

// UsageReconciler is implemented by stores that keep a quota usage per
// tenant (store.Store): the leader has them recompute it, so a record an
// older version or a hand edit left wrong does not refuse or admit
// creates for long.
type UsageReconciler interface {
	ReconcileAllUsage(ctx context.Context) ([]string, error)
}

// DefaultPolicy bin-packs and spreads each tenant's instances over hosts
// and zones: a tenant keeps its blast radius small while the pool stays
// densely packed.
var DefaultPolicy = scheduler.Policy{Mode: scheduler.BinPack, TenantSpread: true}

// ControlPlane runs the leader-only loops.
type ControlPlane struct {
	cfg Config
	log *slog.Logger

	// recreate limits the re-creations of lost instances; it outlives
	// a leadership, so that flapping leaders do not each get a burst.
	// Only the loop goroutine uses it.
	recreate *bucket
	// brake is whether the safety brake holds, and clearSince, while it
	// holds, since when its condition has been clear (zero: it is not).
	// Like recreate they outlive a leadership: a flapping leader must not
	// release the brake by forgetting it. Only the loop goroutine uses
	// them.
	brake      bool
	clearSince time.Time

	mu       sync.Mutex
	leading  bool
	passes   int64
	placed   int64
	lastPass time.Duration
	// leadershipEnds counts the leaderships of this replica that ended
	// while it ran; recreated the instances of lost hosts it re-created
	// or failed. Both are 0 on a healthy platform, however loaded (issue
	// 22); the log carries them too.
	leadershipEnds int64
	recreated      int64
}

// New returns a ControlPlane; Run starts it.
func New(cfg Config) *ControlPlane {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.LeaderTTL <= 0 {
		cfg.LeaderTTL = 5 * time.Second
	}
	if cfg.StartupGrace <= 0 {
		cfg.StartupGrace = cfg.LeaderTTL
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.ApplyParallelism <= 0 {
		cfg.ApplyParallelism = 32
	}
	if cfg.UsageReconcile <= 0 {
		cfg.UsageReconcile = 10 * time.Minute
	}
	if cfg.ID == "" {
		cfg.ID = model.NewUID()
	}
	if cfg.ProbeInterval <= 0 {
		cfg.ProbeInterval = DefaultProbeInterval
	}
	if cfg.ProbeTimeout <= 0 {
		cfg.ProbeTimeout = DefaultProbeTimeout
	}
	if cfg.RecreateRate == 0 {
		cfg.RecreateRate = DefaultRecreateRate
	}
	if cfg.BrakeThreshold == 0 {
		cfg.BrakeThreshold = DefaultBrakeThreshold
	}
	if cfg.BrakeSettle == 0 {
		cfg.BrakeSettle = DefaultBrakeSettle
	}
	return &ControlPlane{cfg: cfg, log: cfg.Logger.With("component", "controlplane", "replica", cfg.ID),
		recreate: newBucket(cfg.RecreateRate, cfg.Now())}
}

// Leading reports whether this replica leads now.
func (c *ControlPlane) Leading() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.leading
}

// Stats are counters of the loop, for logs and benchmarks.
type Stats struct {
	Passes   int64
	Placed   int64
	LastPass time.Duration
	// LeadershipEnds counts this replica's leaderships that ended before
	// Run returned; Recreated the instances of lost hosts it re-created
	// or failed.
	LeadershipEnds int64
	Recreated      int64
}

// Stats returns the loop's counters.
func (c *ControlPlane) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return Stats{Passes: c.passes, Placed: c.placed, LastPass: c.lastPass,
		LeadershipEnds: c.leadershipEnds, Recreated: c.recreated}
}

const electionName = "controlplane"

// Run campaigns for the leadership and, while it leads, runs the
// scheduler loop and the failure detector. It returns ctx's error when ctx
// ends; on the way out it resigns, so a standby replica takes over at once.
func (c *ControlPlane) Run(ctx context.Context) error {
	for {
		l, err := c.cfg.Store.Campaign(ctx, electionName, c.cfg.ID, c.cfg.LeaderTTL)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			c.log.Warn("campaign for the control-plane leadership failed; retrying", "err", err)
			if !sleep(ctx, time.Second) {
				return ctx.Err()
			}
			continue
		}
		c.log.Info("leading the control plane", "since_revision", l.Revision())
		c.setLeading(true)
		err = c.lead(ctx, l)
		c.setLeading(false)
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		l.Resign(rctx)
		cancel()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		c.mu.Lock()
		c.leadershipEnds++
		ends := c.leadershipEnds
		c.mu.Unlock()
		// A stable message with a running count: tests and benchmarks
		// assert that it never appears under load.
		c.log.Warn("control-plane leadership ended; campaigning again", "err", err, "leadership_ends", ends)
	}
}

func (c *ControlPlane) setLeading(v bool) {
	c.mu.Lock()
	c.leading = v
	c.mu.Unlock()
	observeLeading(v)
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// lead runs the loops until the leadership or ctx ends.
func (c *ControlPlane) lead(ctx context.Context, l *store.Leader) error {
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-l.Done():
			cancel()
		case <-lctx.Done():
		}
	}()

	// The listing comes after the election, so it holds every write of
	// earlier leaders: theirs are fenced by keys deleted before ours.
	var (
		evs []store.InstanceEvent
		rev int64
		err error
	)
	for {
		evs, rev, err = c.cfg.Store.ListAllInstanceVersions(lctx)
		if err == nil {
			break
		}
		if lctx.Err() != nil {
			return lctx.Err()
		}
		c.log.Warn("listing instances failed; retrying", "err", err)
		if !sleep(lctx, 250*time.Millisecond) {
			return lctx.Err()
		}
	}
	st := newState(c.cfg.Now())
	for i := range evs {
		st.apply(&evs[i])
	}
	instCh := c.cfg.Store.WatchAllInstances(lctx, rev)
	hostCh := c.cfg.Store.WatchHostSnapshots(lctx)

	// Nothing is placed before the first host list: without it every
	// instance would be reported unschedulable.
	select {
	case hosts, ok := <-hostCh:
		if !ok {
			return lctx.Err()
		}
		st.setHosts(hosts)
	case <-lctx.Done():
		return lctx.Err()
	}
	graceEnd := time.NewTimer(c.cfg.StartupGrace)
	defer graceEnd.Stop()
	var retry, wake <-chan time.Time
	if r, ok := c.cfg.Store.(UsageReconciler); ok {
		go c.reconcileUsage(lctx, r)
	}

	for {
		if err := c.pass(lctx, l, st); err != nil {
			if store.IsNotLeader(err) || lctx.Err() != nil {
				return err
			}
			// etcd trouble: try again shortly even if no event comes.
			c.log.Warn("control-plane pass incomplete; retrying", "err", err)
			retry = time.After(250 * time.Millisecond)
		}
		if !st.wakeAt.IsZero() {
			wake = time.After(max(st.wakeAt.Sub(c.cfg.Now()), time.Millisecond))
		} else {
			wake = nil
		}
		select {
		case <-lctx.Done():
			return lctx.Err()
		case ev, ok := <-instCh:
			if !ok {
				return lctx.Err()
			}
			st.apply(&ev)
		case hosts, ok := <-hostCh:
			if !ok {
				return lctx.Err()
			}
			st.setHosts(hosts)
		case <-graceEnd.C:
			st.graceOver = true
		case <-retry:
			retry = nil
			st.retryAll = true
		case r := <-st.probed:
			st.applyProbe(r)
		case <-wake:
		}
		// Batch whatever else already arrived.
	drain:
		for {
			select {
			case ev, ok := <-instCh:
				if !ok {
					return lctx.Err()
				}
				st.apply(&ev)
			case hosts, ok := <-hostCh:
				if !ok {
					return lctx.Err()
				}
				st.setHosts(hosts)
			case r := <-st.probed:
				st.applyProbe(r)
			default:
				break drain
			}
		}
	}
}

// pass runs the failure detector and the scheduler once over st.
func (c *ControlPlane) pass(ctx context.Context, l *store.Leader, st *state) error {
	start := time.Now()
	var errs []error
	if err := c.detect(ctx, l, st); err != nil {
		errs = append(errs, err)
	}
	if err := c.endStopped(ctx, l, st); err != nil {
		errs = append(errs, err)
	}
	n, err := c.schedule(ctx, l, st)
	if err != nil {
		errs = append(errs, err)
	}
	c.mu.Lock()
	c.passes++
	c.placed += int64(n)
	c.lastPass = time.Since(start)
	c.mu.Unlock()
	observePass(time.Since(start), len(st.pending))
	return errors.Join(errs...)
}

// schedule places the pending instances that may fit now and records why
// the others do not. It returns how many it placed.
func (c *ControlPlane) schedule(ctx context.Context, l *store.Leader, st *state) (int, error) {
	retryAll := st.retryAll || st.freed
	st.retryAll, st.freed = false, false
	var (
		keys []string
		reqs []scheduler.Request
	)
	for key := range st.pending {
		e := st.instances[key]
		if !retryAll && st.unplaced[key] == e.modRev {
			continue // nothing changed since it did not fit
		}
		req, err := requestOf(key, e.inst)
		if err != nil {
			st.unplaced[key] = e.modRev
			c.log.Error("instance spec unreadable; not scheduling it", "instance", key, "err", err)
			continue
		}
		keys = append(keys, key)
		reqs = append(reqs, req)
	}
	if len(reqs) == 0 {
		return 0, nil
	}
	// The host watch and the instance watch are separate streams: an
	// instance created after an operator cordoned a host may arrive
	// first. One cheap read orders them, so that a cordon (or a new
	// host) that returned before the create is always seen.
	if changed, err := c.cfg.Store.HostsChangedSince(ctx, st.hostsRev); err != nil {
		return 0, err
	} else if changed {
		snap, err := c.cfg.Store.ListHostSnapshot(ctx)
		if err != nil {
			return 0, err
		}
		st.setHosts(snap)
	}
	// Oldest first, so that a burst does not starve earlier requests; the
	// key breaks ties for a deterministic plan.
	order := make([]int, len(reqs))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int {
		ia, ib := st.instances[keys[a]].inst, st.instances[keys[b]].inst
		if c := ia.CreatedAt.Compare(ib.CreatedAt); c != 0 {
			return c
		}
		return cmp.Compare(keys[a], keys[b])
	})
	sorted := make([]scheduler.Request, len(reqs))
	for i, j := range order {
		sorted[i] = reqs[j]
	}
	plan := scheduler.Schedule(st.snapshot(sorted), sorted, policyFor(c.cfg.Policy, len(st.hosts)))

	now := c.cfg.Now().UTC()
	var writes []write
	for _, p := range plan.Placements {
		e := st.instances[p.ID]
		inst := *e.inst
		inst.Status.Host = p.Host
		inst.Status.Reason, inst.Status.Message = "", ""
		inst.Status.Events = model.AppendEvent(slices.Clone(inst.Status.Events), api.Event{
			Time: now, Type: "Normal", Reason: "Scheduled", Message: "assigned to host " + p.Host})
		writes = append(writes, write{key: p.ID, inst: &inst, modRev: e.modRev})
	}
	for _, u := range plan.Unplaced {
		e := st.instances[u.ID]
		st.unplaced[u.ID] = e.modRev
		reason, msg := unplacedStatus(e.inst, u)
		if e.inst.Status.Reason == reason && e.inst.Status.Message == msg {
			continue
		}
		inst := *e.inst
		inst.Status.Reason, inst.Status.Message = reason, msg
		// One event per distinct reason, as kube-scheduler's
		// FailedScheduling, not one per pass.
		inst.Status.Events = model.AppendEvent(slices.Clone(inst.Status.Events), api.Event{
			Time: now, Type: "Warning", Reason: "FailedScheduling", Message: msg})
		writes = append(writes, write{key: u.ID, inst: &inst, modRev: e.modRev})
	}
	placed, err := c.apply(ctx, l, st, writes)
	return placed, err
}

// policyFor limits the candidates scored per request on large pools when
// the policy sets no limit, as kube-scheduler's adaptive
// percentageOfNodesToScore: 5% of the hosts, at least 500. A full scan
// costs about 10 ns per host and request (internal/scheduler/bench_test.go:
// 9,000 placements/s at 10,000 hosts, 64,000/s with 500 candidates).
func policyFor(p scheduler.Policy, hosts int) scheduler.Policy {
	if p.MaxCandidates == 0 && hosts > 1000 {
		p.MaxCandidates = max(500, hosts/20)
	}
	return p
}

// write is one fenced put (or, with del, delete) of the loop.
type write struct {
	key    string
	inst   *api.Instance
	modRev int64
	del    bool
	// unleased, if set, is a host that must hold no lease for the write
	// to apply (store.InstanceWrite.Unleased).
	unleased string
}

// apply commits writes and folds the successful ones into st at once, so
// that the next pass sees them even before their watch events arrive.
// Puts go in transactions of up to store.MaxBatch (one etcd commit for
// many placements), several in flight; a batch that meets a changed
// instance is retried one by one. A conflict is not an error: the
// instance changed, and its newer version, coming through the watch, is
// looked at again.
func (c *ControlPlane) apply(ctx context.Context, l *store.Leader, st *state, writes []write) (int, error) {
	results := make([]commitResult, len(writes))
	var groups [][]int
	var cur, fenced []int
	for i, w := range writes {
		switch {
		case w.del:
			groups = append(groups, []int{i})
		case w.unleased != "":
			// Each fenced host adds a compare: half batches stay within
			// etcd's limit on a transaction's compares.
			fenced = append(fenced, i)
			if len(fenced) == store.MaxBatch/2 {
				groups = append(groups, fenced)
				fenced = nil
			}
		default:
			cur = append(cur, i)
			if len(cur) == store.MaxBatch {
				groups = append(groups, cur)
				cur = nil
			}
		}
	}
	if len(cur) > 0 {
		groups = append(groups, cur)
	}
	if len(fenced) > 0 {
		groups = append(groups, fenced)
	}
	run := func(g []int) {
		if len(g) == 1 {
			results[g[0]] = c.commit(ctx, l, writes[g[0]])
			return
		}
		batch := make([]store.InstanceWrite, len(g))
		for j, i := range g {
			batch[j] = store.InstanceWrite{Instance: writes[i].inst, ModRev: writes[i].modRev, Unleased: writes[i].unleased}
		}
		rev, err := c.cfg.Store.PutInstancesIf(ctx, l, batch)
		if errors.Is(err, errdefs.ErrConflict) {
			for _, i := range g {
				results[i] = c.commit(ctx, l, writes[i])
			}
			return
		}
		for _, i := range g {
			results[i] = commitResult{w: writes[i], modRev: rev, err: err}
		}
	}
	if len(groups) == 1 {
		run(groups[0])
	} else {
		sem := make(chan struct{}, c.cfg.ApplyParallelism)
		var wg sync.WaitGroup
		for _, g := range groups {
			sem <- struct{}{}
			wg.Add(1)
			go func() {
				defer func() { <-sem; wg.Done() }()
				run(g)
			}()
		}
		wg.Wait()
	}
	placed := 0
	var errs []error
	for _, r := range results {
		switch {
		case r.err == nil:
			if r.w.del {
				st.apply(&store.InstanceEvent{Deleted: true, Tenant: r.w.inst.Tenant, Name: r.w.inst.Name, Instance: r.w.inst})
				continue
			}
			if r.w.inst.Status.Host != "" && st.instances[r.w.key].inst.Status.Host == "" {
				placed++
				observePlaced(r.w.inst, c.cfg.Now())
			}
			st.apply(&store.InstanceEvent{Instance: r.w.inst, Tenant: r.w.inst.Tenant, Name: r.w.inst.Name, ModRevision: r.modRev})
			if _, wrote := st.unplaced[r.w.key]; wrote && isPending(r.w.inst) {
				// Our own "does not fit" write: nothing changed that
				// could make it fit.
				st.unplaced[r.w.key] = r.modRev
			}
		case errors.Is(r.err, errdefs.ErrConflict):
		case store.IsNotLeader(r.err):
			return placed, r.err
		default:
			errs = append(errs, r.err)
		}
	}
	return placed, errors.Join(errs...)
}

// commitResult is the outcome of one write.
type commitResult struct {
	w      write
	modRev int64
	err    error
}

func (c *ControlPlane) commit(ctx context.Context, l *store.Leader, w write) commitResult {
	if w.del {
		err := c.cfg.Store.DeleteInstanceIf(ctx, l, w.inst.Tenant, w.inst.Name, w.modRev)
		return commitResult{w: w, err: err}
	}
	if w.unleased != "" {
		rev, err := c.cfg.Store.PutInstancesIf(ctx, l, []store.InstanceWrite{{Instance: w.inst, ModRev: w.modRev, Unleased: w.unleased}})
		return commitResult{w: w, modRev: rev, err: err}
	}
	rev, err := c.cfg.Store.PutInstanceIf(ctx, l, w.inst, w.modRev)
	return commitResult{w: w, modRev: rev, err: err}
}

// endStopped makes instances that were stopped before any host ran them
// terminal, which `kanga stop` waits for.
func (c *ControlPlane) endStopped(ctx context.Context, l *store.Leader, st *state) error {
	if len(st.stopped) == 0 {
		return nil
	}
	now := c.cfg.Now().UTC()
	var writes []write
	for key := range st.stopped {
		e := st.instances[key]
		inst := *e.inst
		inst.Status.Phase = api.PhaseFailed
		inst.Status.Reason, inst.Status.Message = "Stopped", "stopped before any host ran it"
		inst.Status.FinishedAt = &now
		inst.Status.Events = model.AppendEvent(slices.Clone(inst.Status.Events), api.Event{
			Time: now, Type: "Normal", Reason: "Stopped", Message: "stopped before any host ran it"})
		writes = append(writes, write{key: key, inst: &inst, modRev: e.modRev})
	}
	_, err := c.apply(ctx, l, st, writes)
	return err
}

// detect handles the instances of lost hosts: a host that holds no lease
// (NotReady) or is not registered at all, and that does not answer by
// another path either (Config.Liveness; never the host in this process,
// Config.Self). Hosts that were already lost when this leader took over get
// the startup grace first. Re-creations are rate-limited and fenced on the
// host still holding no lease; the safety brake stops them when too many
// hosts look lost at once.
func (c *ControlPlane) detect(ctx context.Context, l *store.Leader, st *state) error {
	now := c.cfg.Now().UTC()
	st.wakeAt = time.Time{}
	// The hosts to look at: those without a lease or with a condition,
	// and those only named by instances (not registered); out of all
	// hosts known.
	names := slices.Clone(st.attention)
	total := len(st.hosts)
	for name := range st.byHost {
		if _, ok := st.hosts[name]; !ok {
			names = append(names, name)
			total++
		}
	}
	slices.Sort(names)
	var deadHosts []string
	for _, name := range names {
		v, how := c.verdictOf(ctx, st, name, now)
		switch v {
		case healthy:
			c.setCondition(ctx, st, name, "", "")
		case lapsed:
			c.setCondition(ctx, st, name, api.HostLeaseLapsed, lapsedMessage(how))
		case dead:
			deadHosts = append(deadHosts, name)
		}
	}
	brake, settling := c.updateBrake(st, braked(len(deadHosts), total, c.cfg.BrakeThreshold), len(deadHosts), total, deadHosts, now)
	var writes []write
	held := 0
	for _, hostName := range deadHosts {
		switch {
		case settling:
			c.setCondition(ctx, st, hostName, api.HostSafetyBrake,
				fmt.Sprintf("%d of %d hosts lost: the safety brake holds until that has lasted %s, the instances are not re-created yet", len(deadHosts), total, c.cfg.BrakeSettle))
		case brake:
			c.setCondition(ctx, st, hostName, api.HostSafetyBrake,
				fmt.Sprintf("%d of %d hosts lost at once: the safety brake holds, the instances are not re-created", len(deadHosts), total))
		default:
			c.setCondition(ctx, st, hostName, api.HostLost, "the lease expired and the host does not answer; its instances are re-created elsewhere")
		}
		keys := slices.Sorted(maps.Keys(st.byHost[hostName]))
		for _, key := range keys {
			e := st.instances[key]
			inst := *e.inst
			inst.Status.Events = slices.Clone(inst.Status.Events)
			inst.Status.Containers = slices.Clone(inst.Status.Containers)
			inst.Status.InitContainers = slices.Clone(inst.Status.InitContainers)
			w := write{key: key, inst: &inst, modRev: e.modRev}
			if inst.DeletionRequested {
				// Nobody is left to tear it down; the host removes what
				// it still has when it returns (orphan cleanup). Nothing
				// runs again, so neither the brake nor the limit applies.
				w.del = true
				writes = append(writes, w)
				continue
			}
			if brake {
				continue
			}
			if !c.recreate.take(now) {
				held++
				continue
			}
			// Fenced: if the host takes a lease meanwhile, the write
			// fails and the instance stays where it runs.
			w.unleased = hostName
			if restartable(&inst) {
				Recreate(&inst, ReasonLost, fmt.Sprintf("host %s stopped answering (its lease expired); re-creating the instance on another host", hostName), now)
			} else {
				failLost(&inst, fmt.Sprintf("host %s stopped answering (its lease expired); restart policy %s, so the instance is not re-created", hostName, inst.Spec.RestartPolicy), now)
			}
			writes = append(writes, w)
		}
	}
	if held > 0 {
		st.wakeAt = earliest(st.wakeAt, c.recreate.next(now))
	}
	if len(writes) == 0 {
		return nil
	}
	c.log.Warn("re-creating or failing the instances of lost hosts", "instances", len(writes), "held_by_rate_limit", held, "lost_hosts", deadHosts)
	_, err := c.apply(ctx, l, st, writes)
	n := 0
	for _, w := range writes {
		if !w.del {
			n++
		}
	}
	c.mu.Lock()
	c.recreated += int64(n)
	c.mu.Unlock()
	return err
}

// reconcileUsage recomputes the tenants' quota usage now and every
// UsageReconcile while ctx (the leadership) lasts.
func (c *ControlPlane) reconcileUsage(ctx context.Context, r UsageReconciler) {
	for {
		fixed, err := r.ReconcileAllUsage(ctx)
		switch {
		case err != nil && ctx.Err() == nil:
			c.log.Warn("recomputing the tenants' quota usage failed", "err", err)
		case len(fixed) > 0:
			c.log.Warn("corrected the quota usage of tenants", "tenants", fixed)
		}
		if !sleep(ctx, c.cfg.UsageReconcile) {
			return
		}
	}
}
