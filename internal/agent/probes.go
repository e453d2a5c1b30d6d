package agent

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/internal/agent/probe"
)

// probeResult is a probe transition of one run (generation) of a
// container.
type probeResult struct {
	container  string
	generation int
	probe.Result
}

// hasProbes tells whether a container has any probe.
func hasProbes(s api.ContainerSpec) bool {
	return s.LivenessProbe != nil || s.ReadinessProbe != nil || s.StartupProbe != nil
}

// startProbes starts the probes of c's current run, which has just
// started (adopted: found running after an agent restart). A container
// without probes is ready while it runs; one with a startup or readiness
// probe becomes ready when they pass, except that an adopted container
// keeps the readiness its record has.
func (r *runner) startProbes(ctx context.Context, c *ctr, adopted bool) {
	r.stopProbes(c)
	if c.status.State != api.ContainerRunning || c.task == nil {
		return
	}
	if c.postStartDue {
		// Neither ready nor probed until the hook has run (handleHook).
		c.status.Ready = false
		if c.hookRunning != postStart {
			r.runHook(ctx, c, postStart, time.Time{})
		}
		return
	}
	if !hasProbes(c.spec) {
		c.status.Ready = true
		return
	}
	wasReady := adopted && c.status.Ready
	c.started = c.spec.StartupProbe == nil || wasReady
	c.status.Ready = wasReady || (c.started && c.spec.ReadinessProbe == nil)
	targets, err := r.probeTargets(ctx, c)
	if err != nil {
		// The container runs; without its probes it is never restarted
		// for them, and never ready if it has a readiness probe: say so.
		r.event("Warning", "ProbeError", "container %s: the probes cannot run: %v", c.spec.Name, err)
		return
	}
	name, gen := c.spec.Name, c.generation
	cfg := probe.Config{
		Ready:   wasReady,
		Started: c.started,
		Report: func(ctx context.Context, res probe.Result) {
			select {
			case r.probeResults <- probeResult{container: name, generation: gen, Result: res}:
			case <-ctx.Done():
			}
		},
	}
	cfg.Liveness, cfg.Readiness, cfg.Startup = targets[probe.Liveness], targets[probe.Readiness], targets[probe.Startup]
	c.stopProbes = probe.Start(r.tctx(ctx), cfg)
}

// stopProbes ends the probes of c's run without waiting for a check in
// flight: its result, if it comes, is of an old generation.
func (r *runner) stopProbes(c *ctr) {
	if c.stopProbes != nil {
		stop := c.stopProbes
		c.stopProbes = nil
		// Waiting here could hold the runner up for an exec's teardown.
		go stop()
	}
}

// probeTargets makes the checkers of c's probes: exec in the container's
// task, the network ones from inside the instance's network namespace
// to its own address.
func (r *runner) probeTargets(ctx context.Context, c *ctr) (map[probe.Kind]*probe.Target, error) {
	targets := map[probe.Kind]*probe.Target{}
	for kind, p := range map[probe.Kind]*api.Probe{
		probe.Liveness: c.spec.LivenessProbe, probe.Readiness: c.spec.ReadinessProbe, probe.Startup: c.spec.StartupProbe,
	} {
		if p == nil {
			continue
		}
		var ch probe.Checker
		switch {
		case p.Exec != nil:
			ec, err := r.execChecker(ctx, c, p.Exec.Command)
			if err != nil {
				return nil, err
			}
			ch = ec
		default:
			if r.att == nil || r.att.NetNS == "" || r.ip == "" {
				return nil, fmt.Errorf("the instance has no network namespace to probe from")
			}
			dial := probe.NetnsDialer(r.att.NetNS, r.ip)
			switch {
			case p.HTTPGet != nil:
				ch = &probe.HTTPChecker{Dial: dial, Action: p.HTTPGet}
			case p.TCPSocket != nil:
				ch = &probe.TCPChecker{Dial: dial, Port: p.TCPSocket.Port}
			case p.GRPC != nil:
				svc := ""
				if p.GRPC.Service != nil {
					svc = *p.GRPC.Service
				}
				ch = &probe.GRPCChecker{Dial: dial, Port: p.GRPC.Port, Service: svc}
			default:
				return nil, fmt.Errorf("%s probe has no handler", strings.ToLower(kind.String()))
			}
		}
		targets[kind] = &probe.Target{Probe: p, Checker: ch}
	}
	return targets, nil
}

// execChecker runs command in c's task as the container's process.
func (r *runner) execChecker(ctx context.Context, c *ctr, command []string) (*probe.ExecChecker, error) {
	spec := c.warmSpec
	if spec == nil {
		s, err := c.c.Spec(r.tctx(ctx))
		if err != nil {
			return nil, fmt.Errorf("reading the container's spec: %w", err)
		}
		spec = s
	}
	if spec.Process == nil {
		return nil, fmt.Errorf("the container's spec has no process")
	}
	if launcherSpec(spec.Process) {
		command = withExecEnv(command, nil)
	}
	return &probe.ExecChecker{Task: c.task, Process: spec.Process, Command: command, FIFODir: r.a.fifoDir()}, nil
}

// handleProbe acts on a probe transition: a failed liveness or startup
// probe kills the container (its restart policy decides the rest), a
// readiness result sets its ready.
func (r *runner) handleProbe(ctx context.Context, pr probeResult) {
	c := r.ctr(pr.container)
	if c == nil || pr.generation != c.generation || c.status.State != api.ContainerRunning || r.stopping {
		return // an old run's, or the container is on its way out
	}
	kind := pr.Kind.String()
	if !pr.Healthy {
		r.event("Warning", "Unhealthy", "%s probe of container %s failed: %s", kind, c.spec.Name, pr.Message)
	}
	switch pr.Kind {
	case probe.Startup:
		if pr.Healthy {
			c.started = true
			c.status.Ready = c.spec.ReadinessProbe == nil
			return
		}
		r.killContainer(ctx, c, "failed its startup probe", r.killGrace())
	case probe.Liveness:
		r.killContainer(ctx, c, "failed its liveness probe", r.killGrace())
	case probe.Readiness:
		c.status.Ready = pr.Healthy && c.started
	}
}

// ctr returns the runner's container of that name, or nil.
func (r *runner) ctr(name string) *ctr {
	for _, c := range r.ctrs {
		if c.spec.Name == name {
			return c
		}
	}
	return nil
}

// readyCondition is the instance's Ready condition for statuses in
// phase, keeping the transition time of old when its status is the same.
func readyCondition(phase api.Phase, statuses []api.ContainerStatus, old []api.InstanceCondition, now time.Time) []api.InstanceCondition {
	cond := api.InstanceCondition{Type: api.InstanceReady, Status: api.ConditionTrue}
	var unready []string
	for _, s := range statuses {
		if !s.Ready {
			unready = append(unready, s.Name)
		}
	}
	switch {
	case phase.Terminal():
		cond.Status, cond.Reason = api.ConditionFalse, "InstanceCompleted"
	case phase != api.PhaseRunning:
		cond.Status, cond.Reason = api.ConditionFalse, "InstanceNotRunning"
	case len(unready) > 0:
		cond.Status, cond.Reason = api.ConditionFalse, "ContainersNotReady"
		cond.Message = fmt.Sprintf("containers with unready status: [%s]", strings.Join(unready, " "))
	}
	cond.LastTransitionTime = now
	var out []api.InstanceCondition
	for _, o := range old {
		if o.Type == api.InstanceReady {
			if o.Status == cond.Status {
				cond.LastTransitionTime = o.LastTransitionTime
			}
			continue
		}
		out = append(out, o)
	}
	return append(out, cond)
}

// startAllProbes starts the probes of every running container once the
// instance has started, before the status that says so is written: that
// write then carries the readiness of containers without probes.
// Adopted containers keep the readiness their record has; those started
// now begin unready (startTask).
func (r *runner) startAllProbes(ctx context.Context) {
	for _, c := range r.ctrs {
		r.startProbes(ctx, c, true)
	}
}

// stopAllProbes ends the probes of every container.
func (r *runner) stopAllProbes() {
	for _, c := range r.ctrs {
		r.stopProbes(c)
	}
}
