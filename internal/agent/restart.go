// Restarts: when a container that exited runs again. The restart policy
// (model.WillRestart) decides whether; backoffPolicy decides when, as
// kubelet's crash-loop backoff does; the runner's loop owns the timer
// (ctr.restartAt) and calls restartDue when it fires. A restart renews
// the sandbox's network first where the runtime took it with the previous
// sandbox.

package agent

import (
	"context"
	"time"

	"github.com/kanga-run/kanga/api"
)

// backoffPolicy is a delay that doubles from min up to max with each
// failed attempt; an attempt that lasted at least reset (when set) starts
// it over at min. It holds no state: the delay so far is the caller's, so
// that each container keeps its own and a policy is a plain value.
type backoffPolicy struct {
	min, max time.Duration
	// reset is how long an attempt must last to count as a success that
	// starts the delay over; zero: no attempt does.
	reset time.Duration
}

// restartBackoff is a container's crash-loop backoff, as kubelet's: 1s,
// 2s, 4s ... up to 30s between restarts, back to 1s after a run of 10s.
var restartBackoff = backoffPolicy{min: time.Second, max: 30 * time.Second, reset: 10 * time.Second}

// next is the delay before the next attempt, given the delay before the
// last one (prev, zero before the first) and how long that attempt ran.
func (p backoffPolicy) next(prev, ran time.Duration) time.Duration {
	if prev == 0 || (p.reset > 0 && ran >= p.reset) {
		return p.min
	}
	return min(prev*2, p.max)
}

// ranFor is how long a container's last run lasted, zero when its status
// does not say (it never started, or has not ended).
func ranFor(st api.ContainerStatus) time.Duration {
	if st.StartedAt == nil || st.FinishedAt == nil {
		return 0
	}
	return st.FinishedAt.Sub(*st.StartedAt)
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
	att, err := r.a.cfg.Network.Setup(ctx, id, ports(inst.Spec), netLimits(r.res))
	if err != nil {
		return err
	}
	if err := r.a.cfg.Network.Assign(ctx, id, r.tenant); err != nil {
		return err
	}
	r.ip = att.IP
	return writeHosts(r.a.sandboxDir(r.uid), &inst.Spec, hostnameOf(&inst), att.IP)
}

// scheduleRestart sets c's restart after its backoff; the loop's timer
// then calls restartDue.
func (r *runner) scheduleRestart(c *ctr) {
	c.backoff = restartBackoff.next(c.backoff, ranFor(c.status))
	c.restartAt = time.Now().Add(c.backoff)
	c.status.State = api.ContainerTerminated
}

// restartDue restarts the containers whose backoff ended at now, unless
// the instance is stopping; a restart that fails is scheduled again.
func (r *runner) restartDue(ctx context.Context, now time.Time) {
	nctx := r.tctx(ctx)
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
