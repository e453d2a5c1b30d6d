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

const (
	restartBackoffMin = time.Second
	restartBackoffMax = 30 * time.Second
	// A container that ran this long before exiting restarts without delay
	// growth, as kubelet resets its crash-loop backoff.
	restartBackoffReset = 10 * time.Second
)

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
