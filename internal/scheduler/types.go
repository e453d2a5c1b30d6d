// Package scheduler decides where pending instances run.
//
// Schedule is a pure function, after Nomad's scheduler: it reads an immutable
// Snapshot of the hosts and returns a Plan. It has no clock, no randomness and
// no I/O, so the same input always gives the same plan (ties are broken by
// host name), and two control-plane replicas computing plans from the same
// snapshot agree. Applying a plan is someone else's job: one writer commits it
// with optimistic concurrency against the store and reschedules what lost
// the race, so the scheduler never needs locks.
//
// For each pending request, in the order given, Schedule
//
//  1. filters out the hosts that cannot run it, counting one reason per
//     host, the first filter it fails, in this order: not ready, cordoned,
//     runtime class, capabilities, selector, host ports, cpu, memory, pids,
//     bandwidth, disk, dedicated cores, devices, instance count;
//  2. scores the hosts left (see the weights in score.go) and picks the
//     highest, the smallest host name winning ties (Policy.MaxCandidates
//     can stop the search early on large clusters);
//  3. charges the request to a private copy of that host's allocations, so
//     later requests of the same call see it.
//
// A request that fits nowhere is returned in Plan.Unplaced with a reason in
// kube-scheduler's style: "0/5 hosts available: 3 insufficient memory, 2
// runtime class gvisor not offered."
package scheduler

import "fmt"

// ZoneLabel is the host label that names the host's failure zone; tenant
// spread counts instances per zone through it.
const ZoneLabel = "zone"

// Resources is an amount of the resources the scheduler accounts for.
type Resources struct {
	// MilliCPU is CPU in thousandths of a core.
	MilliCPU int64
	// Memory is in bytes.
	Memory int64
	// Pids is a number of processes and threads.
	Pids int64
	// BandwidthBPS is network bandwidth in bit/s.
	BandwidthBPS int64
	// Disk is ephemeral storage in bytes (resources.disk).
	Disk int64
	// Instances counts instances, against a host's limit of how many it
	// runs at once (each request asks for 1 when its host has a limit).
	Instances int64
}

// Add returns r+o.
func (r Resources) Add(o Resources) Resources {
	return Resources{
		MilliCPU:     r.MilliCPU + o.MilliCPU,
		Memory:       r.Memory + o.Memory,
		Pids:         r.Pids + o.Pids,
		BandwidthBPS: r.BandwidthBPS + o.BandwidthBPS,
		Disk:         r.Disk + o.Disk,
		Instances:    r.Instances + o.Instances,
	}
}

// Host is what the scheduler knows about one host.
//
// Capacity is what the host may hand out; a dimension with capacity zero
// has nothing to give, so only requests asking for none of it fit (a host
// that does not meter bandwidth should report a large capacity, not zero).
// Allocated is the sum of what the instances already on the host requested,
// Existing placements included: the scheduler trusts it and does not
// recompute it from Snapshot.Existing.
type Host struct {
	Name   string
	Labels map[string]string
	// Ready is false when the host's lease expired.
	Ready bool
	// Cordoned hosts keep their instances but get no new ones.
	Cordoned  bool
	Capacity  Resources
	Allocated Resources
	// DedicatedFree is the number of whole cores still free for instances
	// with the dedicated CPU policy.
	DedicatedFree int
	// RuntimeClasses the host can run (runc, crun, gvisor, ...).
	RuntimeClasses []string
	// Capabilities are hardware or kernel features (sgx, ...).
	Capabilities []string
	// Ports are the host ports the instances on it publish: a per-host
	// resource, as kube-scheduler's NodePorts filter treats hostPort.
	Ports []HostPort
	// Devices are the host's devices by kind, with what is left of each
	// (see DeviceFree); empty on a host without devices.
	Devices []DeviceFree
	// Images are keys of the images already present on the host; a
	// request's Images are matched against them as strings, so the caller
	// keys both sides alike (the control plane uses tenant/normalized ref,
	// since an image record belongs to a tenant).
	Images []string
}

// HostPort is a port published on a host.
type HostPort struct {
	// IP is the host address, "" for every address (which overlaps each
	// single address).
	IP       string
	Port     int
	Protocol string // tcp or udp
}

func (p HostPort) String() string {
	if p.IP == "" {
		return fmt.Sprintf("%d/%s", p.Port, p.Protocol)
	}
	return fmt.Sprintf("%s:%d/%s", p.IP, p.Port, p.Protocol)
}

// Mode is how the scheduler weighs a host's load.
type Mode string

const (
	// BinPack prefers the most allocated host that fits, keeping other
	// hosts empty for large requests (and for turning off). The default.
	BinPack Mode = "binpack"
	// Spread prefers the least allocated host, lowering the blast radius of
	// a host failure and the noise from neighbours.
	Spread Mode = "spread"
)

// Request is one instance waiting for a host.
type Request struct {
	ID     string
	Tenant string
	// Resources are charged to the chosen host. MilliCPU should include the
	// dedicated cores (1000 per core): they are cores of the host's CPU
	// capacity too.
	Resources Resources
	// DedicatedCores is how many whole cores the instance needs for itself.
	DedicatedCores int
	// RuntimeClass the host must offer; empty accepts any host.
	RuntimeClass string
	// Requires lists capabilities the host must have.
	Requires []string
	// Selector lists labels the host must carry with exactly these values.
	Selector map[string]string
	// Ports are host ports the instance publishes; a host where one of
	// them is taken does not fit.
	Ports []HostPort
	// Images the instance runs; hosts that have them score higher.
	Images []string
	// SpreadKey groups the instances that tenant spread keeps apart; empty
	// means Tenant.
	SpreadKey string
	// Mode overrides Policy.Mode for this request (a per-tenant or
	// per-instance policy); empty means the policy's.
	Mode Mode
	// Host, when set, is the only host the instance may run on: the one
	// that keeps its persistent volumes (local volumes).
	Host string
	// Devices are the devices the instance needs (see DeviceRequest).
	Devices []DeviceRequest
}

// Placement puts an instance on a host.
type Placement struct {
	ID     string
	Tenant string
	// SpreadKey is the request's spread key; empty means Tenant. Existing
	// placements carry it so that tenant spread can count them.
	SpreadKey string
	Host      string
}

// Snapshot is the state the scheduler plans against. Schedule never
// modifies it.
type Snapshot struct {
	Hosts []Host
	// Existing are the instances already placed; tenant spread counts them.
	Existing []Placement
	// Counts is Existing in aggregate: the number of instances already
	// placed per spread key (a tenant when instances set none) and host
	// name. A caller that keeps these counts up to date hands them over
	// as they are instead of one Placement per instance, so that building
	// a snapshot does not cost O(instances). Both are counted when both
	// are given.
	Counts map[string]map[string]int
}

// Policy is the cluster-wide scheduling policy.
type Policy struct {
	// Mode is BinPack (also when empty) or Spread.
	Mode Mode
	// TenantSpread scores hosts and zones holding fewer instances of the
	// request's spread key higher.
	TenantSpread bool
	// MaxCandidates, when positive, stops the search for a request once
	// that many hosts passed the filters, and picks the best of those, as
	// Nomad limits its candidates and kube-scheduler its
	// percentageOfNodesToScore: placements cost O(MaxCandidates) instead of
	// O(hosts) on a cluster with room, for a less than optimal choice. The
	// search starts at a host derived from a hash of the request ID, so
	// that it stays deterministic while requests of one call start in
	// different places. Zero scores every feasible host.
	MaxCandidates int
}

// Unplaced is a request that fits on no host now; it stays pending.
type Unplaced struct {
	ID     string
	Reason string
	// Filters are the distinct filters hosts failed ("insufficient
	// memory", "cordoned", ...), in the order of Reason, so that a caller
	// can tell waiting for resources from waiting for a kind of host.
	Filters []string
}

// Plan is the scheduler's answer, in the order of the pending requests.
type Plan struct {
	Placements []Placement
	Unplaced   []Unplaced
}
