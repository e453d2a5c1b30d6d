package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/cio"
	cerrdefs "github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/oci"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
	"github.com/kanga-run/kanga/internal/agent/network"
	"github.com/kanga-run/kanga/internal/agent/pool"
	"github.com/kanga-run/kanga/internal/agent/warm"
	"github.com/kanga-run/kanga/internal/model"
	"github.com/kanga-run/kanga/internal/tenant"
)

const (
	restartBackoffMin = time.Second
	restartBackoffMax = 30 * time.Second
	// A container that ran this long before exiting restarts without delay
	// growth, as kubelet resets its crash-loop backoff.
	restartBackoffReset = 10 * time.Second
)

// exit is a container's task ending.
type exit struct {
	container  string
	generation int
	code       int
	at         time.Time
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

// mark ends a profiled step of the start, if one is being profiled.
func (r *runner) mark(step string) {
	if r.prof != nil {
		r.prof.step(step)
	}
}

func newRunner(a *Agent, inst *api.Instance) *runner {
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
		ports:        inst.Spec.Ports,
		// Past Pending, an earlier agent set the sandbox (and its ports) up.
		portsHeld: len(inst.Spec.Ports) > 0 && inst.Status.Phase != api.PhasePending,
	}
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

// netLimits are the bandwidth limits of the spec; unset is unlimited.
func netLimits(res api.Resources) (network.Limits, error) {
	r, err := model.ParseResources(res)
	if err != nil {
		return network.Limits{}, err
	}
	return network.Limits{IngressBPS: r.IngressBPS, EgressBPS: r.EgressBPS}, nil
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
	r.a.meter.begin(ctx, &inst, r.runStart(), !r.adopted)
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

// lastExit is when the last of the containers exited (fallback if none
// says).
func lastExit(cs []api.ContainerStatus, fallback *time.Time) time.Time {
	var last time.Time
	for _, c := range cs {
		if c.FinishedAt != nil && c.FinishedAt.After(last) {
			last = *c.FinishedAt
		}
	}
	if last.IsZero() && fallback != nil {
		last = *fallback
	}
	if last.IsZero() {
		last = time.Now()
	}
	return last
}

// meterRunEnd ends the metering once nothing runs or will run again: at
// the last container's exit.
func (r *runner) meterRunEnd(ctx context.Context) {
	inst, _ := r.snapshot()
	statuses := make([]api.ContainerStatus, len(r.ctrs))
	for i, c := range r.ctrs {
		statuses[i] = c.status
	}
	inits := r.initStatuses()
	if model.DeriveInstancePhase(inst.Spec.RestartPolicy, inst.StopRequested || r.stopping, inits, statuses).Terminal() {
		r.a.meter.end(ctx, r.uid, lastExit(append(inits, statuses...), nil))
	}
}

// adoptOrStart attaches to a task a previous agent left running, or starts
// one. It never starts a second task for a container that has one running.
// started tells whether it started one (which a failed start undoes).
func (r *runner) adoptOrStart(ctx context.Context, inst *api.Instance, c *ctr) (started bool, err error) {
	if c.fresh {
		return true, r.startTask(ctx, c)
	}
	// A running task's output goes on into the log from where the shim
	// kept it waiting.
	lw := r.a.logWriterFor(r.a.logPath(r.uid, c.spec.Name), logLimitsOf(inst.Spec.Resources))
	task, err := c.c.Task(ctx, func(fifos *cio.FIFOSet) (cio.IO, error) { return r.a.attachLogIO(fifos, lw) })
	if err == nil {
		st, err := task.Status(ctx)
		if err != nil {
			return false, fmt.Errorf("reading task status: %w", err)
		}
		switch st.Status {
		case containerd.Running, containerd.Paused, containerd.Pausing:
			if r.a.holderRunning(ctx, c.c, task) {
				// An agent died mid-claim, before the holder was handed the
				// process: start the container over with its real spec.
				r.log.Info("a claim of a warm container was cut short; starting the container anew", "container", c.spec.Name)
				c.task = task
				return true, r.startTask(ctx, c)
			}
			c.task = task
			c.generation++
			statusC, err := task.Wait(ctx)
			if err != nil {
				return false, err
			}
			go r.waitTask(ctx, c.spec.Name, c.generation, task, statusC)
			c.status.State = api.ContainerRunning
			c.status.PID = int(task.Pid())
			c.status.Reason = ""
			r.log.Info("adopted running container", "container", c.spec.Name, "pid", task.Pid())
			r.adopted = true
			return false, nil
		case containerd.Stopped:
			// It ended while nobody watched; account for it like any exit.
			r.adopted = true
			c.task = task
			c.generation++
			r.exits <- exit{container: c.spec.Name, generation: c.generation, code: int(st.ExitStatus), at: st.ExitTime}
			return false, nil
		}
	} else if !cerrdefs.IsNotFound(err) {
		return false, fmt.Errorf("loading task: %w", err)
	}
	if c.status.State == api.ContainerTerminated {
		code := -1
		if c.status.ExitCode != nil {
			code = *c.status.ExitCode
		}
		if inst.StopRequested || !model.WillRestart(inst.Spec.RestartPolicy, code) {
			return false, nil // finished for good before the agent restarted
		}
		return true, r.restartTask(ctx, c)
	}
	return true, r.startTask(ctx, c)
}

func (r *runner) startTask(ctx context.Context, c *ctr) error {
	if c.warmSpec != nil || r.a.ctrID(r.uid, c.spec.Name) != containerID(r.uid, c.spec.Name) {
		// A claimed warm container may still carry the holder's spec.
		if labels, err := c.c.Labels(ctx); err != nil {
			return fmt.Errorf("reading the container's labels: %w", err)
		} else if isWarmLabelled(labels) {
			inst, _ := r.snapshot()
			if err := r.finishClaim(ctx, &inst, c); err != nil {
				return fmt.Errorf("recording the container's spec: %w", err)
			}
		}
	}
	if c.fresh {
		c.fresh = false // from now on, a task may exist
	} else if old, err := c.c.Task(ctx, nil); err == nil {
		if err := deleteTask(ctx, old); err != nil {
			return fmt.Errorf("removing the previous task: %w", err)
		}
	}
	r.mark("task-lookup")
	if c.spec.TerminationMessagePath != "" {
		if err := resetTerminationFile(r.a.terminationDir(r.uid), c.spec.Name); err != nil {
			return err
		}
	}
	inst, _ := r.snapshot()
	if launched(&c.spec) {
		if err := r.ensureLaunch(ctx, &inst, c); err != nil {
			return fmt.Errorf("preparing the env from secrets: %w", err)
		}
		if err := r.writeLaunch(&inst, c); err != nil {
			return fmt.Errorf("writing the process for the launcher: %w", err)
		}
		r.mark("launch")
	}
	if err := r.bindSubPaths(&inst, c.spec); err != nil {
		return err
	}
	lw := r.a.logWriterFor(r.a.logPath(r.uid, c.spec.Name), logLimitsOf(inst.Spec.Resources))
	logs, created := r.a.logCreator(r.uid, c.spec.Name, lw, "")
	task, err := c.c.NewTask(ctx, logs)
	created()
	if err != nil {
		if launched(&c.spec) {
			r.clearLaunch(c)
		}
		return fmt.Errorf("creating task: %w", err)
	}
	r.mark("task-create")
	if err := resetNice(task.Pid()); err != nil {
		r.a.log.Warn("the instance's process keeps the daemon's CPU priority", "uid", r.uid, "container", c.spec.Name, "err", err)
	}
	statusC, err := task.Wait(ctx)
	if err != nil {
		_, _ = task.Delete(ctx, containerd.WithProcessKill)
		return err
	}
	r.mark("task-wait")
	if err := task.Start(ctx); err != nil {
		_, _ = task.Delete(ctx, containerd.WithProcessKill)
		if launched(&c.spec) {
			r.clearLaunch(c)
		}
		return fmt.Errorf("starting task: %w", err)
	}
	r.mark("task-start")
	c.task = task
	c.generation++
	c.oomKills = r.a.oomKills(r.uid, c.spec.Name)
	go r.waitTask(ctx, c.spec.Name, c.generation, task, statusC)
	now := time.Now().UTC()
	c.status.State = api.ContainerRunning
	c.status.Reason = ""
	c.status.ExitCode = nil
	c.status.Message = ""
	c.status.StartedAt = &now
	c.status.FinishedAt = nil
	c.status.PID = int(task.Pid())
	c.status.Ready = false // until startProbes says otherwise
	c.postStartDue = hook(c, postStart) != nil
	r.event("Normal", "Started", "started container %s", c.spec.Name)
	return nil
}

// waitTask forwards a task's exit to the runner. If containerd goes away
// (it is restarted under us) the wait is re-established; shims keep the
// container and its exit status meanwhile.
func (r *runner) waitTask(ctx context.Context, name string, gen int, task containerd.Task, statusC <-chan containerd.ExitStatus) {
	for {
		select {
		case <-ctx.Done():
			return
		case st := <-statusC:
			if st.Error() == nil {
				select {
				case r.exits <- exit{container: name, generation: gen, code: int(st.ExitCode()), at: st.ExitTime()}:
				case <-ctx.Done():
				}
				return
			}
			r.log.Debug("waiting on task failed; retrying", "container", name, "err", st.Error())
		}
		for {
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
			var err error
			statusC, err = task.Wait(ctx)
			if err == nil {
				break
			}
			if cerrdefs.IsNotFound(err) {
				select {
				case r.exits <- exit{container: name, generation: gen, code: 255, at: time.Now()}:
				case <-ctx.Done():
				}
				return
			}
		}
	}
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

func (r *runner) handleDeadlines(ctx context.Context) {
	now := time.Now()
	nctx := r.tctx(ctx)
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
	if !r.killAt.IsZero() && !now.Before(r.killAt) {
		r.killAt = time.Time{}
		for _, c := range r.all() {
			// A container whose preStop hook just ended keeps its last
			// moment (c.killAt, handleHook).
			if c.status.State == api.ContainerRunning && c.task != nil && !c.killAt.After(now) {
				r.killNow(ctx, c, "did not stop in time")
			}
		}
	}
	for _, c := range r.ctrs {
		if !c.killAt.IsZero() && !now.Before(c.killAt) {
			c.killAt = time.Time{}
			if c.status.State == api.ContainerRunning && c.task != nil {
				r.killNow(ctx, c, "did not stop in time after it was killed")
			}
		}
	}
	for _, c := range r.all() {
		if c.restartAt.IsZero() || now.Before(c.restartAt) {
			continue
		}
		c.restartAt = time.Time{}
		if r.stopping {
			continue
		}
		c.status.RestartCount++
		if err := r.renewNetwork(ctx); err != nil {
			r.event("Warning", "RestartFailed", "renewing the network of container %s: %v", c.spec.Name, err)
			r.scheduleRestart(c)
			continue
		}
		if err := r.restartTask(nctx, c); err != nil {
			r.event("Warning", "RestartFailed", "restarting container %s: %v", c.spec.Name, err)
			r.scheduleRestart(c)
			continue
		}
		r.startProbes(ctx, c, false)
	}
}

// killNow sends c SIGKILL at the end of its grace period, unless its
// preStop hook is still running: that hook is cut short, and the
// container gets its stop signal and a last preStopMinGrace, as from
// the kubelet.
func (r *runner) killNow(ctx context.Context, c *ctr, why string) {
	if c.hookRunning == preStop {
		r.event("Warning", "FailedPreStopHook", "PreStop hook %s of container %s did not end within the grace period", model.HookDescription(hook(c, preStop)), c.spec.Name)
		r.cancelHook(c)
		r.signalStop(ctx, c)
		c.killAt = time.Now().Add(preStopMinGrace)
		return
	}
	r.event("Normal", "Killing", "container %s %s: sending SIGKILL", c.spec.Name, why)
	_ = c.task.Kill(r.tctx(ctx), syscall.SIGKILL)
}

// renewNetwork sets the sandbox's network up again before a restart, for
// runtimes whose own network stack took the namespace's addresses with it
// when the previous sandbox exited (gVisor's netstack).
func (r *runner) renewNetwork(ctx context.Context) error {
	inst, _ := r.snapshot()
	class, ok := r.a.cfg.Classes[inst.Spec.Runtime]
	if !ok || !class.ExclusiveNetns || len(inst.Spec.Containers)+len(inst.Spec.InitContainers) > 1 {
		return nil
	}
	// The same id again, pooled or not: a fresh attachment under the id
	// the instance has recorded.
	id := r.a.netID(r.uid)
	if err := r.a.cfg.Network.Teardown(ctx, id, ports(inst.Spec)); err != nil {
		return err
	}
	limits, err := netLimits(inst.Spec.Resources)
	if err != nil {
		return err
	}
	att, err := r.a.cfg.Network.Setup(ctx, id, ports(inst.Spec), limits)
	if err != nil {
		return err
	}
	if err := r.a.cfg.Network.Assign(ctx, id, r.tenant); err != nil {
		return err
	}
	r.ip = att.IP
	return writeHosts(r.a.sandboxDir(r.uid), &inst.Spec, hostnameOf(&inst), att.IP)
}

func (r *runner) scheduleRestart(c *ctr) {
	ran := time.Duration(0)
	if c.status.StartedAt != nil && c.status.FinishedAt != nil {
		ran = c.status.FinishedAt.Sub(*c.status.StartedAt)
	}
	switch {
	case c.backoff == 0 || ran >= restartBackoffReset:
		c.backoff = restartBackoffMin
	default:
		c.backoff = min(c.backoff*2, restartBackoffMax)
	}
	c.restartAt = time.Now().Add(c.backoff)
	c.status.State = api.ContainerTerminated
}

// handleExit records a container's exit and schedules its restart if the
// restart policy asks for one; the exit of an init container that
// completed starts what comes next, whose failure it returns.
func (r *runner) handleExit(ctx context.Context, ex exit) error {
	var c *ctr
	for _, cc := range r.all() {
		if cc.spec.Name == ex.container {
			c = cc
		}
	}
	if c == nil || ex.generation != c.generation {
		return nil // a stale exit of a task already replaced
	}
	inst, _ := r.snapshot()
	code := ex.code
	at := ex.at.UTC()
	if at.IsZero() || at.Year() < 2000 {
		at = time.Now().UTC()
	}
	r.stopProbes(c)
	r.cancelHook(c)
	c.postStartDue = false
	c.killAt = time.Time{}
	c.status.Ready = false
	c.status.State = api.ContainerTerminated
	c.status.ExitCode = &code
	c.status.FinishedAt = &at
	c.status.PID = 0
	c.status.Message = r.a.terminationMessage(r.uid, &c.spec, code)
	switch {
	case r.stopping:
		c.status.Reason = "Stopped"
	case code == 137 && r.a.oomKills(r.uid, c.spec.Name) > c.oomKills:
		c.status.Reason = "OOMKilled"
	case code == 0:
		c.status.Reason = "Completed"
	default:
		c.status.Reason = "Error"
	}
	r.event("Normal", "Exited", "container %s exited with code %d (%s)", c.spec.Name, code, c.status.Reason)
	running := !r.stopping && !inst.StopRequested
	// An init container that completed is done for good, whatever the
	// policy: the next one (or the app containers) runs instead.
	if c.init && code == 0 {
		if !running {
			return nil
		}
		return r.initCompleted(ctx, &inst, c)
	}
	if running && model.WillRestart(inst.Spec.RestartPolicy, code) {
		r.scheduleRestart(c)
		r.event("Normal", "BackOff", "restarting container %s in %s (restart policy %s)", c.spec.Name, c.backoff, inst.Spec.RestartPolicy)
	} else if c.init && running {
		r.event("Warning", "InitFailed", "init container %s failed with code %d: the app containers do not start (restart policy %s)", c.spec.Name, code, inst.Spec.RestartPolicy)
	}
	return nil
}

// stop runs each running container's preStop hook, then sends it its
// image's stop signal (SIGTERM unless the image's STOPSIGNAL says
// otherwise), and SIGKILL after grace.
func (r *runner) stop(ctx context.Context, gracePtr *int) {
	r.stopping = true
	inst, _ := r.snapshot()
	grace := model.StopGrace(&inst.Spec)
	if gracePtr != nil {
		grace = *gracePtr
	}
	for _, c := range r.all() {
		c.restartAt = time.Time{}
		// A stopping container is not ready, and no probe kills it.
		r.stopProbes(c)
		c.status.Ready = false
		if c.status.State == api.ContainerRunning && c.task != nil {
			r.stopContainer(ctx, c, time.Duration(grace)*time.Second)
		}
	}
	if !r.initDone {
		// Stopped while initialising: what has not run will not, and
		// ends without having run, so the instance ends too.
		for _, c := range r.all() {
			if c.status.State == api.ContainerWaiting {
				c.status.State = api.ContainerTerminated
				c.status.Reason = "Stopped"
			}
		}
	}
	r.killAt = time.Now().Add(time.Duration(grace) * time.Second)
	r.event("Normal", "Stopping", "sent the stop signal (SIGTERM unless the image says otherwise); SIGKILL in %ds", grace)
}

// fail records that the instance cannot run.
func (r *runner) fail(ctx context.Context, reason string, err error) {
	for _, c := range r.ctrs {
		if c.status.State != api.ContainerRunning {
			c.status.State = api.ContainerTerminated
			c.status.Reason = reason
			c.status.Ready = false
		}
	}
	for _, c := range r.inits {
		if c.status.State == api.ContainerWaiting { // a completed one stays so
			c.status.State = api.ContainerTerminated
			c.status.Reason = reason
		}
	}
	r.failure = &api.InstanceStatus{Reason: reason, Message: err.Error()}
	r.publish(ctx, api.PhaseFailed)
}

// waitForDelete parks a finished runner until the instance is deleted.
func (r *runner) waitForDelete(ctx context.Context) {
	r.waitPublished()
	if inst, gone := r.snapshot(); !gone && autoRemoveDue(&inst) {
		r.teardown(ctx, true)
		return
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.notify:
			inst, gone := r.snapshot()
			if gone || inst.DeletionRequested || autoRemoveDue(&inst) {
				r.teardown(ctx, !gone)
				return
			}
		}
	}
}

// autoRemoveDue reports an instance that ended and asked to be removed
// then (docker run --rm). The host removes it as it does a deleted one:
// the API records no deletion request, which hosts may not write.
func autoRemoveDue(inst *api.Instance) bool {
	return inst.Spec.AutoRemove && inst.Status.Phase.Terminal()
}

// publish writes the runner's view into the store. force sets the phase
// instead of deriving it. It reports whether the write landed (or found
// the record gone).
func (r *runner) publish(ctx context.Context, force api.Phase) bool {
	r.waitPublished()
	w := r.statusWrite(force)
	if !r.writeStatus(ctx, w) {
		r.events = append(w.events, r.events...)
		return false
	}
	return true
}

// publishAsync starts writing the runner's view, with the phase forced,
// while the runner goes on; the next publish waits for it first, so that
// writes land in order and the record never goes back to an older phase.
// It serves the Creating write, which would otherwise hold up every
// start for an etcd round trip before anything is made.
func (r *runner) publishAsync(ctx context.Context, force api.Phase) {
	r.waitPublished()
	w := r.statusWrite(force)
	done := make(chan struct{})
	r.pending = done
	go func() {
		defer close(done)
		if !r.writeStatus(ctx, w) && len(w.events) > 0 {
			r.log.Warn("events lost with a failed status write", "events", len(w.events))
		}
	}()
}

// setWritten makes the version this runner just wrote its latest, under
// r.mu. The write's answer may come after the watch delivered a newer
// version (the stream and the write are separate requests, over the host
// link separate connections): a stop or delete asked meanwhile must not be
// lost under the written version, or the runner would never act on it.
// Those requests only ever turn on, so they are carried over; it reports
// whether it carried one, so that the loop looks again.
func (r *runner) setWritten(written *api.Instance) bool {
	cur := r.latest
	w := *written
	carried := false
	if cur != nil && cur.UID == w.UID {
		if cur.DeletionRequested && !w.DeletionRequested {
			w.DeletionRequested, carried = true, true
		}
		if cur.StopRequested && !w.StopRequested {
			w.StopRequested, carried = true, true
		}
		if g := cur.StopGraceSeconds; g != nil && (w.StopGraceSeconds == nil || *g < *w.StopGraceSeconds) {
			w.StopGraceSeconds, carried = g, true
		}
	}
	r.latest = &w
	return carried
}

// waitPublished waits for an asynchronous status write to finish.
func (r *runner) waitPublished() {
	if r.pending != nil {
		<-r.pending
		r.pending = nil
	}
}

// statusUpdate is the runner's view at one moment, ready to be written.
type statusUpdate struct {
	force    api.Phase
	events   []api.Event
	statuses []api.ContainerStatus
	ip       string
	stopping bool
	failure  *api.InstanceStatus
	hold     *api.InstanceStatus
	inits    []api.ContainerStatus
	devices  []string
}

// statusWrite takes the runner's view (and its pending events) for a write.
func (r *runner) statusWrite(force api.Phase) statusUpdate {
	if force == "" {
		force = r.terminal
	}
	w := statusUpdate{force: force, events: r.events, ip: r.ip, stopping: r.stopping, failure: r.failure, hold: r.hold, devices: r.devices}
	r.events = nil
	w.statuses = make([]api.ContainerStatus, len(r.ctrs))
	for i, c := range r.ctrs {
		w.statuses[i] = c.status
	}
	w.inits = r.initStatuses()
	return w
}

// writeStatus writes w into the store. It returns false when the write
// failed and should be retried with the next one (its events included).
// It touches only the runner's mutex-guarded state, so it may run beside
// the runner.
func (r *runner) writeStatus(ctx context.Context, w statusUpdate) bool {
	var phase api.Phase
	var unchanged *api.Instance
	updated, err := r.a.cfg.Store.UpdateInstance(r.tctx(ctx), r.name, func(inst *api.Instance) error {
		if inst.UID != r.uid || inst.Status.Host != r.a.cfg.HostName {
			// Replaced, or assigned to another host: the record is no
			// longer this runner's to write.
			return errInstanceGone
		}
		before, _ := json.Marshal(inst.Status)
		wasTerminal := inst.Status.Phase.Terminal()
		w.apply(inst, &phase)
		if phase.Terminal() && !wasTerminal && inst.Spec.AutoRemove {
			inst.Status.Events = model.AppendEvent(inst.Status.Events, api.Event{Time: time.Now().UTC(), Type: "Normal",
				Reason: "AutoRemove", Message: "the instance ended and autoRemove is set: removing it"})
		}
		// Writing the record as it is would only wake every watcher, this
		// runner included (its own write comes back as a watch event and
		// a notify, after which the loop publishes again): each running
		// instance would rewrite its record over and over.
		if after, _ := json.Marshal(inst.Status); bytes.Equal(before, after) {
			unchanged = inst
			return errUnchanged
		}
		return nil
	})
	if unchanged != nil && errors.Is(err, errUnchanged) {
		updated, err = unchanged, nil
	}
	switch {
	case err == nil:
		// No notify: this is the runner's own view; a change anyone else
		// made meanwhile (stop, delete) arrives through the watch.
		r.mu.Lock()
		renotify := false
		if !r.gone {
			renotify = r.setWritten(updated)
		}
		r.mu.Unlock()
		if renotify {
			select {
			case r.notify <- struct{}{}:
			default:
			}
		}
		r.setPhase(phase)
		if autoRemoveDue(updated) {
			// This write ended an autoRemove instance: remove it without
			// waiting for the watch to bring the write back.
			select {
			case r.notify <- struct{}{}:
			default:
			}
		}
	case errors.Is(err, errInstanceGone), errors.Is(err, errdefs.ErrNotFound):
		r.mu.Lock()
		r.gone = true
		r.mu.Unlock()
		select {
		case r.notify <- struct{}{}:
		default:
		}
	default:
		if ctx.Err() == nil {
			r.log.Warn("publishing status failed", "err", err)
			return false
		}
	}
	return true
}

// errUnchanged ends an update that would write the record as it is.
var errUnchanged = errors.New("status unchanged")

// apply writes the update into inst's status and reports the phase.
func (w statusUpdate) apply(inst *api.Instance, phase *api.Phase) {
	st := &inst.Status
	st.Containers = w.statuses
	st.InitContainers = w.inits
	st.IP = w.ip
	st.Devices = w.devices
	stopped := inst.StopRequested || w.stopping
	*phase = w.force
	if *phase == "" {
		*phase = model.DeriveInstancePhase(inst.Spec.RestartPolicy, stopped, w.inits, w.statuses)
	}
	now := time.Now().UTC()
	if *phase == api.PhaseRunning && st.StartedAt == nil {
		st.StartedAt = &now
	}
	if phase.Terminal() && st.FinishedAt == nil {
		st.FinishedAt = &now
	}
	st.Phase = *phase
	st.Conditions = readyCondition(*phase, w.statuses, st.Conditions, now)
	st.Reason, st.Message = "", ""
	if w.failure != nil {
		st.Reason, st.Message = w.failure.Reason, w.failure.Message
	} else if w.hold != nil {
		st.Reason, st.Message = w.hold.Reason, w.hold.Message
	} else if reason, msg := model.InitReason(inst.Spec.RestartPolicy, stopped, w.inits); reason != "" {
		st.Reason, st.Message = reason, msg
	} else if *phase == api.PhaseFailed {
		for _, c := range w.statuses {
			if c.ExitCode != nil && *c.ExitCode != 0 {
				st.Reason = c.Reason
				st.Message = fmt.Sprintf("container %s exited with code %d", c.Name, *c.ExitCode)
				break
			}
		}
	}
	for _, e := range w.events {
		st.Events = model.AppendEvent(st.Events, e)
	}
}

// teardown kills and removes everything of the instance on this host;
// with deleteRecord it then removes the instance from the store. It keeps
// trying until everything is gone (or the agent stops): the record is
// removed last, so a failure never hides a leaked container.
func (r *runner) teardown(ctx context.Context, deleteRecord bool) {
	r.stopAllProbes()
	if r.stopFiles != nil {
		r.stopFiles()
	}
	// The run ends now, read while the cgroup is still there.
	r.a.meter.end(ctx, r.uid, time.Now())
	for delay := 500 * time.Millisecond; ; delay = min(delay*2, 30*time.Second) {
		err := r.teardownOnce(ctx)
		if err == nil {
			break
		}
		r.log.Warn("teardown incomplete; retrying", "err", err, "in", delay)
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
	}
	r.setPhase(api.PhaseSucceeded) // wakes log followers
	// The final usage record goes before the instance's record: a host
	// may report only instances placed on it.
	r.a.meter.finish(ctx, r.uid, time.Now())
	if deleteRecord {
		err := r.a.cfg.Store.DeleteInstance(tenant.WithName(ctx, r.tenant), r.name)
		if err != nil && !errors.Is(err, errdefs.ErrNotFound) {
			r.log.Warn("deleting the instance record failed", "err", err)
			return
		}
	}
	r.log.Info("instance removed")
}

func (r *runner) teardownOnce(ctx context.Context) error {
	nctx := r.tctx(ctx)
	inst, _ := r.snapshot()
	netID := r.a.netID(r.uid)
	var errs []error
	for _, cs := range model.AllContainers(&inst.Spec) {
		c, err := r.a.cfg.Client.LoadContainer(nctx, r.a.ctrID(r.uid, cs.Spec.Name))
		if err == nil {
			err = r.a.removeContainer(nctx, c)
		} else if cerrdefs.IsNotFound(err) {
			err = nil
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		// Keep the sandbox while containers may still use it.
		return errors.Join(errs...)
	}
	// Once no container has them: the data stays on the persistent
	// volumes, the emptyDirs go (the sub-path binds into them first).
	if err := r.a.unmountSubPaths(r.uid); err != nil {
		return fmt.Errorf("unmounting the sub-path binds: %w", err)
	}
	if err := r.releaseVolumes(ctx, &inst); err != nil {
		return err
	}
	if err := r.a.removeVolumes(ctx, r.uid); err != nil {
		return fmt.Errorf("removing the emptyDirs: %w", err)
	}
	ip := r.ip
	if ip == "" {
		ip = inst.Status.IP
	}
	// Before the DEL releases the address (afterwards it may already
	// belong to someone else), and before a recycled sandbox serves the
	// tenant's next instance.
	flushConntrack(ip)
	if !r.recycleSandbox(inst) {
		if err := r.a.cfg.Network.Teardown(ctx, r.a.netID(r.uid), ports(inst.Spec)); err != nil {
			return fmt.Errorf("network teardown: %w", err)
		}
	}
	r.a.netIDs.Delete(r.uid)
	r.a.removeCgroupNamed(r.uid)
	if strings.HasPrefix(netID, warm.Prefix) {
		r.a.removeCgroupNamed(netID) // the claimed warm container's
		_ = os.RemoveAll(r.a.logFIFODir(netID))
	}
	r.a.cpus.release(r.uid)
	r.a.releaseDevices(r.uid)
	r.a.removeFiles(r.uid)
	return nil
}

// recycleSandbox hands the instance's pooled network sandbox back to the
// pool for the tenant's next instance, instead of destroying it, when it
// can: its containers are deleted (teardownOnce removed them), the
// conntrack entries of its address are flushed, and the runtime leaves
// the namespace as it found it (not gVisor, whose netstack takes the
// addresses). The instance's record of the sandbox goes first, so that an
// agent dying in between leaves an unclaimed pool id, which the next one
// destroys.
func (r *runner) recycleSandbox(inst api.Instance) bool {
	p := r.a.cfg.Pool
	id := r.a.netID(r.uid)
	if p == nil || r.att == nil || !pool.IsPoolID(id) || r.att.IP != r.ip {
		return false
	}
	if class, ok := r.a.cfg.Classes[inst.Spec.Runtime]; !ok || class.ExclusiveNetns {
		return false
	}
	if limits, err := netLimits(inst.Spec.Resources); err != nil || !poolable(inst.Spec, limits) {
		return false
	}
	if err := os.Remove(r.a.netIDFile(r.uid)); err != nil && !os.IsNotExist(err) {
		r.log.Warn("unrecording the pooled sandbox failed; destroying it", "sandbox", id, "err", err)
		return false
	}
	if !p.Recycle(r.tenant, pool.Sandbox{ID: id, Attachment: *r.att}) {
		return false
	}
	r.log.Debug("recycled the network sandbox for the tenant", "sandbox", id, "ip", r.ip)
	return true
}

// removeContainer kills a container's task and deletes it with its
// snapshot, and the filesystem under its writable layer in between.
func (a *Agent) removeContainer(ctx context.Context, c containerd.Container) error {
	if task, err := c.Task(ctx, nil); err == nil {
		if err := deleteTask(ctx, task); err != nil {
			return fmt.Errorf("deleting the task of %s: %w", c.ID(), err)
		}
	} else if !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("loading the task of %s: %w", c.ID(), err)
	}
	if err := a.removeWritableLayer(ctx, c); err != nil {
		return fmt.Errorf("removing the writable layer's filesystem of %s: %w", c.ID(), err)
	}
	if err := c.Delete(ctx, containerd.WithSnapshotCleanup); err != nil && !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("deleting container %s: %w", c.ID(), err)
	}
	return nil
}

// deleteTask kills a task if it still runs, waits for it to stop and
// deletes it. A stopped task is deleted without another kill: runsc answers
// a kill of an exited sandbox with an error the shim does not treat as
// "already gone", which makes WithProcessKill fail.
func deleteTask(ctx context.Context, task containerd.Task) error {
	st, err := task.Status(ctx)
	if err != nil && !cerrdefs.IsNotFound(err) {
		return err
	}
	if err == nil && st.Status != containerd.Stopped {
		statusC, werr := task.Wait(ctx)
		if err := task.Kill(ctx, syscall.SIGKILL, containerd.WithKillAll); err != nil && !cerrdefs.IsNotFound(err) {
			slog.Debug("SIGKILL failed", "task", task.ID(), "err", err)
		}
		if werr == nil {
			select {
			case <-statusC:
			case <-time.After(10 * time.Second):
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
	if _, err := task.Delete(ctx); err != nil && !cerrdefs.IsNotFound(err) {
		// Last resort for a task that did not stop.
		if _, err2 := task.Delete(ctx, containerd.WithProcessKill); err2 != nil && !cerrdefs.IsNotFound(err2) {
			return err
		}
	}
	return nil
}
