package scheduler

import (
	"fmt"
	"slices"
	"strings"
)

// state is Schedule's working copy: the hosts in name order and everything
// that changes as requests are placed. The snapshot itself is only read.
type state struct {
	hosts []*Host // sorted by name: the lowest index wins a tie
	nodes []node  // what the hot loop reads, by the same index

	// Bits for the runtime classes, capabilities and selector terms the
	// pending requests ask for, so that most filters are a mask test.
	classBits bits[string]
	capBits   bits[string]
	labelBits bits[label]

	zones int

	// imageHosts lists, for each image a pending request runs, the hosts
	// that have it (each once).
	imageHosts map[string][]int32

	// ports are the host ports published on each host, by port and
	// protocol, with the addresses; sparse because most hosts publish none.
	ports map[int32]map[portKey][]string

	// Instances per spread key, per host and per zone; sparse because most
	// keys sit on few hosts.
	onHost map[string]map[int32]int32
	inZone map[string]map[int32]int32

	// Scratch space reused across requests; dense per host or zone and
	// zeroed again after each request.
	imageHits []int32
	hostCount []int32
	zoneCount []int32
	cand      []candidate
}

// node is the per-host data the filter and score loop reads, packed
// densely rather than reached through *Host and its maps: a placement
// looks at every host, and this loop is where Schedule spends its time.
type node struct {
	// free is capacity minus allocations, this call's placements included;
	// negative on an over-committed host.
	free          Resources
	dedicatedFree int
	dev           *devState
	// 1/capacity of CPU and memory, 0 for none: the resource score
	// multiplies rather than divides.
	invCPU, invMemory float64
	// The requested classes, capabilities and selector terms the host has.
	classes, caps, labels uint64
	zone                  int32 // -1 without a zone label
	// unavailable is notReady, cordoned or fits.
	unavailable reason
}

// bits numbers up to 64 distinct values. Values beyond the 64th get no bit
// (0) and are checked against the Host the slow way.
type bits[K comparable] struct {
	m map[K]uint64
	n int
}

func (b *bits[K]) add(k K) {
	if b.m == nil {
		b.m = make(map[K]uint64)
	}
	if _, ok := b.m[k]; ok {
		return
	}
	var bit uint64
	if b.n < 64 {
		bit = 1 << b.n
		b.n++
	}
	b.m[k] = bit
}

// candidate is a host that passed the filters.
type candidate struct {
	host int32
	base float64 // weighted resource and image scores
	// Instances of the request's spread key on the host and in its zone (a
	// host without a zone is a zone of its own).
	onHost, inZone int32
}

// Schedule places pending on the hosts of snap under policy. It is
// deterministic and does not modify snap or pending; see the package
// documentation for the algorithm.
func Schedule(snap Snapshot, pending []Request, policy Policy) Plan {
	s := newState(snap, pending)
	plan := Plan{Placements: make([]Placement, 0, len(pending))}
	for k := range pending {
		r := &pending[k]
		host, why, filters := s.place(r, policy)
		if host < 0 {
			plan.Unplaced = append(plan.Unplaced, Unplaced{ID: r.ID, Reason: why, Filters: filters})
			continue
		}
		plan.Placements = append(plan.Placements, Placement{
			ID: r.ID, Tenant: r.Tenant, SpreadKey: r.SpreadKey, Host: s.hosts[host].Name,
		})
	}
	return plan
}

func newState(snap Snapshot, pending []Request) *state {
	n := len(snap.Hosts)
	s := &state{
		hosts:      make([]*Host, n),
		nodes:      make([]node, n),
		imageHosts: make(map[string][]int32),
		onHost:     make(map[string]map[int32]int32),
		inZone:     make(map[string]map[int32]int32),
		imageHits:  make([]int32, n),
		hostCount:  make([]int32, n),
		cand:       make([]candidate, 0, n),
	}
	for i := range snap.Hosts {
		s.hosts[i] = &snap.Hosts[i]
	}
	// Stable, so that hosts sharing a name (a broken snapshot) still come
	// out in one order for one input. Callers usually keep their hosts in
	// name order already; checking is O(hosts), sorting is not.
	byName := func(a, b *Host) int { return strings.Compare(a.Name, b.Name) }
	if !slices.IsSortedFunc(s.hosts, byName) {
		slices.SortStableFunc(s.hosts, byName)
	}

	for k := range pending {
		r := &pending[k]
		if r.RuntimeClass != "" {
			s.classBits.add(r.RuntimeClass)
		}
		for _, c := range r.Requires {
			s.capBits.add(c)
		}
		for k, v := range r.Selector {
			s.labelBits.add(label{k, v})
		}
		for _, img := range r.Images {
			s.imageHosts[img] = nil
		}
	}

	zoneIDs := make(map[string]int32)
	for i, h := range s.hosts {
		nd := &s.nodes[i]
		nd.free = Resources{
			MilliCPU:     h.Capacity.MilliCPU - h.Allocated.MilliCPU,
			Memory:       h.Capacity.Memory - h.Allocated.Memory,
			Pids:         h.Capacity.Pids - h.Allocated.Pids,
			BandwidthBPS: h.Capacity.BandwidthBPS - h.Allocated.BandwidthBPS,
			Disk:         h.Capacity.Disk - h.Allocated.Disk,
			Instances:    h.Capacity.Instances - h.Allocated.Instances,
		}
		nd.dedicatedFree = h.DedicatedFree
		nd.dev = newDevState(h.Devices)
		if h.Capacity.MilliCPU > 0 {
			nd.invCPU = 1 / float64(h.Capacity.MilliCPU)
		}
		if h.Capacity.Memory > 0 {
			nd.invMemory = 1 / float64(h.Capacity.Memory)
		}
		switch {
		case !h.Ready:
			nd.unavailable = notReady
		case h.Cordoned:
			nd.unavailable = cordoned
		}
		for _, c := range h.RuntimeClasses {
			nd.classes |= s.classBits.m[c]
		}
		for _, c := range h.Capabilities {
			nd.caps |= s.capBits.m[c]
		}
		if s.labelBits.n > 0 {
			for k, v := range h.Labels {
				nd.labels |= s.labelBits.m[label{k, v}]
			}
		}
		if len(h.Ports) > 0 {
			s.usePorts(int32(i), h.Ports)
		}
		nd.zone = -1
		if z, ok := h.Labels[ZoneLabel]; ok {
			id, seen := zoneIDs[z]
			if !seen {
				id = int32(len(zoneIDs))
				zoneIDs[z] = id
			}
			nd.zone = id
		}
		for _, img := range h.Images {
			l, wanted := s.imageHosts[img]
			if !wanted {
				continue // no pending request runs it
			}
			if len(l) > 0 && l[len(l)-1] == int32(i) {
				continue // listed twice by the host
			}
			s.imageHosts[img] = append(l, int32(i))
		}
	}
	s.zones = len(zoneIDs)
	s.zoneCount = make([]int32, s.zones)

	for _, p := range snap.Existing {
		if i, ok := s.lookup(p.Host); ok {
			s.count(spreadKey(p.SpreadKey, p.Tenant), i, 1)
		}
	}
	for key, hosts := range snap.Counts {
		for host, n := range hosts {
			if i, ok := s.lookup(host); ok && n > 0 {
				s.count(key, i, int32(n))
			}
		}
	}
	return s
}

// lookup finds the host named name (the first of that name), by binary
// search: a map of all hosts would cost O(hosts) to build on every call.
func (s *state) lookup(name string) (int32, bool) {
	i, ok := slices.BinarySearchFunc(s.hosts, name, func(h *Host, n string) int { return strings.Compare(h.Name, n) })
	return int32(i), ok
}

func spreadKey(key, tenant string) string {
	if key != "" {
		return key
	}
	return tenant
}

// count records n more instances of key on host i.
func (s *state) count(key string, i int32, n int32) {
	if key == "" {
		return
	}
	m := s.onHost[key]
	if m == nil {
		m = make(map[int32]int32)
		s.onHost[key] = m
	}
	m[i] += n
	if z := s.nodes[i].zone; z >= 0 {
		m := s.inZone[key]
		if m == nil {
			m = make(map[int32]int32)
			s.inZone[key] = m
		}
		m[z] += n
	}
}

// place picks a host for r and charges r to it. It returns the host's
// index, or -1 and the reason r fits nowhere.
func (s *state) place(r *Request, policy Policy) (int, string, []string) {
	mode := r.Mode
	if mode == "" {
		mode = policy.Mode
	}
	if mode == "" {
		mode = BinPack
	}
	if mode != BinPack && mode != Spread {
		return -1, fmt.Sprintf("unknown scheduling mode %q", mode), nil
	}
	if err := validate(r); err != "" {
		return -1, "invalid request: " + err, nil
	}

	need := s.compile(r)

	// Images: count, per host, how many of the request's distinct images
	// it has, touching only the hosts that have one.
	images := 0
	for j, img := range r.Images {
		if slices.Contains(r.Images[:j], img) {
			continue
		}
		images++
		for _, i := range s.imageHosts[img] {
			s.imageHits[i]++
		}
	}
	defer func() {
		for _, img := range r.Images {
			for _, i := range s.imageHosts[img] {
				s.imageHits[i] = 0
			}
		}
	}()

	key := ""
	if policy.TenantSpread {
		key = spreadKey(r.SpreadKey, r.Tenant)
	}
	if key != "" {
		for i, n := range s.onHost[key] {
			s.hostCount[i] = n
		}
		for z, n := range s.inZone[key] {
			s.zoneCount[z] = n
		}
		defer func() {
			for i := range s.onHost[key] {
				s.hostCount[i] = 0
			}
			for z := range s.inZone[key] {
				s.zoneCount[z] = 0
			}
		}()
	}

	var fails [numReasons]int
	var capFails, portFails, devFails []int
	if len(r.Requires) > 0 {
		capFails = make([]int, len(r.Requires))
	}
	if len(r.Ports) > 0 {
		portFails = make([]int, len(r.Ports))
	}
	if len(r.Devices) > 0 {
		devFails = make([]int, len(r.Devices))
	}
	s.cand = s.cand[:0]
	var minHost, maxHost, minZone, maxZone int32
	n, start := len(s.hosts), 0
	if policy.MaxCandidates > 0 && n > 0 {
		start = int(fnv32a(r.ID) % uint32(n))
	}
	for k := range n {
		i := start + k
		if i >= n {
			i -= n
		}
		if policy.MaxCandidates > 0 && len(s.cand) == policy.MaxCandidates {
			break
		}
		why, idx := s.filter(i, r, &need)
		if why != fits {
			fails[why]++
			switch why {
			case missingCapability:
				capFails[idx]++
			case hostPortInUse:
				portFails[idx]++
			case insufficientDevice:
				devFails[idx]++
			}
			continue
		}
		c := candidate{
			host:   int32(i),
			base:   WeightResources * s.resourceScore(i, r, mode),
			onHost: s.hostCount[i],
		}
		if images > 0 {
			c.base += WeightImages * float64(s.imageHits[i]) / float64(images)
		}
		c.inZone = c.onHost
		if z := s.nodes[i].zone; z >= 0 {
			c.inZone = s.zoneCount[z]
		}
		if len(s.cand) == 0 {
			minHost, maxHost, minZone, maxZone = c.onHost, c.onHost, c.inZone, c.inZone
		} else {
			minHost, maxHost = min(minHost, c.onHost), max(maxHost, c.onHost)
			minZone, maxZone = min(minZone, c.inZone), max(maxZone, c.inZone)
		}
		s.cand = append(s.cand, c)
	}
	if len(s.cand) == 0 {
		why, filters := unplacedReason(len(s.hosts), r, &fails, capFails, portFails, devFails)
		return -1, why, filters
	}

	best, bestScore := -1, 0.0
	for _, c := range s.cand {
		score := c.base
		if key != "" {
			score += WeightHostSpread*fewer(c.onHost, minHost, maxHost) +
				WeightZoneSpread*fewer(c.inZone, minZone, maxZone)
		}
		// Hosts are numbered in name order: of equal scores, the smallest
		// name wins.
		if best < 0 || score > bestScore || (score == bestScore && int(c.host) < best) {
			best, bestScore = int(c.host), score
		}
	}

	nd := &s.nodes[best]
	nd.free = Resources{
		MilliCPU:     nd.free.MilliCPU - r.Resources.MilliCPU,
		Memory:       nd.free.Memory - r.Resources.Memory,
		Pids:         nd.free.Pids - r.Resources.Pids,
		BandwidthBPS: nd.free.BandwidthBPS - r.Resources.BandwidthBPS,
		Disk:         nd.free.Disk - r.Resources.Disk,
		Instances:    nd.free.Instances - r.Resources.Instances,
	}
	nd.dedicatedFree -= r.DedicatedCores
	s.useDevices(best, r)
	s.usePorts(int32(best), r.Ports)
	// The deferred clean-up reads s.onHost[key]; counting first makes it
	// also clear the entry this placement may have added.
	s.count(spreadKey(r.SpreadKey, r.Tenant), int32(best), 1)
	return best, "", nil
}

// fnv32a is FNV-1a, written out because hash/fnv's interface value would
// cost an allocation per request.
func fnv32a(s string) uint32 {
	h := uint32(2166136261)
	for i := 0; i < len(s); i++ {
		h ^= uint32(s[i])
		h *= 16777619
	}
	return h
}

// validate returns what is wrong with r, or "".
func validate(r *Request) string {
	switch {
	case r.Resources.MilliCPU < 0:
		return "negative cpu"
	case r.Resources.Memory < 0:
		return "negative memory"
	case r.Resources.Pids < 0:
		return "negative pids"
	case r.Resources.BandwidthBPS < 0:
		return "negative bandwidth"
	case r.Resources.Disk < 0:
		return "negative disk"
	case r.Resources.Instances < 0:
		return "negative instance count"
	case r.DedicatedCores < 0:
		return "negative dedicated cores"
	}
	for _, d := range r.Devices {
		if d.Kind == "" || (d.Name == "" && d.Count < 1) {
			return "device request without a kind or count"
		}
	}
	return ""
}
