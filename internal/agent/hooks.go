package agent

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"time"

	"github.com/containerd/containerd"
	cerrdefs "github.com/containerd/errdefs"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/internal/agent/probe"
	"github.com/kanga-run/kanga/internal/model"
)

// preStopMinGrace is what a container whose preStop hook used up the
// stop's grace still gets between its stop signal and SIGKILL, as the
// kubelet's minimum grace period.
const preStopMinGrace = 2 * time.Second

// hookKind tells a container's two hooks apart.
type hookKind int

const (
	noHook hookKind = iota
	postStart
	preStop
)

func (k hookKind) String() string {
	if k == postStart {
		return "PostStart"
	}
	return "PreStop"
}

// hookResult is the end of a hook of one run (generation) of a
// container.
type hookResult struct {
	container  string
	generation int
	kind       hookKind
	err        error
}

// hook returns c's hook of that kind, or nil.
func hook(c *ctr, kind hookKind) *api.LifecycleHandler {
	l := c.spec.Lifecycle
	switch {
	case l == nil:
		return nil
	case kind == postStart:
		return l.PostStart
	default:
		return l.PreStop
	}
}

// runHook starts c's hook of that kind in the background, bounded by
// deadline (none if zero); its end comes back to the loop as a
// hookResult. The hook's context ends with c's run (cancelHook).
func (r *runner) runHook(ctx context.Context, c *ctr, kind hookKind, deadline time.Time) {
	h := hook(c, kind)
	run, err := r.hookFunc(ctx, c, h)
	name, gen := c.spec.Name, c.generation
	hctx, cancel := context.WithCancel(r.tctx(ctx))
	if !deadline.IsZero() {
		hctx, cancel = context.WithDeadline(r.tctx(ctx), deadline)
	}
	r.cancelHook(c)
	c.hookRunning = kind
	c.cancelHook = cancel
	go func() {
		defer cancel()
		if err == nil {
			err = run(hctx)
		}
		select {
		case r.hookResults <- hookResult{container: name, generation: gen, kind: kind, err: err}:
		case <-ctx.Done():
		}
	}()
}

// cancelHook ends c's hook in flight, whose result, if it comes, is then
// ignored.
func (r *runner) cancelHook(c *ctr) {
	if c.cancelHook != nil {
		c.cancelHook()
		c.cancelHook = nil
	}
	c.hookRunning = noHook
}

// hookFunc makes the function that runs handler h of container c: exec
// in the container's task as its process, an HTTP GET from inside the
// instance's network namespace (to the hook's address, or the
// instance's), or a sleep.
func (r *runner) hookFunc(ctx context.Context, c *ctr, h *api.LifecycleHandler) (func(context.Context) error, error) {
	switch {
	case h.Exec != nil:
		ch, err := r.execChecker(ctx, c, h.Exec.Command)
		if err != nil {
			return nil, err
		}
		return ch.Check, nil
	case h.HTTPGet != nil:
		if r.att == nil || r.att.NetNS == "" || r.ip == "" {
			return nil, fmt.Errorf("the instance has no network namespace to send the request from")
		}
		target := h.HTTPGet.Host
		if target == "" {
			target = r.ip
		}
		// The kubelet takes any response as success: a hook is a
		// notification, not a check.
		ch := &probe.HTTPChecker{Dial: probe.NetnsDialer(r.att.NetNS, target), Action: h.HTTPGet, Host: target, AnyStatus: true}
		return ch.Check, nil
	case h.Sleep != nil:
		d := time.Duration(h.Sleep.Seconds) * time.Second
		return func(ctx context.Context) error {
			t := time.NewTimer(d)
			defer t.Stop()
			select {
			case <-t.C:
				return nil
			case <-ctx.Done():
				// Cut short by the stop's grace period: not a failure of
				// the hook, whose purpose was to wait.
				return nil
			}
		}, nil
	}
	return nil, fmt.Errorf("the hook has no handler")
}

// handleHook acts on the end of a hook: after postStart, the container's
// probes start (or, if it failed, the container is stopped); after
// preStop, the container gets its stop signal.
func (r *runner) handleHook(ctx context.Context, hr hookResult) {
	c := r.ctr(hr.container)
	if c == nil || hr.generation != c.generation || c.hookRunning != hr.kind {
		return // an old run's, or cancelled
	}
	c.cancelHook = nil
	c.hookRunning = noHook
	desc := model.HookDescription(hook(c, hr.kind))
	switch hr.kind {
	case postStart:
		c.postStartDue = false
		if c.status.State != api.ContainerRunning || r.stopping {
			return
		}
		if hr.err != nil {
			r.event("Warning", "FailedPostStartHook", "PostStart hook %s of container %s failed: %v", desc, c.spec.Name, hr.err)
			r.killContainer(ctx, c, "failed its postStart hook", r.killGrace())
			return
		}
		r.startProbes(ctx, c, false)
	case preStop:
		if hr.err != nil {
			r.event("Warning", "FailedPreStopHook", "PreStop hook %s of container %s failed: %v", desc, c.spec.Name, hr.err)
		}
		if c.status.State != api.ContainerRunning || c.task == nil {
			return
		}
		r.signalStop(ctx, c)
		// However long the hook took, the process gets a moment between
		// its stop signal and SIGKILL.
		least := time.Now().Add(preStopMinGrace)
		if r.stopping && r.killAt.After(least) {
			return // the instance's SIGKILL is still ahead
		}
		if c.killAt.IsZero() || c.killAt.Before(least) {
			c.killAt = least
		}
	}
}

// stopContainer stops running container c: its preStop hook first, if
// it has one, then its stop signal. SIGKILL is the caller's to schedule;
// a hook in flight holds it back until the hook ends (handleHook).
func (r *runner) stopContainer(ctx context.Context, c *ctr, grace time.Duration) {
	if hook(c, preStop) != nil && c.hookRunning != preStop {
		r.cancelHook(c) // a postStart in flight ends here
		r.runHook(ctx, c, preStop, time.Now().Add(grace))
		return
	}
	if c.hookRunning == preStop {
		return
	}
	r.cancelHook(c)
	r.signalStop(ctx, c)
}

// signalStop sends c its image's stop signal (SIGTERM unless the image's
// STOPSIGNAL says otherwise).
func (r *runner) signalStop(ctx context.Context, c *ctr) {
	nctx := r.tctx(ctx)
	sig := syscall.SIGTERM
	if c.c != nil {
		if s, err := containerd.GetStopSignal(nctx, c.c, syscall.SIGTERM); err == nil {
			sig = s
		}
	}
	if err := c.task.Kill(nctx, sig); err != nil && !cerrdefs.IsNotFound(err) && !errors.Is(err, context.Canceled) {
		r.log.Warn("stop signal failed", "container", c.spec.Name, "signal", sig, "err", err)
	}
}

// killContainer stops container c alone, for a failed probe or hook: its
// preStop hook and stop signal, and SIGKILL after grace. Its restart
// policy decides what follows.
func (r *runner) killContainer(ctx context.Context, c *ctr, why string, grace time.Duration) {
	r.stopProbes(c)
	c.status.Ready = false
	inst, _ := r.snapshot()
	then := "will be restarted"
	if !model.WillRestart(inst.Spec.RestartPolicy, 128+int(syscall.SIGTERM)) {
		then = "will not be restarted (restart policy Never)"
	}
	r.event("Normal", "Killing", "container %s %s, %s; SIGKILL in %s", c.spec.Name, why, then, grace)
	c.killAt = time.Now().Add(grace)
	r.stopContainer(ctx, c, grace)
}

// killGrace is how long a container the platform kills for a failed
// probe or hook has between its stop signal and SIGKILL: the spec's
// terminationGracePeriodSeconds, as the kubelet's.
func (r *runner) killGrace() time.Duration {
	inst, _ := r.snapshot()
	return time.Duration(model.StopGrace(&inst.Spec)) * time.Second
}
