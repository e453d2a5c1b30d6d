package fill

import (
	"testing"
	"time"
)

func TestPolicyTarget(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	p := Policy{Min: 2, Max: 16}.WithDefaults()
	// burst returns n creates spread evenly over d, ending at now-ago.
	burst := func(n int, d, ago time.Duration) []time.Time {
		var ts []time.Time
		for i := 0; i < n; i++ {
			ts = append(ts, now.Add(-ago-d+time.Duration(i)*d/time.Duration(n)))
		}
		return ts
	}
	tests := []struct {
		name    string
		policy  Policy
		creates []time.Time
		refill  time.Duration
		want    int
	}{
		{"no creates: min", p, nil, 100 * time.Millisecond, 2},
		{"one create: min", p, burst(1, time.Second, 0), 100 * time.Millisecond, 2},
		{"steady 1/s: min", p, burst(30, 30*time.Second, 0), 100 * time.Millisecond, 2},
		{"burst of 8 in one second grows to 8", p, burst(8, 900*time.Millisecond, 0), 100 * time.Millisecond, 8},
		{"burst of 40 in one second hits max", p, burst(40, 900*time.Millisecond, 0), 100 * time.Millisecond, 16},
		{"steady 10/s with slow refill: rate term", p, burst(300, 30*time.Second, 0), 400 * time.Millisecond, 10},
		{"burst older than the window: idle, back to min", p, burst(40, 900*time.Millisecond, 31*time.Second), 100 * time.Millisecond, 2},
		{"burst half a window ago still counts", p, burst(8, 900*time.Millisecond, 15*time.Second), 100 * time.Millisecond, 8},
		{"max 0: off", Policy{Max: 0}.WithDefaults(), burst(8, time.Second, 0), 100 * time.Millisecond, 0},
		{"min above max is clamped", Policy{Min: 5, Max: 3}.WithDefaults(), nil, 100 * time.Millisecond, 3},
		{"min 0 idles empty", Policy{Min: 0, Max: 4}.WithDefaults(), nil, 100 * time.Millisecond, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.policy.Target(now, tt.creates, tt.refill); got != tt.want {
				t.Errorf("Target = %d, want %d", got, tt.want)
			}
		})
	}
}

func TestPolicyDefaults(t *testing.T) {
	p := Policy{Min: -1, Max: -1}.WithDefaults()
	if p.Min != DefaultMin || p.Max != DefaultMax || p.Window != DefaultWindow || p.Safety != DefaultSafety || p.Parallel != DefaultParallel {
		t.Errorf("defaults: %+v", p)
	}
}
