package bench

import (
	"math"
	"slices"
	"time"
)

// Percentile returns the p-th percentile (0 < p <= 100) of samples by the
// nearest-rank method: the smallest sample such that at least p% of the
// samples are no greater. Nearest rank never invents a value between two
// samples, which matters with the 3 to 40 samples a start benchmark takes.
// It returns 0 for no samples. samples need not be sorted.
func Percentile(samples []time.Duration, p float64) time.Duration {
	if len(samples) == 0 {
		return 0
	}
	s := slices.Clone(samples)
	slices.Sort(s)
	return percentileSorted(s, p)
}

func percentileSorted(s []time.Duration, p float64) time.Duration {
	if len(s) == 0 {
		return 0
	}
	switch {
	case p <= 0:
		return s[0]
	case p >= 100:
		return s[len(s)-1]
	}
	rank := int(math.Ceil(p / 100 * float64(len(s))))
	if rank < 1 {
		rank = 1
	}
	return s[rank-1]
}

// Ratio returns a/b, or 0 when b is 0: a path without a baseline has no
// ratio rather than an infinite one.
func Ratio(a, b time.Duration) float64 {
	if b <= 0 {
		return 0
	}
	return float64(a) / float64(b)
}

// PerMinute returns how many starts per minute ok starts in wall time are.
func PerMinute(ok int, wall time.Duration) float64 {
	if wall <= 0 {
		return 0
	}
	return float64(ok) / wall.Minutes()
}
