package agent

import (
	"context"
	"sync"
	"time"

	"github.com/kanga-run/kanga/internal/agent/network"
)

// counterReader is a Network that reads the whole host's interface and
// shaper counters at once, for a round of samples (network.Counters).
type counterReader interface {
	ReadCounters() (*network.Counters, error)
	StatsFrom(c *network.Counters, id string) (network.Stats, error)
}

// sampler reads the counters of every running instance in rounds, from one
// goroutine for the whole host, and spaces the rounds so that sampling
// takes at most samplerBudget of a core: a round that took d is followed
// by d/samplerBudget, between sampleInterval and maxSampleInterval.
//
// A round costs about half a millisecond an instance, more on a starved
// host (the time is wall time, so a host short of CPU samples less often,
// which is the point). At a fixed second per instance, a 2-core host with
// three hundred instances spent most of its CPU reading counters, and its
// embedded etcd missed the lease keep-alives (issue 22).
type sampler struct {
	mu      sync.Mutex
	entries map[string]*sampled
	running bool
	// fresh is signalled when an instance waits for its first sample,
	// which it gets at once rather than at the next round.
	fresh chan struct{}
}

// sampled is one instance being sampled.
type sampled struct {
	ctx context.Context
	h   *history
	// mu is held while the instance is sampled, so that once stop has
	// taken it no sample of the instance is added or metered any more.
	mu      sync.Mutex
	stopped bool
	first   bool // it has had its first sample
}

// startSampling samples the instance until stop is called; stop returns
// once sampling has ended and drops the history.
func (a *Agent) startSampling(ctx context.Context, uid string) (stop func()) {
	h := &history{}
	a.histories.mu.Lock()
	if a.histories.m == nil {
		a.histories.m = map[string]*history{}
	}
	a.histories.m[uid] = h
	a.histories.mu.Unlock()

	e := &sampled{ctx: ctx, h: h}
	s := &a.sampler
	s.mu.Lock()
	if s.entries == nil {
		s.entries = map[string]*sampled{}
		s.fresh = make(chan struct{}, 1)
	}
	s.entries[uid] = e
	if !s.running {
		s.running = true
		go a.sampleRounds()
	}
	s.mu.Unlock()
	select {
	case s.fresh <- struct{}{}:
	default:
	}

	return func() {
		e.mu.Lock()
		e.stopped = true
		e.mu.Unlock()
		s.mu.Lock()
		if s.entries[uid] == e {
			delete(s.entries, uid)
		}
		s.mu.Unlock()
		a.histories.mu.Lock()
		if a.histories.m[uid] == h {
			delete(a.histories.m, uid)
		}
		a.histories.mu.Unlock()
	}
}

// sampleRounds runs rounds of samples until no instance is left to
// sample.
func (a *Agent) sampleRounds() {
	s := &a.sampler
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		freshOnly := false
		select {
		case <-timer.C:
		case <-s.fresh:
			freshOnly = true
		}
		s.mu.Lock()
		if len(s.entries) == 0 {
			s.running = false
			s.mu.Unlock()
			return
		}
		uids := make([]string, 0, len(s.entries))
		entries := make([]*sampled, 0, len(s.entries))
		for uid, e := range s.entries {
			uids = append(uids, uid)
			entries = append(entries, e)
		}
		s.mu.Unlock()

		began := time.Now()
		var nc *network.Counters
		if r, ok := a.cfg.Network.(counterReader); ok {
			c, err := r.ReadCounters()
			if err != nil {
				a.log.Debug("reading the host's network counters failed", "err", err)
			}
			nc = c
		}
		for i, e := range entries {
			a.sampleOne(uids[i], e, nc, freshOnly)
		}
		if freshOnly {
			continue
		}
		timer.Reset(samplePause(time.Since(began)))
	}
}

// samplePause is the pause after a round of samples that took d.
func samplePause(d time.Duration) time.Duration {
	pause := time.Duration(float64(d) / samplerBudget)
	return min(max(pause, sampleInterval), maxSampleInterval)
}

func (a *Agent) sampleOne(uid string, e *sampled, nc *network.Counters, freshOnly bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.stopped || e.ctx.Err() != nil || (freshOnly && e.first) {
		return
	}
	e.first = true
	s, err := a.sampleWith(e.ctx, uid, nc)
	if err != nil {
		return
	}
	e.h.add(s)
	a.meter.observe(uid, s)
}
