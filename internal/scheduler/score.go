package scheduler

// A host's score is the weighted sum of scores that each lie in [0, 1]:
//
//	WeightResources  * resources   (bin-pack or spread, below)
//	WeightImages     * images      (share of the request's images present)
//	WeightHostSpread * host spread (only with Policy.TenantSpread)
//	WeightZoneSpread * zone spread (only with Policy.TenantSpread)
//
// The host spread weight is larger than the resource and image weights put
// together: a host holding the fewest of the tenant's instances beats one
// holding the most whatever their load and images, so bin-packing does not
// undo the spreading a tenant asked for. (Spread scores are normalised
// between the fewest and the most, as kube-scheduler does, so for counts in
// between load can still tip the balance; while a tenant has fewer
// instances than hosts, counts are 0 or 1 and spreading is strict.) Zone
// spread weighs less than host spread: load being equal, a fresh host in a
// busy zone is preferred to a busy host in a fresh zone.
const (
	WeightResources  = 1.0
	WeightImages     = 0.5
	WeightHostSpread = 3.0
	WeightZoneSpread = 2.0

	// Within the resource score, CPU and memory utilisation are averaged
	// with these weights; pids and bandwidth are filtered on but not
	// scored, as they are rarely what runs out.
	WeightCPU    = 1.0
	WeightMemory = 1.0
)

// resourceScore is the weighted utilisation of CPU and memory on host i
// once r is placed there: higher is fuller. BinPack returns it, Spread its
// complement, so that each prefers what its name says.
func (s *state) resourceScore(i int, r *Request, mode Mode) float64 {
	nd := &s.nodes[i]
	u := (WeightCPU*utilisation(nd.free.MilliCPU-r.Resources.MilliCPU, nd.invCPU) +
		WeightMemory*utilisation(nd.free.Memory-r.Resources.Memory, nd.invMemory)) /
		(WeightCPU + WeightMemory)
	if mode == Spread {
		return 1 - u
	}
	return u
}

// utilisation is 1 - free/capacity, given 1/capacity, clamped to [0, 1]; a
// host with no capacity (inverse 0) counts as full.
func utilisation(free int64, invCapacity float64) float64 {
	if invCapacity == 0 {
		return 1
	}
	// Comparisons rather than min and max, whose NaN handling costs a
	// measurable share of the hot loop.
	u := 1 - float64(free)*invCapacity
	if u < 0 {
		return 0
	}
	if u > 1 {
		return 1
	}
	return u
}

// fewer scores an instance count n between the smallest and largest count
// among the candidates: 1 for the fewest, 0 for the most, linear between,
// as kube-scheduler normalises its topology spread score. With one count
// for all, every candidate scores 1.
func fewer(n, lo, hi int32) float64 {
	if hi == lo {
		return 1
	}
	return float64(hi-n) / float64(hi-lo)
}
