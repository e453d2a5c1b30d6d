// Package steps runs a sequence of named steps, each of which may leave
// an undo behind, and undoes the steps done so far in reverse order when
// one fails: the shape of Nomad's allocrunner hooks and of containerd's
// CRI sandbox_run (a named error, a deferred undo after each acquired
// resource), kept small enough that a step is one type and adding one is
// one line in a list.
//
// The agent starts an instance with it (network, cgroup, files,
// containers, tasks); a step that fails must leave nothing of its own
// behind, as the runner undoes only the steps that completed.
package steps

import (
	"context"
	"fmt"
	"log/slog"
)

// Undo reverses what a step did. It runs with a context that is not
// cancelled with the one the step ran under, so that a failing start
// still cleans up.
type Undo func(ctx context.Context) error

// Step is one named stage of a sequence.
type Step interface {
	// Name is short and stable: it prefixes the step's errors and the
	// log lines of its undo.
	Name() string
	// Do performs the step. It returns an undo for what it acquired, or
	// nil when there is nothing to undo (it found everything in place, as
	// after an agent restart). On error it leaves nothing behind itself.
	Do(ctx context.Context) (Undo, error)
}

// Error is the failure of a named step.
type Error struct {
	Step string
	Err  error
}

func (e *Error) Error() string { return e.Step + ": " + e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// Func makes a Step of a name and a function.
func Func(name string, do func(ctx context.Context) (Undo, error)) Step {
	return funcStep{name, do}
}

type funcStep struct {
	name string
	do   func(context.Context) (Undo, error)
}

func (s funcStep) Name() string                         { return s.name }
func (s funcStep) Do(ctx context.Context) (Undo, error) { return s.do(ctx) }

// Runner runs steps.
type Runner struct {
	Log *slog.Logger
	// KeepOnCancel leaves the completed steps in place when the failure
	// came with ctx cancelled: the process is stopping, and whoever runs
	// next takes over what is there (the agent adopts an instance's
	// sandbox and containers after a restart) rather than find it half
	// undone.
	KeepOnCancel bool
}

// Run runs steps in order until one fails. Then it runs the undos of the
// completed steps, last first, and returns an *Error naming the failed
// step. An undo that fails is logged; it never replaces the cause.
func (r Runner) Run(ctx context.Context, steps ...Step) error {
	undos := make([]Undo, 0, len(steps))
	names := make([]string, 0, len(steps))
	for _, s := range steps {
		undo, err := s.Do(ctx)
		if err == nil {
			undos = append(undos, undo)
			names = append(names, s.Name())
			continue
		}
		if !r.KeepOnCancel || ctx.Err() == nil {
			r.undo(context.WithoutCancel(ctx), names, undos)
		}
		return &Error{Step: s.Name(), Err: err}
	}
	return nil
}

func (r Runner) undo(ctx context.Context, names []string, undos []Undo) {
	for i := len(undos) - 1; i >= 0; i-- {
		if undos[i] == nil {
			continue
		}
		if err := undos[i](ctx); err != nil {
			r.logger().Warn(fmt.Sprintf("undoing step %s failed", names[i]), "step", names[i], "err", err)
		}
	}
}

func (r Runner) logger() *slog.Logger {
	if r.Log == nil {
		return slog.Default()
	}
	return r.Log
}
