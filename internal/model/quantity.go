package model

import (
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/kanga-run/kanga/errdefs"
)

// ParseCPU parses a CPU quantity in Kubernetes notation ("0.5", "2",
// "500m") and returns millicores.
func ParseCPU(s string) (int64, error) {
	bad := func(why string) error {
		return fmt.Errorf("cpu %q %s: use a number of cores such as 0.5 or 2, or millicores such as 500m: %w", s, why, errdefs.ErrInvalidArgument)
	}
	t := strings.TrimSpace(s)
	if t == "" {
		return 0, bad("is empty")
	}
	if strings.HasSuffix(t, "m") {
		n, err := strconv.ParseInt(strings.TrimSuffix(t, "m"), 10, 64)
		if err != nil {
			return 0, bad("is not a valid quantity")
		}
		if n <= 0 {
			return 0, bad("must be positive")
		}
		return n, nil
	}
	f, err := strconv.ParseFloat(t, 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, bad("is not a valid quantity")
	}
	if f <= 0 {
		return 0, bad("must be positive")
	}
	m := int64(math.Round(f * 1000))
	if m < 1 {
		return 0, bad("is below 1m")
	}
	return m, nil
}

var memUnits = []struct {
	suffix string
	mult   int64
}{
	// Longest suffixes first so that "Mi" is not read as "M".
	{"Ki", 1 << 10}, {"Mi", 1 << 20}, {"Gi", 1 << 30}, {"Ti", 1 << 40},
	{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12},
	{"K", 1e3}, {"M", 1e6}, {"G", 1e9}, {"T", 1e12},
	// Docker's lower-case units are binary: `docker run -m 256m` is 256 MiB.
	{"kb", 1 << 10}, {"mb", 1 << 20}, {"gb", 1 << 30},
	{"k", 1 << 10}, {"m", 1 << 20}, {"g", 1 << 30}, {"t", 1 << 40},
	{"b", 1}, {"B", 1},
}

// ParseMemory parses a memory quantity ("256Mi", "1Gi", "512M", docker's
// "256m", or plain bytes) and returns bytes.
func ParseMemory(s string) (int64, error) {
	bad := func(why string) error {
		return fmt.Errorf("memory %q %s: use a number with a unit such as 256Mi, 1Gi or 512M: %w", s, why, errdefs.ErrInvalidArgument)
	}
	t := strings.TrimSpace(s)
	if t == "" {
		return 0, bad("is empty")
	}
	mult := int64(1)
	for _, u := range memUnits {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSuffix(t, u.suffix), u.mult
			break
		}
	}
	f, err := strconv.ParseFloat(t, 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, bad("is not a valid quantity")
	}
	if f <= 0 {
		return 0, bad("must be positive")
	}
	v := f * float64(mult)
	if v > math.MaxInt64/2 {
		return 0, bad("is too large")
	}
	return int64(v), nil
}

// ParseBandwidth parses a bit rate the way tc and the Kubernetes
// bandwidth annotations write it: "5M", "5Mbit", "100k", "1G", "5Mi"
// (binary), or plain bits per second. It returns bits per second.
func ParseBandwidth(s string) (int64, error) {
	bad := func(why string) error {
		return fmt.Errorf("bandwidth %q %s: use a bit rate such as 5M, 100Mbit or 500k (bits per second): %w", s, why, errdefs.ErrInvalidArgument)
	}
	t := strings.TrimSpace(s)
	if t == "" {
		return 0, bad("is empty")
	}
	t = strings.TrimSuffix(strings.TrimSuffix(t, "bps"), "bit")
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{
		{"Ki", 1 << 10}, {"Mi", 1 << 20}, {"Gi", 1 << 30},
		{"k", 1e3}, {"K", 1e3}, {"m", 1e6}, {"M", 1e6}, {"g", 1e9}, {"G", 1e9},
	} {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSuffix(t, u.suffix), u.mult
			break
		}
	}
	f, err := strconv.ParseFloat(t, 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, bad("is not a valid rate")
	}
	if f <= 0 {
		return 0, bad("must be positive")
	}
	v := f * float64(mult)
	if v < 8000 {
		return 0, bad("is below 8kbit")
	}
	if v > 100e9 {
		return 0, bad("is above 100Gbit")
	}
	return int64(v), nil
}
