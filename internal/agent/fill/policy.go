package fill

import (
	"math"
	"slices"
	"time"
)

// Policy decides how many ready things a pool keeps; it is written in
// terms of the network sandbox pool (package pool), whose defaults these
// are. It is the one place to read (and tune) the pools' sizing:
//
//	rate    = creates in the last Window / Window
//	demand  = max(rate × refill latency × Safety, busiest second in Window)
//	target  = clamp(ceil(demand), Min, Max)
//	target  = Min once Window passes without a create (idle)
//	target  = Max for one Window after Expect (an announced burst)
//
// The first term is Little's law: while the filler makes one sandbox,
// rate × refill creates arrive and each needs one ready. The second covers
// bursts, which the first averages away: the filler adds at most
// Parallel sandboxes per refill latency (about 10 a second here, fewer
// under load), so a second with k creates in it drains k from the pool.
// Both are sized from the recent past on the bet that a host's next burst
// looks like its last one. A burst after a quiet Window finds only Min
// ready; one announced ahead (kanga image prewarm calls Expect) finds up
// to Max.
//
// Warm containers (package warm) use the same Policy per key (tenant,
// image, runtime class), with two differences: a key with no create in
// the last Window keeps none (Min applies only while the key is in use:
// a warm container serves one tenant's image only and holds a shim of
// about 10 MB plus its holder), and all keys together keep at most
// warm.Config.Total (default 8; per key Max default 4, Min 1). The first
// create of a key is always a miss: it is what makes the key known.
type Policy struct {
	// Min sandboxes stay ready even when idle, so a lone create never pays
	// for the network setup. Default 2: one taken while the next refills.
	Min int
	// Max caps the pool. Each ready sandbox holds an address of the
	// subnet, a veth pair and the bridge plugin's NAT chain (every
	// iptables call on the host gets a bit slower per chain). Default 16:
	// the creates this 2-core host starts in one to two seconds at the
	// rate it reaches today (about 10 a second with 4 in flight).
	// 0 turns the pool off.
	Max int
	// Window is how far back creates are counted, and how long the host
	// must be idle before the pool shrinks back to Min. Default 30 s.
	Window time.Duration
	// Safety multiplies the steady-state term. Default 2.
	Safety float64
	// Parallel is how many sandboxes the filler sets up at once. Default
	// 1: CNI ADD runs plugin processes and iptables, and on 2 cores a
	// second filler competes with the request path, which still does
	// its own ADD for instances the pool does not serve.
	Parallel int
}

// Defaults of the zero fields.
const (
	DefaultMin      = 2
	DefaultMax      = 16
	DefaultWindow   = 30 * time.Second
	DefaultSafety   = 2.0
	DefaultParallel = 1
)

// WithDefaults fills the zero fields. Max < 0 means "default"; 0 is off.
func (p Policy) WithDefaults() Policy {
	if p.Max < 0 {
		p.Max = DefaultMax
	}
	if p.Min < 0 {
		p.Min = DefaultMin
	}
	if p.Min > p.Max {
		p.Min = p.Max
	}
	if p.Window <= 0 {
		p.Window = DefaultWindow
	}
	if p.Safety <= 0 {
		p.Safety = DefaultSafety
	}
	if p.Parallel <= 0 {
		p.Parallel = DefaultParallel
	}
	return p
}

// Target is the number of ready sandboxes to keep at now, given the times
// of recent creates (any order; older than Window are ignored) and how
// long one sandbox takes to set up.
func (p Policy) Target(now time.Time, creates []time.Time, refill time.Duration) int {
	if p.Max <= 0 {
		return 0
	}
	from := now.Add(-p.Window)
	var in []time.Time
	for _, t := range creates {
		if !t.Before(from) && !t.After(now) {
			in = append(in, t)
		}
	}
	if len(in) == 0 {
		return p.Min // idle for a whole window
	}
	// The busiest second: the most creates in any sliding one-second span.
	slices.SortFunc(in, time.Time.Compare)
	peak := 0
	for i, j := 0, 0; j < len(in); j++ {
		for in[j].Sub(in[i]) >= time.Second {
			i++
		}
		peak = max(peak, j-i+1)
	}
	rate := float64(len(in)) / p.Window.Seconds()
	demand := max(rate*refill.Seconds()*p.Safety, float64(peak))
	return min(max(int(math.Ceil(demand)), p.Min), p.Max)
}
