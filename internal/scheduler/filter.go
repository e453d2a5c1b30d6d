package scheduler

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
)

// reason is the first filter a host failed for a request.
type reason uint8

const (
	fits reason = iota
	notVolumeHost
	notReady
	cordoned
	runtimeClassNotOffered
	missingCapability
	selectorMismatch
	hostPortInUse
	insufficientCPU
	insufficientMemory
	insufficientPids
	insufficientBandwidth
	insufficientDisk
	insufficientDedicated
	insufficientDevice
	tooManyInstances
	numReasons
)

// reasonText is the text of every reason but the three that name what is
// missing (runtime class, capability and host port), which unplacedReason
// builds.
var reasonText = [numReasons]string{
	notVolumeHost:         NotVolumeHost,
	notReady:              "not ready",
	cordoned:              "cordoned",
	selectorMismatch:      "selector mismatch",
	insufficientCPU:       "insufficient cpu",
	insufficientMemory:    "insufficient memory",
	insufficientPids:      "insufficient pids",
	insufficientBandwidth: "insufficient bandwidth",
	insufficientDisk:      "insufficient disk",
	insufficientDedicated: "insufficient dedicated cores",
	tooManyInstances:      "too many instances",
}

// NotVolumeHost is the filter a host fails when the request is bound to
// another host (Request.Host).
const NotVolumeHost = "not the host of the instance's volumes"

// label is one selector term.
type label struct{ key, value string }

// need is a request's host constraints as masks over the state's bits.
// slow is set when one of its terms got no bit (more than 64 distinct terms
// in one call); the filter then checks the Host itself.
type need struct {
	class, caps, labels uint64
	slow                bool
}

// compile turns r's runtime class, capabilities and selector into a need.
func (s *state) compile(r *Request) need {
	var nd need
	if r.RuntimeClass != "" {
		nd.class = s.classBits.m[r.RuntimeClass]
		nd.slow = nd.class == 0
	}
	for _, c := range r.Requires {
		b := s.capBits.m[c]
		nd.caps |= b
		nd.slow = nd.slow || b == 0
	}
	for k, v := range r.Selector {
		b := s.labelBits.m[label{k, v}]
		nd.labels |= b
		nd.slow = nd.slow || b == 0
	}
	return nd
}

// filter returns why host i cannot run r, or fits. The order of the checks
// is the order of the reasons above, which fixes the reason a host failing
// several filters is counted under. idx is the index in r.Requires of the
// missing capability, or in r.Ports of the port in use.
func (s *state) filter(i int, r *Request, need *need) (why reason, idx int) {
	nd := &s.nodes[i]
	// First, so that the volumes' host's own reason is the one reported.
	if r.Host != "" && s.hosts[i].Name != r.Host {
		return notVolumeHost, 0
	}
	if nd.unavailable != fits {
		return nd.unavailable, 0
	}
	if need.slow {
		if why, j := s.filterTerms(i, r); why != fits {
			return why, j
		}
	} else {
		switch {
		case nd.classes&need.class != need.class:
			return runtimeClassNotOffered, 0
		case nd.caps&need.caps != need.caps:
			return missingCapability, s.missingCapability(i, r)
		case nd.labels&need.labels != need.labels:
			return selectorMismatch, 0
		}
	}
	if len(r.Ports) > 0 {
		if j := s.portInUse(i, r); j >= 0 {
			return hostPortInUse, j
		}
	}
	free, want := &nd.free, &r.Resources
	// A request asking for none of a resource fits even an over-committed
	// host (after a capacity shrink), whose free amount is negative.
	switch {
	case want.MilliCPU > 0 && want.MilliCPU > free.MilliCPU:
		return insufficientCPU, 0
	case want.Memory > 0 && want.Memory > free.Memory:
		return insufficientMemory, 0
	case want.Pids > 0 && want.Pids > free.Pids:
		return insufficientPids, 0
	case want.BandwidthBPS > 0 && want.BandwidthBPS > free.BandwidthBPS:
		return insufficientBandwidth, 0
	case want.Disk > 0 && want.Disk > free.Disk:
		return insufficientDisk, 0
	case r.DedicatedCores > 0 && r.DedicatedCores > nd.dedicatedFree:
		return insufficientDedicated, 0
	}
	if len(r.Devices) > 0 {
		if j, _ := s.devicesFit(i, r); j >= 0 {
			return insufficientDevice, j
		}
	}
	if want.Instances > 0 && want.Instances > free.Instances {
		return tooManyInstances, 0
	}
	return fits, 0
}

// filterTerms is the runtime class, capability and selector filter the
// slow way, on the Host, for requests with a term that got no bit.
func (s *state) filterTerms(i int, r *Request) (why reason, capIdx int) {
	h := s.hosts[i]
	if r.RuntimeClass != "" && !slices.Contains(h.RuntimeClasses, r.RuntimeClass) {
		return runtimeClassNotOffered, 0
	}
	if j := s.missingCapability(i, r); j >= 0 {
		return missingCapability, j
	}
	for k, v := range r.Selector {
		if hv, ok := h.Labels[k]; !ok || hv != v {
			return selectorMismatch, 0
		}
	}
	return fits, 0
}

// missingCapability returns the index in r.Requires of the first
// capability host i lacks, or -1.
func (s *state) missingCapability(i int, r *Request) int {
	for j, c := range r.Requires {
		if !slices.Contains(s.hosts[i].Capabilities, c) {
			return j
		}
	}
	return -1
}

// portKey is a host port without its address.
type portKey struct {
	port  int
	proto string
}

// portInUse returns the index in r.Ports of the first port that an
// instance on host i (or placed there by this call) already publishes, or
// -1. The same port and protocol conflict on the same address, and on any
// address when either side publishes on every address.
func (s *state) portInUse(i int, r *Request) int {
	used := s.ports[int32(i)]
	if len(used) == 0 {
		return -1
	}
	for j, p := range r.Ports {
		for _, ip := range used[portKey{p.Port, p.Protocol}] {
			if ip == "" || p.IP == "" || ip == p.IP {
				return j
			}
		}
	}
	return -1
}

// usePorts records that host i now publishes ports.
func (s *state) usePorts(i int32, ports []HostPort) {
	if len(ports) == 0 {
		return
	}
	if s.ports == nil {
		s.ports = make(map[int32]map[portKey][]string)
	}
	m := s.ports[i]
	if m == nil {
		m = map[portKey][]string{}
		s.ports[i] = m
	}
	for _, p := range ports {
		k := portKey{p.Port, p.Protocol}
		m[k] = append(m[k], p.IP)
	}
}

// unplacedReason formats the per-filter counts the way kube-scheduler does:
// "0/5 hosts available: 3 insufficient memory, 2 runtime class gvisor not
// offered." Counts are sorted by count, largest first, then by text, so the
// message is stable.
func unplacedReason(total int, r *Request, counts *[numReasons]int, capCounts, portCounts, devCounts []int) (string, []string) {
	type item struct {
		n    int
		text string
	}
	var items []item
	for why, n := range counts {
		if n == 0 {
			continue
		}
		switch reason(why) {
		case runtimeClassNotOffered:
			items = append(items, item{n, fmt.Sprintf("runtime class %s not offered", r.RuntimeClass)})
		case missingCapability:
			for j, m := range capCounts {
				if m > 0 {
					items = append(items, item{m, "missing capability " + r.Requires[j]})
				}
			}
		case hostPortInUse:
			for j, m := range portCounts {
				if m > 0 {
					items = append(items, item{m, "host port " + r.Ports[j].String() + " in use"})
				}
			}
		case insufficientDevice:
			for j, m := range devCounts {
				if m > 0 {
					items = append(items, item{m, deviceText(r.Devices[j])})
				}
			}
		default:
			items = append(items, item{n, reasonText[why]})
		}
	}
	// Two capabilities of the same name would give two items with one text;
	// merge them so that each text appears once.
	slices.SortFunc(items, func(a, b item) int { return strings.Compare(a.text, b.text) })
	merged := items[:0]
	for _, it := range items {
		if k := len(merged) - 1; k >= 0 && merged[k].text == it.text {
			merged[k].n += it.n
			continue
		}
		merged = append(merged, it)
	}
	slices.SortStableFunc(merged, func(a, b item) int { return cmp.Compare(b.n, a.n) })

	var sb strings.Builder
	if r.Host != "" {
		// Say where the instance must go, and, when that host is there,
		// what keeps it from going: the counts below say which.
		seen := counts[notVolumeHost] < total
		if seen {
			fmt.Fprintf(&sb, "the instance's volumes are on host %s, which cannot take it now; ", r.Host)
		} else {
			fmt.Fprintf(&sb, "the instance's volumes are on host %s, which is not a known host now (removed or never registered); ", r.Host)
		}
	}
	fmt.Fprintf(&sb, "0/%d hosts available", total)
	filters := make([]string, 0, len(merged))
	for k, it := range merged {
		filters = append(filters, it.text)
		if k == 0 {
			sb.WriteString(": ")
		} else {
			sb.WriteString(", ")
		}
		fmt.Fprintf(&sb, "%d %s", it.n, it.text)
	}
	sb.WriteByte('.')
	return sb.String(), filters
}
