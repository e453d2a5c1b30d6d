package warm

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kanga-run/kanga/internal/agent/fill"
)

// fakeMaker is a Maker that makes numbered placeholders (a fake for
// fast unit tests: no containers).
type fakeMaker struct {
	mu        sync.Mutex
	made      int
	destroyed []any
}

func (m *fakeMaker) Make(ctx context.Context, k Key) (any, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.made++
	return fmt.Sprintf("%s/%d", k.Tenant, m.made), nil
}

func (m *fakeMaker) Destroy(ctx context.Context, w any) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.destroyed = append(m.destroyed, w)
}

// step runs the pool's jobs until none is due, synchronously.
func step(w *Pool) {
	for {
		job := w.next()
		if job == nil {
			return
		}
		job(context.Background())
	}
}

func TestWarmSizing(t *testing.T) {
	now := time.Unix(1000, 0)
	m := &fakeMaker{}
	w := New(Config{Maker: m, Policy: fill.Policy{Max: 3, Window: 10 * time.Second}, Total: 4, DefaultClass: "crun", Now: func() time.Time { return now }})
	a := Key{"t1", "img", "crun"}
	b := Key{"t2", "img", "crun"}
	ready := func(k Key) int {
		w.mu.Lock()
		defer w.mu.Unlock()
		if s, ok := w.keys[k]; ok {
			return len(s.ready)
		}
		return 0
	}

	if _, ok := w.Take(a); ok {
		t.Fatal("the first take of a key found a warm container")
	}
	step(w)
	if ready(a) != 1 {
		t.Fatalf("after one create: %d ready for the key, want Min 1", ready(a))
	}
	// Another tenant's key never serves a.
	if _, ok := w.Take(b); ok {
		t.Fatal("t2 got a warm container made for t1")
	}
	step(w)
	if v, ok := w.Take(a); !ok || v.(string)[:3] != "t1/" {
		t.Fatalf("t1's take got %v %v", v, ok)
	}
	// A burst: three creates in one second raise the target to Max 3,
	// within Total 4 across keys (b holds one).
	w.Take(a)
	w.Take(a)
	step(w)
	if ready(a) != 3 || ready(b) != 1 {
		t.Fatalf("after a burst: a %d b %d ready, want 3 and 1", ready(a), ready(b))
	}
	// Idle for a window: both keys shrink to nothing.
	now = now.Add(11 * time.Second)
	step(w)
	if ready(a) != 0 || ready(b) != 0 || len(m.destroyed) != 4 {
		t.Fatalf("after an idle window: a %d b %d ready, %d destroyed; want 0, 0, 4", ready(a), ready(b), len(m.destroyed))
	}
	// Expect of an image no create asked for fills the default class to Max.
	w.Expect("t3", "other")
	step(w)
	if k := (Key{"t3", "other", "crun"}); ready(k) != 3 {
		t.Fatalf("after Expect: %d ready, want Max 3", ready(k))
	}
	st := w.Status()
	if st.Hits != 1 || st.Misses != 4 { // the burst found none ready
		t.Errorf("hits %d misses %d, want 1 and 4", st.Hits, st.Misses)
	}
}

// TestWarmDrop: dropping a tenant (or one of its images) destroys its
// ready warm containers, forgets its demand, and destroys one that was
// being made meanwhile; other tenants' stay.
func TestWarmDrop(t *testing.T) {
	now := time.Unix(1000, 0)
	m := &fakeMaker{}
	w := New(Config{Maker: m, Policy: fill.Policy{Max: 3, Window: 10 * time.Second}, Total: 8, DefaultClass: "crun", Now: func() time.Time { return now }})
	a1, a2, b := Key{"a", "img1", "crun"}, Key{"a", "img2", "crun"}, Key{"b", "img1", "crun"}
	for _, k := range []Key{a1, a2, b} {
		w.Take(k)
	}
	step(w)
	if st := w.Status(); len(st.Keys) != 3 {
		t.Fatalf("keys %+v, want 3", st.Keys)
	}
	w.Drop(context.Background(), "a", "img1")
	if st := w.Status(); len(st.Keys) != 2 || len(m.destroyed) != 1 || m.destroyed[0].(string)[:2] != "a/" {
		t.Fatalf("after dropping a's img1: keys %+v, destroyed %v", st.Keys, m.destroyed)
	}
	// A fill under way when its tenant goes ends destroyed.
	handed, ok := w.Take(a2)
	if !ok {
		t.Fatal("a2 had no warm container")
	}
	w.Take(a2)
	job := w.next() // makes a second one for a2
	w.Drop(context.Background(), "a", "")
	job(context.Background())
	step(w)
	st := w.Status()
	if len(st.Keys) != 1 || st.Keys[0].Key != b || st.Keys[0].Ready != 1 {
		t.Fatalf("after dropping a: keys %+v, want only b's with one ready", st.Keys)
	}
	// a1's ready one and the one made during the drop; the one handed
	// out is its taker's, not the pool's to destroy.
	if m.made != 4 || len(m.destroyed) != 2 || slices.Contains(m.destroyed, handed) ||
		!strings.HasPrefix(m.destroyed[0].(string), "a/") || !strings.HasPrefix(m.destroyed[1].(string), "a/") {
		t.Fatalf("made %d, destroyed %v (handed out %v); want 4 made and two of a's destroyed", m.made, m.destroyed, handed)
	}
}
