// The runner: one goroutine per instance on this host, which owns the
// instance's containers and its status, and nothing else writes them.
// This file holds its state (runner, ctr), its life (run) and its loop,
// which reads task exits, probe and hook results, timers and record
// changes. The concerns the loop hands work to live beside it:
//
//   - lifecycle.go, steps/: starting the instance (named steps, undone
//     in reverse on failure);
//   - task.go: starting a container's task, or adopting one an earlier
//     agent left running;
//   - exit.go: a task's end, its reason, and what the restart policy
//     does with it;
//   - restart.go: when a container runs again (backoffPolicy) and what a
//     restart renews first;
//   - status.go: computing the instance's status from the runner's view
//     and publishing it to the store;
//   - teardown.go: stopping (preStop, stop signal, SIGKILL after grace)
//     and removing everything of the instance from this host.

package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/oci"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/internal/agent/network"
	"github.com/kanga-run/kanga/internal/model"
	"github.com/kanga-run/kanga/internal/tenant"
)

// runner drives one instance through its lifecycle on this host. It owns
// the instance's containers, sandbox and status; nothing else writes them.
type runner struct {
	a      *Agent
	uid    string
	tenant string
	name   string
	log    *slog.Logger

	mu      sync.Mutex
	latest  *api.Instance
	gone    bool // the record no longer exists (or belongs to a new UID)
	notify  chan struct{}
	phase   api.Phase
	phaseCh chan struct{} // closed and replaced whenever phase changes
	ctrs    []*ctr
	exits   chan exit
	// probeResults carries the containers' probe transitions (probes.go).
	probeResults chan probeResult
	// hookResults carries the ends of the containers' hooks (hooks.go).
	hookResults chan hookResult
	// deviceOps are attaches and detaches of devices (devicelive.go).
	deviceOps chan deviceOp
	events    []api.Event
	ip        string
	stopping  bool
	killAt    time.Time
	// deadline is when the instance's activeDeadlineSeconds runs out
	// (zero: none, or already acted on); terminal, once set, is the phase
	// every later status write has.
	deadline time.Time
	terminal api.Phase
	failure  *api.InstanceStatus
	hold     *api.InstanceStatus // why the instance waits in Pending, while it does
	devices  []string            // the CDI devices it holds (see devices.go)
	att      *network.Attachment // once the sandbox is set up
	prof     *startProfile       // set while start runs
	pending  chan struct{}       // closed when an asynchronous status write ends
	// secretEnv is, by container, the env of the containers that take env
	// from secrets, as the control plane resolved it at start (files.go);
	// never written to the record.
	secretEnv map[string][]api.EnvVar
	// stopFiles ends the refresh of the secret and config volumes.
	stopFiles func()

	// adopted is set when start found the instance's containers made by
	// a previous run of the agent (metering then resumes).
	adopted bool

	// res are the instance's resources, parsed once when the runner is
	// made (a spec does not change): every reader on this host (cgroups,
	// cpuset, network limits, logs, meter, SLA, the tenant's cgroup) takes
	// these. resErr is the parse's error, naming each field; an instance
	// with one fails before anything is made for it (run), and res keeps
	// the fields that parsed.
	res    model.Resources
	resErr error

	// ports are the host ports the instance publishes (a spec does not
	// change); portsHeld, guarded by a.mu, is set once they are its on this
	// host: admitted by admitStart, or found published by an earlier agent.
	ports     []api.PortMapping
	portsHeld bool

	// volumePaths is the host path of each volume the volumes step made,
	// by volume name, for the containers' bind mounts.
	volumePaths map[string]string

	// inits are the init containers, in order (initcontainers.go);
	// initDone is set once they all completed, or once the app containers
	// were found started by an earlier agent. Until then no app container
	// starts.
	inits    []*ctr
	initDone bool
}

// ctr is the runner's view of one container.
type ctr struct {
	spec       api.ContainerSpec
	status     api.ContainerStatus
	c          containerd.Container
	task       containerd.Task
	generation int
	backoff    time.Duration
	restartAt  time.Time // zero unless a restart is scheduled
	oomKills   uint64
	// fresh is set when this runner created the container: it then has
	// no task yet, and starting it needs no lookup.
	fresh bool
	// warmSpec is the real spec of a claimed warm container until it is
	// recorded on the container (finishClaim).
	warmSpec *oci.Spec
	// launch is what the launcher execs, for a container that takes env
	// from secrets (launch.go); in memory only.
	launch *launch
	// init marks an init container.
	init bool
	// stopProbes ends the probes of the current run; started is set once
	// its startup probe passed (or it has none); killAt is when a
	// container killed for a failed probe gets SIGKILL (probes.go).
	stopProbes func()
	started    bool
	killAt     time.Time
	// postStartDue is set when this run of the container started here
	// (not adopted) and its postStart hook has not ended; hookRunning is
	// the hook in flight, ended by cancelHook (hooks.go).
	postStartDue bool
	hookRunning  hookKind
	cancelHook   func()
}

// mark ends a profiled step of the start, if one is being profiled.
func (r *runner) mark(step string) {
	if r.prof != nil {
		r.prof.step(step)
	}
}

func newRunner(a *Agent, inst *api.Instance) *runner {
	res, resErr := model.ParseResources(inst.Spec.Resources)
	return &runner{
		a: a, uid: inst.UID, tenant: inst.Tenant, name: inst.Name,
		log:     a.log.With("instance", inst.Name, "tenant", inst.Tenant, "uid", inst.UID),
		latest:  inst,
		notify:  make(chan struct{}, 1),
		phase:   inst.Status.Phase,
		phaseCh: make(chan struct{}),
		exits:   make(chan exit, 16),
		// probeResults is drained by the loop; a probe's send also ends
		// with its run.
		probeResults: make(chan probeResult, 16),
		hookResults:  make(chan hookResult, 16),
		deviceOps:    make(chan deviceOp),
		res:          res,
		resErr:       resErr,
		ports:        inst.Spec.Ports,
		// Past Pending, an earlier agent set the sandbox (and its ports) up.
		portsHeld: len(inst.Spec.Ports) > 0 && inst.Status.Phase != api.PhasePending,
	}
}

// shared reports an instance of the shared CPU policy, whose resources
// parsed: the ones that live under their tenant's cgroup and count
// towards its use on this host.
func (r *runner) shared() bool {
	return r.resErr == nil && r.res.DedicatedCores == 0
}

// update gives the runner a newer version of its instance.
func (r *runner) update(inst *api.Instance, deleted bool) {
	r.mu.Lock()
	if deleted || inst.UID != r.uid {
		r.gone = true
	} else {
		r.latest = inst
	}
	r.mu.Unlock()
	select {
	case r.notify <- struct{}{}:
	default:
	}
}

func (r *runner) snapshot() (api.Instance, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return *r.latest, r.gone
}

// currentPhase returns the phase and a channel closed when it changes.
func (r *runner) currentPhase() (api.Phase, <-chan struct{}) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.phase, r.phaseCh
}

func (r *runner) setPhase(p api.Phase) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.phase != p {
		r.phase = p
		close(r.phaseCh)
		r.phaseCh = make(chan struct{})
	}
}

func (r *runner) tctx(ctx context.Context) context.Context {
	return tenant.WithName(r.a.ns(ctx), r.tenant)
}

func (r *runner) event(typ, reason, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if typ == "Warning" {
		r.log.Warn(msg, "reason", reason)
	} else {
		r.log.Info(msg, "reason", reason)
	}
	r.events = append(r.events, api.Event{Time: time.Now().UTC(), Type: typ, Reason: reason, Message: msg})
}

func ports(spec api.InstanceSpec) []network.Port {
	var ps []network.Port
	for _, p := range spec.Ports {
		ps = append(ps, network.Port{HostIP: p.HostIP, HostPort: p.HostPort, ContainerPort: p.ContainerPort, Protocol: p.Protocol})
	}
	return ps
}

// netLimits are the bandwidth limits of r; unset is unlimited.
func netLimits(r model.Resources) network.Limits {
	return network.Limits{IngressBPS: r.IngressBPS, EgressBPS: r.EgressBPS}
}

// run is the lifecycle. It returns when the instance is deleted, or when
// ctx ends (the agent is stopping), leaving containers running for the
// next agent to adopt.
func (r *runner) run(ctx context.Context) {
	inst, gone := r.snapshot()
	if gone || inst.DeletionRequested || autoRemoveDue(&inst) {
		r.teardown(ctx, !gone)
		return
	}
	waiting := "ContainerCreating"
	if len(inst.Spec.InitContainers) > 0 {
		waiting = model.ReasonPodInitializing
	}
	for _, cs := range inst.Spec.Containers {
		c := &ctr{spec: cs, status: api.ContainerStatus{Name: cs.Name, State: api.ContainerWaiting, Reason: waiting}}
		for _, old := range inst.Status.Containers {
			if old.Name == cs.Name {
				c.status = old
			}
		}
		r.ctrs = append(r.ctrs, c)
	}
	r.initContainers(&inst)
	if inst.Status.Phase.Terminal() {
		// Nothing will run again; only a delete can change this instance.
		// A meter the previous run left ends when the run did.
		r.a.meter.end(ctx, r.uid, lastExit(append(slices.Clone(inst.Status.InitContainers), inst.Status.Containers...), inst.Status.FinishedAt))
		r.setPhase(inst.Status.Phase)
		r.waitForDelete(ctx)
		return
	}
	if r.resErr != nil {
		// The API refuses such a spec: a record that has one anyway
		// (written around it, or by an older version) never starts.
		err := fmt.Errorf("the instance's resources do not parse: %w", r.resErr)
		r.event("Warning", reasonConfigError, "%v", err)
		r.fail(ctx, reasonConfigError, err)
		r.waitForDelete(ctx)
		return
	}
	if !r.reserveCPUs(ctx, &inst) {
		return
	}
	if inst.Status.Phase == api.PhasePending {
		if reason, err := r.admitStart(ctx, &inst); err != nil {
			if ctx.Err() != nil {
				return
			}
			r.event("Warning", reason, "%v", err)
			r.fail(ctx, reason, err)
			r.waitForDelete(ctx)
			return
		}
	}
	// A burst of starts queues here, Pending, rather than all running at
	// once and starving the host's control path (startslots.go).
	release, ok := r.a.starts.acquire(ctx)
	if !ok {
		return
	}
	err := r.start(ctx, &inst)
	release()
	if err != nil {
		if ctx.Err() != nil {
			return
		}
		reason := "StartFailed"
		if ce := (*errConfig)(nil); errors.As(err, &ce) {
			reason = reasonConfigError
		}
		r.event("Warning", reason, "%v", err)
		r.fail(ctx, reason, err)
		r.waitForDelete(ctx)
		return
	}
	if d := inst.Spec.ActiveDeadlineSeconds; d != nil {
		// Counted from the instance's start, which an earlier agent may
		// have recorded.
		from := time.Now()
		if cur, _ := r.snapshot(); cur.Status.StartedAt != nil {
			from = *cur.Status.StartedAt
		}
		r.deadline = from.Add(time.Duration(*d) * time.Second)
	}
	r.a.meter.begin(ctx, &inst, r.res, r.runStart(), !r.adopted)
	// start started the probes (startAllProbes).
	defer r.stopAllProbes()
	stopSampling := r.a.startSampling(ctx, r.uid)
	defer stopSampling()
	if objectVolumes(&inst.Spec) > 0 {
		fctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			r.refreshFiles(fctx, &inst)
		}()
		// Stopped before teardown unmounts the files, and with the agent.
		r.stopFiles = func() { cancel(); <-done }
		defer r.stopFiles()
	}
	r.loop(ctx)
}

// runStart is when the instance's current run began: its earliest
// container start.
func (r *runner) runStart() time.Time {
	var first time.Time
	for _, c := range r.all() {
		if c.status.StartedAt != nil && (first.IsZero() || c.status.StartedAt.Before(first)) {
			first = *c.status.StartedAt
		}
	}
	if first.IsZero() {
		first = time.Now()
	}
	return first
}

func (r *runner) loop(ctx context.Context) {
	for {
		var (
			timer <-chan time.Time
			t     *time.Timer
		)
		if next := r.nextDeadline(); !next.IsZero() {
			t = time.NewTimer(time.Until(next))
			timer = t.C
		}
		done := false
		select {
		case <-ctx.Done():
			done = true
		case ex := <-r.exits:
			if err := r.handleExit(ctx, ex); err != nil {
				// The app containers did not start after the init
				// containers: the instance fails as a start would.
				r.event("Warning", "StartFailed", "%v", err)
				r.fail(ctx, "StartFailed", err)
				r.waitForDelete(ctx)
				return
			}
			r.meterRunEnd(ctx)
		case pr := <-r.probeResults:
			r.handleProbe(ctx, pr)
		case hr := <-r.hookResults:
			r.handleHook(ctx, hr)
		case op := <-r.deviceOps:
			r.handleDeviceOp(op)
		case <-timer:
			r.handleDeadlines(ctx)
		case <-r.notify:
			inst, gone := r.snapshot()
			if gone || inst.DeletionRequested || autoRemoveDue(&inst) {
				r.teardown(ctx, !gone)
				done = true
			} else if inst.StopRequested && !r.stopping {
				r.stop(ctx, inst.StopGraceSeconds)
			}
		}
		if t != nil {
			t.Stop()
		}
		if done {
			return
		}
		r.publish(ctx, "")
	}
}

func (r *runner) nextDeadline() time.Time {
	var next time.Time
	consider := func(t time.Time) {
		if !t.IsZero() && (next.IsZero() || t.Before(next)) {
			next = t
		}
	}
	consider(r.killAt)
	consider(r.deadline)
	for _, c := range r.all() {
		consider(c.restartAt)
		consider(c.killAt)
	}
	return next
}

// handleDeadlines acts on what the loop's timer was set for
// (nextDeadline): the instance's activeDeadlineSeconds, kills due after a
// grace period, restarts due after their backoff.
func (r *runner) handleDeadlines(ctx context.Context) {
	now := time.Now()
	if !r.deadline.IsZero() && !now.Before(r.deadline) {
		r.deadline = time.Time{}
		inst, _ := r.snapshot()
		msg := fmt.Sprintf("the instance ran longer than its activeDeadlineSeconds (%ds)", *inst.Spec.ActiveDeadlineSeconds)
		r.event("Warning", "DeadlineExceeded", "%s: stopping it", msg)
		r.failure = &api.InstanceStatus{Reason: "DeadlineExceeded", Message: msg}
		r.terminal = api.PhaseFailed
		if !r.stopping {
			r.stop(ctx, inst.StopGraceSeconds)
		}
	}
	r.killDue(ctx, now)
	r.restartDue(ctx, now)
}
