package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/internal/agent/network"
	"github.com/kanga-run/kanga/internal/agent/steps"
)

// The start of an instance is a list of named steps (package steps), run
// in order; when one fails, those done are undone in reverse order and
// the error names the step. Each step undoes only what it acquired in
// this run: one that finds its part already in place (an instance adopted
// after an agent restart) returns no undo, so a failure never takes apart
// what a previous agent left running. When the agent stops mid-start,
// nothing is undone: the next agent adopts the instance where it stands.
//
// A new stage of the start (volumes, devices) is one type with a Do and
// its undo, and one line in startSteps.

// startSteps are the steps that start inst the usual way, or adopt what an
// earlier agent started of it.
func (r *runner) startSteps(inst *api.Instance) []steps.Step {
	return []steps.Step{
		&networkStep{r: r, inst: inst},
		&cgroupStep{r: r, inst: inst},
		&filesStep{r: r, inst: inst},
		// Volumes (and devices) after the files, before the containers
		// whose specs mount them: emptyDirs, then persistent volumes.
		&volumesStep{r: r, inst: inst},
		&pvolumesStep{r: r, inst: inst},
		&devicesStep{r: r, inst: inst},
		&containersStep{r: r, inst: inst},
		&tasksStep{r: r, inst: inst},
	}
}

// warmSteps are the steps that start inst in warm container w instead:
// the claim gives it a network, cgroup, files, container and running task
// all at once.
func (r *runner) warmSteps(inst *api.Instance, w *warmCtr) []steps.Step {
	return []steps.Step{&warmClaimStep{r: r, inst: inst, w: w}}
}

// stepRunner runs the runner's steps.
func (r *runner) stepRunner() steps.Runner {
	return steps.Runner{Log: r.log, KeepOnCancel: true}
}

// start prepares the sandbox and starts or adopts every container.
func (r *runner) start(ctx context.Context, inst *api.Instance) error {
	prof := newStartProfile(inst.CreatedAt)
	r.prof = prof
	defer func() { r.prof = nil }()
	if inst.Status.Phase == api.PhasePending {
		r.publishAsync(ctx, api.PhaseCreating)
	}
	prof.step("creating-status")
	if w := r.takeWarm(r.tctx(ctx), inst); w != nil {
		if err := r.stepRunner().Run(ctx, r.warmSteps(inst, w)...); err != nil {
			if ce := (*errConfig)(nil); errors.As(err, &ce) {
				return err // the usual way would make the same spec
			}
			r.log.Warn("claiming a warm container failed; starting the usual way", "err", err)
		} else {
			r.startAllProbes(ctx)
			r.publish(ctx, "")
			prof.step("running-status")
			r.log.Info("instance started", append(prof.attrs(), "warm", w.id)...)
			r.observeStart(prof, true)
			if err := r.finishClaim(r.tctx(ctx), inst, r.ctrs[0]); err != nil {
				r.log.Warn("recording the spec of the claimed warm container failed; retried before a restart", "err", err)
			}
			return nil
		}
	}
	if err := r.stepRunner().Run(ctx, r.startSteps(inst)...); err != nil {
		return err
	}
	r.startAllProbes(ctx)
	r.publish(ctx, "")
	prof.step("running-status")
	r.log.Info("instance started", prof.attrs()...)
	r.observeStart(prof, false)
	return nil
}

// fresh tells whether this run of the agent sets the instance up from
// nothing: it is Pending, so no earlier agent got as far as Creating.
// Only then do the steps undo what they made.
func fresh(inst *api.Instance) bool { return inst.Status.Phase == api.PhasePending }

// networkStep gives the instance its network sandbox: the one it has
// (after an agent restart), a pooled one, or a new one; with the
// tenant's rules and the sandbox's sysctls applied.
type networkStep struct {
	r    *runner
	inst *api.Instance
}

func (s *networkStep) Name() string { return "network" }

func (s *networkStep) Do(ctx context.Context) (steps.Undo, error) {
	r, inst := s.r, s.inst
	att, err := r.attach(ctx, inst, netLimits(r.res))
	if err != nil {
		return nil, fmt.Errorf("setting up the network sandbox: %w", err)
	}
	var undo steps.Undo
	if fresh(inst) {
		id := r.a.netID(r.uid)
		undo = func(ctx context.Context) error { return r.detach(ctx, inst, id) }
	}
	fail := func(err error) (steps.Undo, error) {
		if undo != nil && ctx.Err() == nil {
			if uerr := undo(context.WithoutCancel(ctx)); uerr != nil {
				r.log.Warn("removing the network sandbox of a failed start failed", "err", uerr)
			}
		}
		return nil, err
	}
	// Before any process runs in it: a pooled sandbox, a fresh one and one
	// an earlier agent set up all get the tenant's rules here.
	if err := r.a.cfg.Network.Assign(ctx, r.a.netID(r.uid), r.tenant); err != nil {
		return fail(fmt.Errorf("applying the tenant's network rules: %w", err))
	}
	if err := setNetnsSysctls(att.NetNS); err != nil {
		return fail(fmt.Errorf("setting up the network sandbox: %w", err))
	}
	r.ip = att.IP
	r.att = att
	r.mark("network")
	return undo, nil
}

// attach gives the instance its network: the attachment it already has
// (after an agent restart), a ready one from the pool, or a new one set up
// under its own id.
func (r *runner) attach(ctx context.Context, inst *api.Instance, limits network.Limits) (*network.Attachment, error) {
	nw := r.a.cfg.Network
	if id := r.a.readNetID(r.uid); id != "" {
		// A pooled sandbox recorded as ours: Setup returns it as it is.
		r.a.netIDs.Store(r.uid, id)
		return nw.Setup(ctx, id, ports(inst.Spec), limits)
	}
	if p := r.a.cfg.Pool; p != nil && poolable(inst.Spec, limits) {
		sb, ok := p.Take(r.tenant)
		countTake(poolTakes, ok)
		if ok {
			// Recorded before use, so that teardown (by this agent or the
			// next) destroys this sandbox; if the agent dies before the
			// record exists, the orphan cleanup destroys it as unclaimed.
			if err := r.a.writeNetID(r.uid, sb.ID); err != nil {
				r.log.Warn("recording the pooled sandbox failed; setting up a new one", "sandbox", sb.ID, "err", err)
				if err := nw.Teardown(ctx, sb.ID, nil); err != nil {
					r.log.Warn("destroying the pooled sandbox failed", "sandbox", sb.ID, "err", err)
				}
			} else {
				r.a.netIDs.Store(r.uid, sb.ID)
				r.log.Debug("using a pooled network sandbox", "sandbox", sb.ID, "ip", sb.IP)
				att := sb.Attachment
				return &att, nil
			}
		}
	}
	r.a.netIDs.Store(r.uid, r.uid)
	return nw.Setup(ctx, r.uid, ports(inst.Spec), limits)
}

// detach destroys the network sandbox id of a start that failed, as
// teardown would (a pooled one is not recycled: nothing vouches for its
// state), and forgets it.
func (r *runner) detach(ctx context.Context, inst *api.Instance, id string) error {
	if r.ip != "" {
		flushConntrack(r.ip)
	}
	if err := r.a.cfg.Network.Teardown(ctx, id, ports(inst.Spec)); err != nil {
		return err
	}
	if err := os.Remove(r.a.netIDFile(r.uid)); err != nil && !os.IsNotExist(err) {
		return err
	}
	r.a.netIDs.Delete(r.uid)
	r.ip, r.att = "", nil
	return nil
}

// cgroupStep creates (or updates) the instance cgroup with its limits.
type cgroupStep struct {
	r    *runner
	inst *api.Instance
}

func (s *cgroupStep) Name() string { return "cgroup" }

func (s *cgroupStep) Do(ctx context.Context) (steps.Undo, error) {
	r := s.r
	if err := r.a.createCgroup(ctx, r.tenant, r.uid, r.res); err != nil {
		return nil, fmt.Errorf("creating the instance cgroup: %w", err)
	}
	r.mark("cgroup")
	if !fresh(s.inst) {
		return nil, nil
	}
	return func(context.Context) error {
		r.a.removeCgroupNamed(r.uid)
		return nil
	}, nil
}

// filesStep writes the /etc files the instance's containers share.
type filesStep struct {
	r    *runner
	inst *api.Instance
}

func (s *filesStep) Name() string { return "files" }

func (s *filesStep) Do(ctx context.Context) (steps.Undo, error) {
	r := s.r
	dir := r.a.sandboxDir(r.uid)
	if err := writeHosts(dir, &s.inst.Spec, hostnameOf(s.inst), r.ip); err != nil {
		return nil, err
	}
	// The secret and config volumes (on a tmpfs of their own) and the env
	// from secrets, from the control plane (files.go).
	mountedFiles, err := r.setupFiles(ctx, s.inst)
	if err != nil {
		if fresh(s.inst) {
			if rerr := s.removeEtc(dir); rerr != nil {
				r.log.Warn("removing the /etc files of a failed start failed", "err", rerr)
			}
		}
		return nil, err
	}
	termDir := r.a.terminationDir(r.uid)
	if _, err := setupTermination(termDir, terminationContainers(&s.inst.Spec)); err != nil {
		if fresh(s.inst) {
			_ = unmountFiles(r.a.filesDir(r.uid))
			if rerr := s.removeEtc(dir); rerr != nil {
				r.log.Warn("removing the /etc files of a failed start failed", "err", rerr)
			}
		}
		return nil, err
	}
	r.mark("files")
	if !fresh(s.inst) {
		if mountedFiles {
			// Mounted again for containers an earlier agent made (the host
			// rebooted): not this run's to take apart on a failure.
			r.log.Info("mounted the secret and config files again")
		}
		return nil, nil
	}
	return func(context.Context) error {
		return errors.Join(unmountFiles(r.a.filesDir(r.uid)), unmountFiles(termDir), s.removeEtc(dir))
	}, nil
}

// removeEtc removes the /etc files. Only the files: the sandbox dir also
// holds the records teardown reads (netns-id, ctr-*).
func (s *filesStep) removeEtc(dir string) error {
	var errs []error
	for _, f := range []string{"hosts", "hostname", "resolv.conf"} {
		if err := os.Remove(filepath.Join(dir, f)); err != nil && !os.IsNotExist(err) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// containersStep creates the instance's containerd containers, or loads
// those an earlier agent created.
type containersStep struct {
	r    *runner
	inst *api.Instance
}

func (s *containersStep) Name() string { return "containers" }

func (s *containersStep) Do(ctx context.Context) (steps.Undo, error) {
	r := s.r
	nctx := r.tctx(ctx)
	var made []*ctr
	undo := func(ctx context.Context) error {
		var errs []error
		for i := len(made) - 1; i >= 0; i-- {
			c := made[i]
			if err := r.a.removeContainer(r.tctx(ctx), c.c); err != nil {
				errs = append(errs, err)
				continue
			}
			c.c, c.fresh = nil, false
		}
		return errors.Join(errs...)
	}
	// Init containers are made with the others: they run in the same
	// sandbox, and the app containers' start after them is then only a task.
	for _, c := range r.all() {
		if err := r.ensureContainer(nctx, s.inst, r.att.NetNS, c); err != nil {
			if ctx.Err() == nil {
				if uerr := undo(context.WithoutCancel(ctx)); uerr != nil {
					r.log.Warn("removing the containers of a failed start failed", "err", uerr)
				}
			}
			return nil, fmt.Errorf("container %s: %w", c.spec.Name, err)
		}
		if c.fresh {
			made = append(made, c)
		}
	}
	r.mark("containers-rest")
	if len(made) == 0 {
		return nil, nil
	}
	return undo, nil
}

// tasksStep starts a task in every container, or adopts the one an
// earlier agent left running; while init containers have not completed,
// only in the first of those that has not (initcontainers.go).
type tasksStep struct {
	r    *runner
	inst *api.Instance
}

func (s *tasksStep) Name() string { return "tasks" }

func (s *tasksStep) Do(ctx context.Context) (steps.Undo, error) {
	r := s.r
	nctx := r.tctx(ctx)
	var started []*ctr
	undo := func(ctx context.Context) error {
		var errs []error
		for i := len(started) - 1; i >= 0; i-- {
			if err := r.unstart(r.tctx(ctx), started[i]); err != nil {
				errs = append(errs, err)
			}
		}
		return errors.Join(errs...)
	}
	if !r.initDone && !fresh(s.inst) && r.appsStarted(nctx) {
		r.initDone = true
	}
	started, err := r.startNext(nctx, s.inst)
	if err != nil {
		if ctx.Err() == nil {
			if uerr := undo(context.WithoutCancel(ctx)); uerr != nil {
				r.log.Warn("stopping the tasks of a failed start failed", "err", uerr)
			}
		}
		return nil, err
	}
	r.mark("tasks-rest")
	if len(started) == 0 {
		return nil, nil
	}
	return undo, nil
}

// unstart kills and deletes the task a failed start started in c; its
// exit, if the waiter reports one, is stale (a new generation).
func (r *runner) unstart(ctx context.Context, c *ctr) error {
	if c.task == nil {
		return nil
	}
	if err := deleteTask(ctx, c.task); err != nil {
		return fmt.Errorf("deleting the task of %s: %w", c.spec.Name, err)
	}
	r.stopProbes(c)
	c.task = nil
	c.generation++
	c.status.State = api.ContainerWaiting
	c.status.PID = 0
	c.status.Ready = false
	return nil
}

// warmClaimStep starts the instance in a warm container: the claim moves
// the warm container's sandbox, network, cgroup and log to the instance
// and hands its holder the instance's process. A failed claim destroys
// the warm container and everything it had moved (claimWarm), so the
// usual steps can start over from nothing.
type warmClaimStep struct {
	r    *runner
	inst *api.Instance
	w    *warmCtr
}

func (s *warmClaimStep) Name() string { return "warm-claim" }

func (s *warmClaimStep) Do(ctx context.Context) (steps.Undo, error) {
	r, c := s.r, s.r.ctrs[0]
	if err := r.claimWarm(ctx, s.inst, c, s.w); err != nil {
		return nil, err
	}
	r.mark("warm-claim")
	return func(ctx context.Context) error {
		c.generation++ // the waiter's exit is stale
		c.c, c.task = nil, nil
		c.status.State = api.ContainerWaiting
		c.status.PID = 0
		r.ip, r.att = "", nil
		r.undoClaim(ctx, s.w)
		return nil
	}, nil
}
