// Package bench measures how long it takes to start a container through
// Kanga's public API, and, in the same run so that the ratios mean something
// on a noisy machine, through containerd's client and with the OCI runtime
// called directly.
//
// Each way of starting is a Starter; Run drives one over a worker pool, and
// Summarize and the Report turn the samples into percentiles, rates and
// ratios against the raw runtime.
package bench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"
)

// Starter is one path to a running container.
type Starter interface {
	// Path names the path in the report, e.g. "kanga API".
	Path() string
	// Prepare does the untimed work every start shares, once.
	Prepare(ctx context.Context) error
	// Start starts the workload named id and returns once it runs. It
	// times itself because where a start begins and ends differs per path.
	Start(ctx context.Context, id string) (Sample, error)
	// Remove removes what Start(id) made, whether or not Start succeeded;
	// finding nothing to remove is not an error. It is not timed.
	Remove(ctx context.Context, id string) error
	// Close releases what Prepare made.
	Close(ctx context.Context) error
}

// Sample is one timed start.
type Sample struct {
	Total time.Duration
	// Phases optionally break Total down, in order. They need not add up to
	// Total: a path may report overlapping views (client and server side).
	Phases []Phase
	// Retries counts the requests of the start the server refused for
	// now (429, busy) and the client sent again; they are part of Total.
	Retries int
}

// Phase is a named part of a start.
type Phase struct {
	Name     string
	Duration time.Duration
}

// Options control one run of a Starter.
type Options struct {
	// N is the number of starts.
	N int
	// Concurrency is the number of starts in flight at once.
	Concurrency int
	// Timeout bounds each start; 0 means 2 minutes.
	Timeout time.Duration
	// CleanupTimeout bounds the removal of everything started; 0 means 5
	// minutes. Cleanup runs even when ctx has ended.
	CleanupTimeout time.Duration
	// Prefix starts every workload's id; the iteration number follows.
	Prefix string
	// Logger receives progress and cleanup failures; nil discards them.
	Logger *slog.Logger
}

// Result is what one run of a Starter produced.
type Result struct {
	Path string
	// N is the number of starts attempted.
	N int
	// Samples are the successful starts, in completion order.
	Samples []Sample
	// Errors are the failed starts, one line each.
	Errors []string
	// Wall is the time the whole batch took, for the rate.
	Wall time.Duration
}

const (
	defaultTimeout        = 2 * time.Minute
	defaultCleanupTimeout = 5 * time.Minute
)

// Run prepares s, starts o.N workloads with o.Concurrency workers, then
// removes every workload it tried to start (untimed, even when ctx ended
// or a start failed) and closes s. A start that fails is counted in
// Result.Errors, not returned, and so is a failed Prepare; the error is
// for cleanup failures, which would leave things behind on the host.
func Run(ctx context.Context, s Starter, o Options) (Result, error) {
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if o.N < 1 {
		return Result{}, fmt.Errorf("benchmark needs at least one start, got n=%d", o.N)
	}
	timeout := o.Timeout
	if timeout <= 0 {
		timeout = defaultTimeout
	}
	res := Result{Path: s.Path(), N: o.N}
	// Cleanup must outlive a cancelled ctx (Ctrl-C): that is when it
	// matters most.
	cleanupCtx := func() (context.Context, context.CancelFunc) {
		d := o.CleanupTimeout
		if d <= 0 {
			d = defaultCleanupTimeout
		}
		return context.WithTimeout(context.WithoutCancel(ctx), d)
	}
	if err := s.Prepare(ctx); err != nil {
		// Reported like a failed start: the other paths still run.
		res.Errors = []string{fmt.Sprintf("prepare: %v", err)}
		cctx, cancel := cleanupCtx()
		defer cancel()
		if err := s.Close(cctx); err != nil {
			return res, fmt.Errorf("%s: close: %w", s.Path(), err)
		}
		return res, nil
	}

	var (
		mu      sync.Mutex
		tried   []string
		samples []Sample
		errs    []string
	)
	log.Info("benchmark starting", "path", s.Path(), "n", o.N, "concurrency", o.Concurrency)
	// Zero-padded so that no id is a prefix of another: runsc resolves
	// container ids by prefix, and would find "b-1" ambiguous with "b-10".
	width := len(strconv.Itoa(o.N - 1))
	res.Wall = RunPool(ctx, o.N, o.Concurrency, func(ctx context.Context, i int) {
		id := fmt.Sprintf("%s%0*d", o.Prefix, width, i)
		// Recorded before the start: a start that fails half-way may
		// still have left something to remove.
		mu.Lock()
		tried = append(tried, id)
		mu.Unlock()
		sctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		sm, err := s.Start(sctx, id)
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			errs = append(errs, fmt.Sprintf("%s: %v", id, err))
			return
		}
		samples = append(samples, sm)
	})
	res.Samples, res.Errors = samples, errs
	if ctx.Err() != nil && len(samples)+len(errs) < o.N {
		res.Errors = append(res.Errors, fmt.Sprintf("interrupted after %d of %d starts: %v", len(samples)+len(errs), o.N, ctx.Err()))
	}

	cctx, cancel := cleanupCtx()
	defer cancel()
	var (
		cmu        sync.Mutex
		cleanupErr []error
	)
	RunPool(cctx, len(tried), o.Concurrency, func(ctx context.Context, i int) {
		if err := s.Remove(ctx, tried[i]); err != nil {
			log.Warn("benchmark cleanup failed", "path", s.Path(), "id", tried[i], "err", err)
			cmu.Lock()
			cleanupErr = append(cleanupErr, fmt.Errorf("%s: remove %s: %w", s.Path(), tried[i], err))
			cmu.Unlock()
		}
	})
	if cctx.Err() != nil {
		cleanupErr = append(cleanupErr, fmt.Errorf("%s: cleanup did not finish: %w", s.Path(), cctx.Err()))
	}
	if err := s.Close(cctx); err != nil {
		cleanupErr = append(cleanupErr, fmt.Errorf("%s: close: %w", s.Path(), err))
	}
	return res, errors.Join(cleanupErr...)
}
