package bench

import (
	"slices"
	"testing"
	"time"
)

func ms_(v ...int) []time.Duration {
	out := make([]time.Duration, len(v))
	for i, x := range v {
		out[i] = time.Duration(x) * time.Millisecond
	}
	return out
}

func TestPercentile(t *testing.T) {
	oneToTen := ms_(7, 3, 10, 1, 5, 2, 9, 4, 8, 6) // unsorted on purpose
	tests := []struct {
		name    string
		samples []time.Duration
		p       float64
		want    time.Duration
	}{
		{"empty", nil, 50, 0},
		{"single p50", ms_(42), 50, 42 * time.Millisecond},
		{"single p99", ms_(42), 99, 42 * time.Millisecond},
		{"p50 of 10", oneToTen, 50, 5 * time.Millisecond},
		{"p90 of 10", oneToTen, 90, 9 * time.Millisecond},
		{"p99 of 10", oneToTen, 99, 10 * time.Millisecond},
		{"p100 is max", oneToTen, 100, 10 * time.Millisecond},
		{"p0 is min", oneToTen, 0, 1 * time.Millisecond},
		{"p50 of 2 takes the lower", ms_(20, 10), 50, 10 * time.Millisecond},
		{"p50 of 3", ms_(30, 10, 20), 50, 20 * time.Millisecond},
		{"p90 of 20", ms_(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20), 90, 18 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := slices.Clone(tt.samples)
			if got := Percentile(tt.samples, tt.p); got != tt.want {
				t.Errorf("Percentile(p=%v) = %v, want %v", tt.p, got, tt.want)
			}
			if !slices.Equal(before, tt.samples) {
				t.Errorf("Percentile reordered its input: %v -> %v", before, tt.samples)
			}
		})
	}
}

func TestRatio(t *testing.T) {
	tests := []struct {
		a, b time.Duration
		want float64
	}{
		{300 * time.Millisecond, 30 * time.Millisecond, 10},
		{30 * time.Millisecond, 30 * time.Millisecond, 1},
		{15 * time.Millisecond, 30 * time.Millisecond, 0.5},
		{30 * time.Millisecond, 0, 0}, // no baseline, no ratio
	}
	for _, tt := range tests {
		if got := Ratio(tt.a, tt.b); got != tt.want {
			t.Errorf("Ratio(%v, %v) = %v, want %v", tt.a, tt.b, got, tt.want)
		}
	}
}

func TestPerMinute(t *testing.T) {
	tests := []struct {
		ok   int
		wall time.Duration
		want float64
	}{
		{20, time.Minute, 20},
		{20, 30 * time.Second, 40},
		{1, 100 * time.Millisecond, 600},
		{0, time.Second, 0},
		{5, 0, 0},
	}
	for _, tt := range tests {
		if got := PerMinute(tt.ok, tt.wall); got != tt.want {
			t.Errorf("PerMinute(%d, %v) = %v, want %v", tt.ok, tt.wall, got, tt.want)
		}
	}
}
