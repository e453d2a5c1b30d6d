package agent

import (
	"context"
	"fmt"
	"syscall"

	cerrdefs "github.com/containerd/containerd/errdefs"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
	"github.com/kanga-run/kanga/internal/hostcontract"
)

var _ hostcontract.Killer = (*Agent)(nil)

// Kill implements hostcontract.Killer. It only signals: the task's exit is
// seen by the instance's runner like any other, so the restart policy
// applies, as it does to docker kill.
func (a *Agent) Kill(ctx context.Context, inst *api.Instance, container string, sig syscall.Signal) error {
	if err := checkTenant(ctx, inst); err != nil {
		return err
	}
	names := []string{container}
	if container == "" {
		names = names[:0]
		for _, c := range inst.Spec.Containers {
			names = append(names, c.Name)
		}
	}
	nctx := a.ns(ctx)
	signalled := 0
	for _, name := range names {
		c, err := a.cfg.Client.LoadContainer(nctx, a.ctrID(inst.UID, name))
		if err != nil {
			if cerrdefs.IsNotFound(err) {
				continue
			}
			return err
		}
		task, err := c.Task(nctx, nil)
		if err != nil {
			if cerrdefs.IsNotFound(err) {
				continue
			}
			return err
		}
		if err := task.Kill(nctx, sig); err != nil {
			if cerrdefs.IsNotFound(err) {
				continue
			}
			return fmt.Errorf("signal container %s of instance %q: %w", name, inst.Name, err)
		}
		signalled++
	}
	if signalled == 0 {
		if container != "" {
			return fmt.Errorf("container %s of instance %q is not running: %w", container, inst.Name, errdefs.ErrFailedPrecondition)
		}
		return fmt.Errorf("no container of instance %q is running: %w", inst.Name, errdefs.ErrFailedPrecondition)
	}
	return nil
}
