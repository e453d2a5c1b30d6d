package agent

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/kanga-run/kanga/internal/agent/network"
)

func TestSamplePause(t *testing.T) {
	for _, tt := range []struct {
		round, want time.Duration
	}{
		{0, sampleInterval},
		{10 * time.Millisecond, sampleInterval},
		{50 * time.Millisecond, sampleInterval},
		{150 * time.Millisecond, 3 * time.Second},
		{500 * time.Millisecond, 10 * time.Second},
		{5 * time.Second, maxSampleInterval},
	} {
		if got := samplePause(tt.round); got != tt.want {
			t.Errorf("samplePause(%s) = %s, want %s", tt.round, got, tt.want)
		}
	}
}

// fakeCounterNet is a Network whose host-wide reading is counted: a round
// reads the host's counters once, however many instances it samples.
type fakeCounterNet struct {
	Network
	mu     sync.Mutex
	reads  int
	lookup int
}

func (f *fakeCounterNet) ReadCounters() (*network.Counters, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reads++
	return &network.Counters{At: time.Now()}, nil
}

func (f *fakeCounterNet) StatsFrom(*network.Counters, string) (network.Stats, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lookup++
	return network.Stats{}, nil
}

func (f *fakeCounterNet) Stats(context.Context, string) (network.Stats, error) {
	panic("a round must not read an instance's counters alone")
}

// The sampler runs while something is sampled and ends with the last
// stop; instances without a cgroup are skipped, not fatal.
func TestSamplerRunsWhileSampling(t *testing.T) {
	net := &fakeCounterNet{}
	a := New(Config{HostName: "h", Network: net})
	ctx := context.Background()
	var stops []func()
	for _, uid := range []string{"nocg-a", "nocg-b", "nocg-c"} {
		stops = append(stops, a.startSampling(ctx, uid))
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		net.mu.Lock()
		reads := net.reads
		net.mu.Unlock()
		if reads >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the sampler read the host's counters %d times in 10s, want 2 rounds or more", reads)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, stop := range stops {
		stop()
	}
	for {
		a.sampler.mu.Lock()
		running, n := a.sampler.running, len(a.sampler.entries)
		a.sampler.mu.Unlock()
		if !running && n == 0 {
			break
		}
		if time.Now().After(deadline.Add(10 * time.Second)) {
			t.Fatalf("sampler still running (%v) with %d instances after every stop", running, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if a.histories.get("nocg-a") != nil {
		t.Fatal("stop kept the history")
	}
}
