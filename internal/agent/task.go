// Tasks: starting a container's task (its process, under containerd), or
// adopting the one an earlier agent left running. The runner owns the
// containers; these are the runner's calls from its start steps, its
// restarts and its init-container sequence.

package agent

import (
	"context"
	"fmt"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/cio"
	cerrdefs "github.com/containerd/containerd/errdefs"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/internal/model"
)

// adoptOrStart attaches to a task a previous agent left running, or starts
// one. It never starts a second task for a container that has one running.
// started tells whether it started one (which a failed start undoes).
func (r *runner) adoptOrStart(ctx context.Context, inst *api.Instance, c *ctr) (started bool, err error) {
	if c.fresh {
		return true, r.startTask(ctx, c)
	}
	// A running task's output goes on into the log from where the shim
	// kept it waiting.
	lw := r.a.logWriterFor(r.a.logPath(r.uid, c.spec.Name), logLimitsOf(r.res))
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
	lw := r.a.logWriterFor(r.a.logPath(r.uid, c.spec.Name), logLimitsOf(r.res))
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
