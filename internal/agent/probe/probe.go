// Package probe runs a container's liveness, readiness and startup probes
// as the kubelet does, and reports only their transitions: the runner
// writes status on a change, never every period.
//
// A container's probes start with its task and end with it (the runner
// starts a new set for each run). The startup probe, while it has not
// passed, holds the other two back; liveness and startup failures are the
// runner's to act on (it kills the container), readiness results set the
// container's ready.
package probe

import (
	"context"
	"sync"
	"time"

	"github.com/kanga-run/kanga/api"
)

// Kind is which of a container's probes a result is about.
type Kind int

const (
	Liveness Kind = iota
	Readiness
	Startup
)

func (k Kind) String() string {
	switch k {
	case Liveness:
		return "Liveness"
	case Readiness:
		return "Readiness"
	case Startup:
		return "Startup"
	}
	return "Unknown"
}

// Checker makes one check. It returns nil when the container is healthy
// and an error saying why not otherwise; ctx carries the probe's timeout.
type Checker interface {
	Check(ctx context.Context) error
}

// Clock is the time the probes wait on.
type Clock interface {
	After(d time.Duration) <-chan time.Time
}

type realClock struct{}

func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// Target is one probe of a container: its spec (defaults applied) and
// what checks it.
type Target struct {
	Probe   *api.Probe
	Checker Checker
}

// Result is a transition of one probe: Healthy is its new state.
// Message is why the last check failed, for a failure.
type Result struct {
	Kind    Kind
	Healthy bool
	Message string
}

// Config is the probes of one run of a container.
type Config struct {
	Liveness, Readiness, Startup *Target
	// Ready is the readiness the run begins with: false for a new run;
	// what the record says for a container adopted after an agent
	// restart, so that a ready container does not flap to unready.
	Ready bool
	// Started tells that the startup probe already passed (an adopted
	// container that was ready): it is not run again.
	Started bool
	// Report gets each transition; it must return when ctx ends.
	Report func(context.Context, Result)
	// Clock is the real clock when nil.
	Clock Clock
}

// Start runs the probes of cfg until ctx ends or the returned stop is
// called; stop waits for them to end.
func Start(ctx context.Context, cfg Config) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	if cfg.Clock == nil {
		cfg.Clock = realClock{}
	}
	var wg sync.WaitGroup
	started := make(chan struct{})
	if cfg.Startup == nil || cfg.Started {
		close(started)
	} else {
		wg.Add(1)
		go func() {
			defer wg.Done()
			runStartup(ctx, cfg, started)
		}()
	}
	for _, w := range []struct {
		kind Kind
		t    *Target
	}{{Liveness, cfg.Liveness}, {Readiness, cfg.Readiness}} {
		if w.t == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			runGated(ctx, cfg, w.kind, w.t, started)
		}()
	}
	return func() {
		cancel()
		wg.Wait()
	}
}

// runStartup probes until the startup probe passes (started is closed)
// or fails failureThreshold times in a row; either ends it.
func runStartup(ctx context.Context, cfg Config, started chan struct{}) {
	t := cfg.Startup
	if !wait(ctx, cfg.Clock, seconds(t.Probe.InitialDelaySeconds)) {
		return
	}
	failures := 0
	for {
		err := check(ctx, t)
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			close(started)
			cfg.Report(ctx, Result{Kind: Startup, Healthy: true})
			return
		}
		if failures++; failures >= t.Probe.FailureThreshold {
			cfg.Report(ctx, Result{Kind: Startup, Message: err.Error()})
			return
		}
		if !wait(ctx, cfg.Clock, seconds(t.Probe.PeriodSeconds)) {
			return
		}
	}
}

// runGated runs a liveness or readiness probe once the startup probe has
// passed and its initial delay (counted from the start of the run) is
// over. A liveness probe ends at its failure: the container is killed
// and its next run gets new probes.
func runGated(ctx context.Context, cfg Config, kind Kind, t *Target, started <-chan struct{}) {
	if !wait(ctx, cfg.Clock, seconds(t.Probe.InitialDelaySeconds)) {
		return
	}
	select {
	case <-started:
	case <-ctx.Done():
		return
	}
	healthy := kind == Liveness || cfg.Ready
	// told is set once a failure of the current streak was reported: a
	// readiness probe that never passed reports its failure once, so the
	// runner can say why the container is not ready.
	told := false
	successes, failures := 0, 0
	for {
		err := check(ctx, t)
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			failures = 0
			if successes++; !healthy && successes >= t.Probe.SuccessThreshold {
				healthy, told = true, false
				cfg.Report(ctx, Result{Kind: kind, Healthy: true})
			}
		} else {
			successes = 0
			if failures++; !told && failures >= t.Probe.FailureThreshold {
				healthy, told = false, true
				cfg.Report(ctx, Result{Kind: kind, Message: err.Error()})
				if kind == Liveness {
					return
				}
			}
		}
		if !wait(ctx, cfg.Clock, seconds(t.Probe.PeriodSeconds)) {
			return
		}
	}
}

// check runs one check within the probe's timeout.
func check(ctx context.Context, t *Target) error {
	cctx, cancel := context.WithTimeout(ctx, seconds(t.Probe.TimeoutSeconds))
	defer cancel()
	return t.Checker.Check(cctx)
}

func wait(ctx context.Context, c Clock, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	select {
	case <-c.After(d):
		return true
	case <-ctx.Done():
		return false
	}
}

func seconds(n int) time.Duration { return time.Duration(n) * time.Second }
