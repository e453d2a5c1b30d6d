// Package warm keeps warm containers: containers created and started
// ahead of demand for a tenant's image, whose init is the holder (package
// holder, cmd/kanga-init) waiting for an instance's process. Pool sizes
// and fills them per Key; the agent makes, claims and destroys them (it
// implements Maker), as only it knows how to build a container.
package warm

import (
	"context"
	"encoding/json"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/kanga-run/kanga/internal/agent/fill"
)

// Prefix starts the id of every warm container (its containerd
// container, network attachment, cgroup and sandbox dir), so that a
// restarted agent recognises the ones a previous run left unclaimed.
const Prefix = "warm-"

// Key is what a warm container is made for: it serves only instances
// of that tenant, image and runtime class. A warm container never crosses
// tenants and is used once: the instance that claims it keeps it until it
// is deleted, like any container it would have created itself.
type Key struct {
	Tenant string
	Image  string // the image reference as the instance spec names it
	Class  string // runtime class; runc and crun only
}

// Maker makes and destroys warm containers; the agent implements it.
type Maker interface {
	// Make creates and starts a warm container for key and returns once
	// its holder is ready.
	Make(ctx context.Context, key Key) (any, error)
	// Destroy removes a warm container never claimed.
	Destroy(ctx context.Context, w any)
}

// Config configures a Pool.
type Config struct {
	Maker Maker
	// Policy sizes each key's pool (see Policy; Max is per key). A key
	// with no create for a Window keeps none: unlike a network sandbox, a
	// warm container fits one tenant's image only, and each holds a shim
	// (about 10 MB) and its holder.
	Policy fill.Policy
	// Total caps the warm containers of all keys together.
	Total int
	// DefaultClass is the class Expect fills for an image no create has
	// asked for yet.
	DefaultClass string
	StatusFile   string
	Logger       *slog.Logger
	Now          func() time.Time
}

// Warm pool defaults: small, because each warm container holds memory.
const (
	DefaultMin   = 1
	DefaultMax   = 4
	DefaultTotal = 8
)

type keyState struct {
	ready   []any
	creates []time.Time
	filling int
	expect  time.Time
	target  int
}

// Pool keeps warm containers per Key, sized from each key's recent
// creates, filled one at a time by Run.
type Pool struct {
	cfg    Config
	log    *slog.Logger
	filler fill.Filler

	mu       sync.Mutex
	keys     map[Key]*keyState
	lastTake time.Time
	inflight int
	refill   time.Duration
	failures int
	retryAt  time.Time
	hits     uint64
	misses   uint64
	stopped  bool
	last     []byte
}

// New returns a warm pool; it fills once Run runs.
func New(cfg Config) *Pool {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Policy.Min == 0 {
		cfg.Policy.Min = DefaultMin
	}
	if cfg.Policy.Max == 0 {
		cfg.Policy.Max = DefaultMax
	}
	cfg.Policy = cfg.Policy.WithDefaults()
	if cfg.Total <= 0 {
		cfg.Total = DefaultTotal
	}
	return &Pool{cfg: cfg, log: cfg.Logger.With("component", "warm-pool"), filler: fill.NewFiller(),
		keys: map[Key]*keyState{}, refill: 200 * time.Millisecond}
}

func (w *Pool) key(k Key) *keyState {
	s, ok := w.keys[k]
	if !ok {
		s = &keyState{}
		w.keys[k] = s
	}
	return s
}

// Take hands out a ready warm container for key, newest first; it is then
// the caller's, to claim or to destroy (Maker.Destroy). Every call counts as
// demand for key, served or not: call it only for instances a warm
// container can serve.
func (w *Pool) Take(k Key) (any, bool) {
	w.mu.Lock()
	s := w.key(k)
	now := w.cfg.Now()
	s.creates = append(s.creates, now)
	w.lastTake = now
	trim(&s.creates, now.Add(-w.cfg.Policy.Window))
	var (
		c  any
		ok bool
	)
	if n := len(s.ready); n > 0 {
		c, ok = s.ready[n-1], true
		s.ready = s.ready[:n-1]
		w.hits++
	} else {
		w.misses++
	}
	w.mu.Unlock()
	w.filler.Poke()
	return c, ok
}

// Expect announces a burst of tenant's image: its keys (the classes
// creates of it used recently, else DefaultClass) fill to Policy.Max for
// one Window.
func (w *Pool) Expect(tenant, image string) {
	w.mu.Lock()
	until := w.cfg.Now().Add(w.cfg.Policy.Window)
	found := false
	for k, s := range w.keys {
		if k.Tenant == tenant && k.Image == image && len(s.creates) > 0 {
			s.expect, found = until, true
		}
	}
	if !found && w.cfg.DefaultClass != "" {
		w.key(Key{tenant, image, w.cfg.DefaultClass}).expect = until
	}
	w.mu.Unlock()
	w.filler.Poke()
}

// Drop destroys the ready warm containers of tenant's image (every image
// of tenant if image is empty) and forgets the keys' demand: the image was
// removed, or the tenant deleted. Containers being made for them now are
// destroyed when they are done.
func (w *Pool) Drop(ctx context.Context, tenant, image string) {
	w.mu.Lock()
	var doomed []any
	for k, s := range w.keys {
		if k.Tenant == tenant && (image == "" || k.Image == image) {
			doomed = append(doomed, s.ready...)
			delete(w.keys, k)
		}
	}
	w.mu.Unlock()
	for _, c := range doomed {
		w.cfg.Maker.Destroy(ctx, c)
	}
	w.filler.Poke()
}

func trim(ts *[]time.Time, from time.Time) {
	i := 0
	for i < len(*ts) && (*ts)[i].Before(from) {
		i++
	}
	*ts = (*ts)[i:]
}

// Status is the pool's state, for operators and tests.
type Status struct {
	Keys     []KeyStatus `json:"keys"`
	Hits     uint64      `json:"hits"`
	Misses   uint64      `json:"misses"`
	RefillMS float64     `json:"refillMs"`
}

// KeyStatus is one key's state.
type KeyStatus struct {
	Key
	Target  int `json:"target"`
	Ready   int `json:"ready"`
	Filling int `json:"filling"`
	Recent  int `json:"recent"`
}

// Status reports the pool's current state.
func (w *Pool) Status() Status {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.statusLocked()
}

func (w *Pool) statusLocked() Status {
	st := Status{Hits: w.hits, Misses: w.misses, RefillMS: float64(w.refill.Microseconds()) / 1000}
	for k, s := range w.keys {
		st.Keys = append(st.Keys, KeyStatus{Key: k, Target: s.target, Ready: len(s.ready), Filling: s.filling, Recent: len(s.creates)})
	}
	sort.Slice(st.Keys, func(i, j int) bool {
		a, b := st.Keys[i].Key, st.Keys[j].Key
		if a.Tenant != b.Tenant {
			return a.Tenant < b.Tenant
		}
		if a.Image != b.Image {
			return a.Image < b.Image
		}
		return a.Class < b.Class
	})
	return st
}

// targetLocked is key's target at now: Policy.Target on its creates, Max
// while a burst is expected, none once idle for a Window.
func (w *Pool) targetLocked(s *keyState, now time.Time) int {
	trim(&s.creates, now.Add(-w.cfg.Policy.Window))
	if now.Before(s.expect) {
		return w.cfg.Policy.Max
	}
	if len(s.creates) == 0 {
		return 0
	}
	return w.cfg.Policy.Target(now, s.creates, w.refill)
}

// Run keeps every key at its target until ctx ends, then destroys the warm
// containers still ready. One make or destroy runs at a time per
// Policy.Parallel.
func (w *Pool) Run(ctx context.Context) {
	w.filler.Run(ctx, w.next, w.writeStatus, w.drain)
}

// next picks the next make or destroy, if one is due and a slot is free.
func (w *Pool) next() func(context.Context) {
	w.mu.Lock()
	defer w.mu.Unlock()
	now := w.cfg.Now()
	total := 0
	var want []Key // keys below target, the most short first
	for k, s := range w.keys {
		t := w.targetLocked(s, now)
		if t != s.target {
			w.log.Debug("warm target changed", "tenant", k.Tenant, "image", k.Image, "class", k.Class, "from", s.target, "to", t)
			s.target = t
		}
		total += len(s.ready) + s.filling
		if len(s.ready)+s.filling < t {
			want = append(want, k)
		}
	}
	if w.inflight >= w.cfg.Policy.Parallel {
		return nil
	}
	// Over target (or over Total): destroy the oldest of that key.
	for k, s := range w.keys {
		if len(s.ready) > s.target || (total > w.cfg.Total && len(s.ready) > 0 && len(want) == 0) {
			c := s.ready[0]
			s.ready = s.ready[1:]
			w.inflight++
			return func(ctx context.Context) {
				w.cfg.Maker.Destroy(ctx, c)
				w.mu.Lock()
				w.inflight--
				w.mu.Unlock()
			}
		}
		if len(s.ready) == 0 && s.filling == 0 && s.target == 0 && len(s.creates) == 0 && !now.Before(s.expect) {
			delete(w.keys, k)
		}
	}
	if len(want) == 0 || total >= w.cfg.Total || now.Before(w.retryAt) {
		return nil
	}
	sort.Slice(want, func(i, j int) bool {
		a, b := w.keys[want[i]], w.keys[want[j]]
		return len(a.ready)+a.filling < len(b.ready)+b.filling
	})
	k := want[0]
	s := w.keys[k]
	s.filling++
	w.inflight++
	// As the network pool's filler (see lowPriority): while starts are
	// under way the refill's own processes (CNI plugins) give way to them.
	low := now.Before(w.lastTake.Add(fill.BusyFor))
	return func(ctx context.Context) { w.fill(ctx, k, s, low) }
}

// fill makes one warm container for key k, whose state was s when the
// fill began: if Drop removed the key meanwhile, the new one is destroyed.
func (w *Pool) fill(ctx context.Context, k Key, s *keyState, low bool) {
	start := w.cfg.Now()
	var (
		c   any
		err error
	)
	mk := func() { c, err = w.cfg.Maker.Make(ctx, k) }
	if low {
		fill.LowPriority(mk)
	} else {
		mk()
	}
	took := w.cfg.Now().Sub(start)
	w.mu.Lock()
	s.filling--
	w.inflight--
	if err != nil {
		w.failures++
		backoff := min(time.Second<<min(w.failures-1, 5), 30*time.Second)
		w.retryAt = w.cfg.Now().Add(backoff)
		w.mu.Unlock()
		if ctx.Err() == nil {
			w.log.Warn("making a warm container failed", "tenant", k.Tenant, "image", k.Image, "class", k.Class, "err", err, "retry_in", backoff)
		}
		return
	}
	w.failures = 0
	if ctx.Err() != nil || w.stopped || w.keys[k] != s {
		w.mu.Unlock()
		w.cfg.Maker.Destroy(context.WithoutCancel(ctx), c)
		return
	}
	w.refill = (w.refill*3 + took) / 4
	s.ready = append(s.ready, c)
	w.mu.Unlock()
}

// drain destroys every ready warm container.
func (w *Pool) drain(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	w.mu.Lock()
	var all []any
	for _, s := range w.keys {
		all = append(all, s.ready...)
		s.ready = nil
	}
	w.stopped = true
	w.mu.Unlock()
	for _, c := range all {
		w.cfg.Maker.Destroy(ctx, c)
	}
	w.writeStatus()
}

func (w *Pool) writeStatus() {
	if w.cfg.StatusFile == "" {
		return
	}
	w.mu.Lock()
	b, _ := json.Marshal(w.statusLocked())
	changed := string(b) != string(w.last)
	w.last = b
	w.mu.Unlock()
	if !changed {
		return
	}
	if err := fill.WriteStatusFile(w.cfg.StatusFile, b); err != nil {
		w.log.Debug("writing the warm status failed", "err", err)
	}
}
