package pool

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/kanga-run/kanga/internal/agent/fill"
	"github.com/kanga-run/kanga/internal/agent/network"
)

// fakeNetwork is a Network that hands out addresses from a counter and
// remembers what is attached, so tests can check for leaks and reuse.
type fakeNetwork struct {
	mu       sync.Mutex
	live     map[string]network.Attachment
	everIP   map[string]string // IP -> first id that had it
	setups   int
	inflight int
	peak     int // most setups and teardowns at once
	failNext int // fail this many setups
	next     int
	block    chan struct{} // if set, setups wait on it
}

func newFakeNetwork() *fakeNetwork {
	return &fakeNetwork{live: map[string]network.Attachment{}, everIP: map[string]string{}}
}

func (f *fakeNetwork) enter() {
	f.mu.Lock()
	f.inflight++
	f.peak = max(f.peak, f.inflight)
	f.mu.Unlock()
}

func (f *fakeNetwork) leave() {
	f.mu.Lock()
	f.inflight--
	f.mu.Unlock()
}

func (f *fakeNetwork) Setup(ctx context.Context, id string, ports []network.Port, limits network.Limits) (*network.Attachment, error) {
	f.enter()
	defer f.leave()
	if f.block != nil {
		select {
		case <-f.block:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.setups++
	if len(ports) > 0 || limits != (network.Limits{}) {
		return nil, errors.New("pooled sandboxes have no ports or limits")
	}
	if f.failNext > 0 {
		f.failNext--
		return nil, errors.New("injected failure")
	}
	if _, ok := f.live[id]; ok {
		return nil, fmt.Errorf("%s set up twice", id)
	}
	// Fresh addresses only, so reuse by the pool would show.
	f.next++
	att := network.Attachment{NetNS: "/run/fake/" + id, IP: fmt.Sprintf("10.0.%d.%d", f.next/250, f.next%250+1), Gateway: "10.0.0.1"}
	f.live[id] = att
	f.everIP[att.IP] = id
	return &att, nil
}

func (f *fakeNetwork) Teardown(ctx context.Context, id string, ports []network.Port) error {
	f.enter()
	defer f.leave()
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.live, id)
	return nil
}

func (f *fakeNetwork) liveIDs() map[string]bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	ids := map[string]bool{}
	for id := range f.live {
		ids[id] = true
	}
	return ids
}

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// eventually waits for cond; the deadline only bounds a broken test.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("never: %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// startPool runs a pool on fn until the test ends, then checks that
// stopping it left nothing but the sandboxes handed out.
func startPool(t *testing.T, fn *fakeNetwork, pol fill.Policy) (*Pool, *fakeClock, map[string]bool) {
	t.Helper()
	clk := &fakeClock{t: time.Unix(1_000_000, 0)}
	p := New(Config{Network: fn, Policy: pol, Now: clk.Now, StatusFile: t.TempDir() + "/pool.json"})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.Run(ctx); close(done) }()
	taken := map[string]bool{}
	t.Cleanup(func() {
		if fn.block != nil {
			close(fn.block)
		}
		cancel()
		<-done
		for id := range fn.liveIDs() {
			if !taken[id] {
				t.Errorf("pooled sandbox %s left after stop", id)
			}
		}
		for id := range taken {
			if !fn.liveIDs()[id] {
				t.Errorf("sandbox %s was handed out, yet the pool destroyed it", id)
			}
		}
	})
	return p, clk, taken
}

func TestPoolHandsOutFreshSandboxesOnce(t *testing.T) {
	fn := newFakeNetwork()
	p, _, taken := startPool(t, fn, fill.Policy{Min: 2, Max: 4})
	eventually(t, "2 ready", func() bool { return p.Status().Ready == 2 })

	seenIP, seenNS := map[string]string{}, map[string]string{}
	for i := 0; i < 10; i++ {
		eventually(t, "a ready sandbox", func() bool { return p.Status().Ready > 0 })
		sb, ok := p.Take("t1")
		if !ok {
			t.Fatal("Take found the pool empty with one ready")
		}
		if taken[sb.ID] {
			t.Fatalf("sandbox %s handed out twice", sb.ID)
		}
		if !IsPoolID(sb.ID) {
			t.Errorf("id %q lacks the pool prefix", sb.ID)
		}
		if other, ok := seenIP[sb.IP]; ok {
			t.Errorf("IP %s of %s already went to %s", sb.IP, sb.ID, other)
		}
		if other, ok := seenNS[sb.NetNS]; ok {
			t.Errorf("netns %s of %s already went to %s", sb.NetNS, sb.ID, other)
		}
		if sb.IP == "" || sb.NetNS == "" {
			t.Errorf("sandbox without address or netns: %+v", sb)
		}
		taken[sb.ID], seenIP[sb.IP], seenNS[sb.NetNS] = true, sb.ID, sb.ID
	}
	if st := p.Status(); st.Hits != 10 || st.Misses != 0 {
		t.Errorf("hits %d misses %d, want 10 and 0", st.Hits, st.Misses)
	}
}

func TestPoolEmptyTakeIsAMiss(t *testing.T) {
	fn := newFakeNetwork()
	fn.block = make(chan struct{}) // nothing ever gets ready
	p, _, _ := startPool(t, fn, fill.Policy{Min: 2, Max: 4})
	if _, ok := p.Take("t1"); ok {
		t.Fatal("Take handed out a sandbox from an empty pool")
	}
	if st := p.Status(); st.Misses != 1 || st.Hits != 0 {
		t.Errorf("status %+v, want one miss", st)
	}
}

func TestPoolGrowsOnBurstAndShrinksWhenIdle(t *testing.T) {
	fn := newFakeNetwork()
	p, clk, taken := startPool(t, fn, fill.Policy{Min: 2, Max: 16, Window: 30 * time.Second})
	eventually(t, "2 ready", func() bool { return p.Status().Ready == 2 })

	// A burst of 10 creates within one (fake) second.
	for i := 0; i < 10; i++ {
		if sb, ok := p.Take("t1"); ok {
			taken[sb.ID] = true
		}
	}
	eventually(t, "target 10 and 10 ready", func() bool {
		st := p.Status()
		return st.Target == 10 && st.Ready == 10
	})
	if got := len(fn.liveIDs()) - len(taken); got != 10 {
		t.Errorf("%d pooled sandboxes attached, want 10", got)
	}

	clk.advance(29 * time.Second)
	p.filler.Poke()
	if st := p.Status(); st.Target != 10 {
		t.Errorf("target %d within the window, want 10", st.Target)
	}

	clk.advance(2 * time.Second) // the burst is now older than the window
	p.filler.Poke()
	eventually(t, "shrunk to 2 ready", func() bool {
		st := p.Status()
		return st.Target == 2 && st.Ready == 2 && len(fn.liveIDs())-len(taken) == 2
	})
}

// TestPoolExpectFillsToMax: an announced burst fills the pool to Max
// without a create, and after one window it shrinks back to Min.
func TestPoolExpectFillsToMax(t *testing.T) {
	fn := newFakeNetwork()
	p, clk, _ := startPool(t, fn, fill.Policy{Min: 1, Max: 6, Window: 30 * time.Second})
	eventually(t, "1 ready", func() bool { return p.Status().Ready == 1 })

	p.Expect()
	eventually(t, "6 ready", func() bool {
		st := p.Status()
		return st.Target == 6 && st.Ready == 6
	})
	if st := p.Status(); st.Hits != 0 || st.Misses != 0 || st.Recent != 0 {
		t.Errorf("Expect counted as demand: %+v", st)
	}

	clk.advance(31 * time.Second)
	p.filler.Poke()
	eventually(t, "back to 1 ready", func() bool {
		st := p.Status()
		return st.Target == 1 && st.Ready == 1 && len(fn.liveIDs()) == 1
	})
}

func TestPoolNeverExceedsParallel(t *testing.T) {
	fn := newFakeNetwork()
	p, clk, taken := startPool(t, fn, fill.Policy{Min: 0, Max: 12, Parallel: 1})
	for i := 0; i < 12; i++ {
		if sb, ok := p.Take("t1"); ok {
			taken[sb.ID] = true
		}
	}
	eventually(t, "12 ready", func() bool { return p.Status().Ready == 12 })
	clk.advance(time.Minute) // idle: all 12 get destroyed
	p.filler.Poke()
	eventually(t, "drained to 0", func() bool { return p.Status().Ready == 0 && len(fn.liveIDs()) == len(taken) })
	fn.mu.Lock()
	defer fn.mu.Unlock()
	if fn.peak != 1 {
		t.Errorf("%d network operations at once, want at most 1", fn.peak)
	}
}

func TestPoolBacksOffAfterFailure(t *testing.T) {
	fn := newFakeNetwork()
	fn.failNext = 1
	p, clk, _ := startPool(t, fn, fill.Policy{Min: 1, Max: 1})
	eventually(t, "a failed setup", func() bool {
		fn.mu.Lock()
		defer fn.mu.Unlock()
		return fn.setups == 1
	})
	for i := 0; i < 5; i++ {
		p.filler.Poke()
	}
	// The clock stands still, so the retry is not due: one Setup call was
	// made, and the pool is empty.
	if st := p.Status(); st.Ready != 0 {
		t.Fatalf("ready %d after a failed setup", st.Ready)
	}
	clk.advance(2 * time.Second)
	p.filler.Poke()
	eventually(t, "ready after the retry", func() bool { return p.Status().Ready == 1 })
	fn.mu.Lock()
	defer fn.mu.Unlock()
	if fn.setups != 2 {
		t.Errorf("%d setups, want 2 (one failure, one retry)", fn.setups)
	}
}

func TestPoolStopDestroysReady(t *testing.T) {
	fn := newFakeNetwork()
	clk := &fakeClock{t: time.Unix(1_000_000, 0)}
	p := New(Config{Network: fn, Policy: fill.Policy{Min: 3, Max: 3}, Now: clk.Now})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.Run(ctx); close(done) }()
	eventually(t, "3 ready", func() bool { return p.Status().Ready == 3 })
	sb, ok := p.Take("t1")
	if !ok {
		t.Fatal("Take failed with 3 ready")
	}
	cancel()
	<-done
	live := fn.liveIDs()
	if len(live) != 1 || !live[sb.ID] {
		t.Errorf("after stop attached: %v, want only the handed-out %s", live, sb.ID)
	}
}

// TestPoolRecycleStaysWithTenant: a recycled sandbox goes only to its
// tenant's next Take, another tenant gets a fresh one, and one unused for
// a window is destroyed.
func TestPoolRecycleStaysWithTenant(t *testing.T) {
	fn := newFakeNetwork()
	p, clk, taken := startPool(t, fn, fill.Policy{Min: 1, Max: 2, Window: 30 * time.Second})
	eventually(t, "1 ready", func() bool { return p.Status().Ready == 1 })

	sb, ok := p.Take("a")
	if !ok {
		t.Fatal("no sandbox for a")
	}
	if !p.Recycle("a", sb) {
		t.Fatal("the pool refused a recycled sandbox")
	}
	eventually(t, "refilled", func() bool { return p.Status().Ready == 1 })
	other, ok := p.Take("b")
	if !ok || other.ID == sb.ID {
		t.Fatalf("tenant b got %q (ok %v); a's recycled sandbox is %s", other.ID, ok, sb.ID)
	}
	taken[other.ID] = true
	again, ok := p.Take("a")
	if !ok || again.ID != sb.ID || again.IP != sb.IP {
		t.Fatalf("tenant a got %+v, want its recycled %+v", again, sb)
	}
	if st := p.Status(); st.Reused != 1 || st.Recycled != 0 || st.Hits != 3 {
		t.Errorf("status %+v: want 1 reused of 3 hits, none left recycled", st)
	}

	if !p.Recycle("a", again) {
		t.Fatal("the pool refused a recycled sandbox")
	}
	clk.advance(31 * time.Second)
	p.filler.Poke()
	eventually(t, "the unused recycled sandbox destroyed", func() bool {
		return !fn.liveIDs()[sb.ID] && p.Status().Recycled == 0
	})
}

// TestPoolForget: a deleted tenant's recycled sandboxes are torn down
// next, not kept for its name.
func TestPoolForget(t *testing.T) {
	fn := newFakeNetwork()
	p, _, taken := startPool(t, fn, fill.Policy{Min: 1, Max: 3, Window: time.Hour})
	eventually(t, "1 ready", func() bool { return p.Status().Ready == 1 })
	sa, _ := p.Take("a")
	eventually(t, "refilled", func() bool { return p.Status().Ready >= 1 })
	sb, _ := p.Take("b")
	p.Recycle("a", sa)
	p.Recycle("b", sb)
	p.Forget("a")
	eventually(t, "a's recycled sandbox destroyed", func() bool { return !fn.liveIDs()[sa.ID] })
	if st := p.Status(); st.Recycled != 1 || !fn.liveIDs()[sb.ID] {
		t.Fatalf("status %+v: b's recycled sandbox must stay", st)
	}
	got, ok := p.Take("b")
	if !ok || got.ID != sb.ID {
		t.Fatalf("b got %+v, want its recycled %s", got, sb.ID)
	}
	taken[got.ID] = true
}
