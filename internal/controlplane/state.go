package controlplane

import (
	"slices"
	"strings"
	"time"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/internal/scheduler"
	"github.com/kanga-run/kanga/internal/store"
)

// entry is the latest version of an instance the loop knows.
type entry struct {
	inst   *api.Instance
	modRev int64
	// charged is what the instance counts against its host (zero when it
	// is unplaced or terminal).
	charged demand
	host    string
	// ports are the host ports the instance holds on portHost: from its
	// placement until its record is gone, terminal or not, as its host
	// keeps the port mappings until the instance is removed.
	ports    []scheduler.HostPort
	portHost string
}

// allocation is the sum of the demands placed on one host.
type allocation struct {
	res       scheduler.Resources
	dedicated int
	// ports counts the instances publishing each host port (one, unless
	// placements raced past the scheduler).
	ports map[scheduler.HostPort]int
	// deviceCounts are the devices instances ask for by count, per kind;
	// devicesNamed the instances naming each device.
	deviceCounts map[string]int
	devicesNamed map[string]int
}

// chargeDevices adds (sign 1) or removes (-1) what devices ask for.
func (a *allocation) chargeDevices(devs []scheduler.DeviceRequest, sign int) {
	for _, d := range devs {
		if d.Name != "" {
			if a.devicesNamed == nil {
				a.devicesNamed = map[string]int{}
			}
			a.devicesNamed[d.Name] += sign
			continue
		}
		if a.deviceCounts == nil {
			a.deviceCounts = map[string]int{}
		}
		a.deviceCounts[d.Kind] += sign * d.Count
	}
}

// state is the leader's snapshot, kept current from the watches. Only the
// loop goroutine touches it.
type state struct {
	instances map[string]*entry // by tenant/name
	pending   map[string]struct{}
	// stopped are unplaced instances a user stopped: no host will ever
	// end them, so the loop does.
	stopped map[string]struct{}
	// unplaced records the mod revision at which a pending instance last
	// failed to fit; it is tried again when it changes or capacity frees.
	unplaced map[string]int64
	byHost   map[string]map[string]struct{} // placed, non-terminal
	alloc    map[string]*allocation
	// perTenant counts placed instances per tenant and host, for spread.
	perTenant map[string]map[string]int

	hosts    map[string]*api.Host
	hostsRev int64
	// attention are the hosts the failure detector looks at: without a
	// lease, or with a condition to clear.
	attention []string
	// sched is the scheduler's view of hosts, in name order, kept up to
	// date as allocations change (touch) so that a pass hands it over
	// instead of building it; schedIdx finds a host in it.
	sched    []scheduler.Host
	schedIdx map[string]int
	// everReady are hosts seen Ready during this leadership: their loss is
	// acted on at once; others only after the startup grace.
	everReady map[string]bool
	graceOver bool

	// freed is set when capacity may have grown (an instance ended or
	// left, a host changed), retryAll when a pass must look at every
	// pending instance again.
	freed, retryAll bool
	start           time.Time

	// probes are the liveness probes of hosts without a lease; probed
	// carries their answers to the loop. wakeAt, if set, is when a pass
	// must run again even if no event comes (a probe to repeat, a
	// re-creation the rate limit held back).
	probes map[string]*probe
	probed chan probeResult
	wakeAt time.Time
	// conds are the host conditions this leader recorded, so that each
	// is written and logged once.
	conds map[string]string
}

func newState(now time.Time) *state {
	return &state{
		instances: map[string]*entry{},
		pending:   map[string]struct{}{},
		stopped:   map[string]struct{}{},
		unplaced:  map[string]int64{},
		byHost:    map[string]map[string]struct{}{},
		alloc:     map[string]*allocation{},
		perTenant: map[string]map[string]int{},
		hosts:     map[string]*api.Host{},
		everReady: map[string]bool{},
		start:     now,
		probes:    map[string]*probe{},
		probed:    make(chan probeResult, 16),
		conds:     map[string]string{},
	}
}

func key(tenantName, name string) string { return tenantName + "/" + name }

// isPending reports whether the scheduler should place inst.
func isPending(inst *api.Instance) bool {
	return inst.Status.Host == "" && inst.Status.Phase == api.PhasePending &&
		!inst.DeletionRequested && !inst.StopRequested
}

// apply folds one watch event (or a write of the loop) into the state.
// Versions older than the one known are ignored: the loop's own writes get
// ahead of the watch.
func (s *state) apply(ev *store.InstanceEvent) {
	k := key(ev.Tenant, ev.Name)
	old := s.instances[k]
	if ev.Deleted {
		if old != nil {
			s.uncharge(k, old)
			s.releasePorts(old)
			// A terminal instance frees its host ports only now.
			s.freed = s.freed || old.host != "" || old.portHost != ""
			delete(s.instances, k)
		}
		delete(s.pending, k)
		delete(s.stopped, k)
		delete(s.unplaced, k)
		return
	}
	if old != nil && ev.ModRevision != 0 && ev.ModRevision < old.modRev {
		return
	}
	if old != nil {
		s.uncharge(k, old)
		s.releasePorts(old)
		// Capacity frees when an instance leaves its host or ends; status
		// updates of a running instance (most events) free nothing, so
		// they do not make every unplaced instance be tried again.
		inst := ev.Instance
		if old.host != "" && (inst.Status.Host != old.host || inst.Status.Phase.Terminal()) {
			s.freed = true
		}
		if old.portHost != "" && inst.Status.Host != old.portHost {
			s.freed = true
		}
	}
	e := &entry{inst: ev.Instance, modRev: ev.ModRevision}
	s.instances[k] = e
	inst := ev.Instance
	if isPending(inst) {
		s.pending[k] = struct{}{}
	} else {
		delete(s.pending, k)
		delete(s.unplaced, k)
	}
	if inst.Status.Host == "" && inst.Status.Phase == api.PhasePending && inst.StopRequested && !inst.DeletionRequested {
		s.stopped[k] = struct{}{}
	} else {
		delete(s.stopped, k)
	}
	if inst.Status.Host != "" && len(inst.Spec.Ports) > 0 {
		e.ports, e.portHost = hostPortsOf(&inst.Spec), inst.Status.Host
		a := s.allocFor(e.portHost)
		if a.ports == nil {
			a.ports = map[scheduler.HostPort]int{}
		}
		for _, p := range e.ports {
			a.ports[p]++
		}
		s.touch(e.portHost)
	}
	if inst.Status.Host != "" && !inst.Status.Phase.Terminal() {
		d, err := demandOf(&inst.Spec)
		if err != nil {
			d = demand{} // unreadable spec: counted for spread only
		}
		e.charged, e.host = d, inst.Status.Host
		a := s.allocFor(e.host)
		a.res = a.res.Add(d.res)
		a.dedicated += d.dedicated
		a.chargeDevices(d.devices, 1)
		s.touch(e.host)
		hk := s.byHost[e.host]
		if hk == nil {
			hk = map[string]struct{}{}
			s.byHost[e.host] = hk
		}
		hk[k] = struct{}{}
		pt := s.perTenant[inst.Tenant]
		if pt == nil {
			pt = map[string]int{}
			s.perTenant[inst.Tenant] = pt
		}
		pt[e.host]++
	}
}

func (s *state) allocFor(host string) *allocation {
	a := s.alloc[host]
	if a == nil {
		a = &allocation{}
		s.alloc[host] = a
	}
	return a
}

// releasePorts removes the host ports an entry held.
func (s *state) releasePorts(e *entry) {
	if e.portHost == "" {
		return
	}
	if a := s.alloc[e.portHost]; a != nil {
		for _, p := range e.ports {
			if a.ports[p]--; a.ports[p] <= 0 {
				delete(a.ports, p)
			}
		}
		s.touch(e.portHost)
	}
}

// uncharge removes what an entry counted against its host.
func (s *state) uncharge(k string, e *entry) {
	if e.host == "" {
		return
	}
	if a := s.alloc[e.host]; a != nil {
		a.res = a.res.Add(scheduler.Resources{
			MilliCPU: -e.charged.res.MilliCPU, Memory: -e.charged.res.Memory,
			Pids: -e.charged.res.Pids, BandwidthBPS: -e.charged.res.BandwidthBPS,
			Disk: -e.charged.res.Disk, Instances: -e.charged.res.Instances,
		})
		a.dedicated -= e.charged.dedicated
		a.chargeDevices(e.charged.devices, -1)
		s.touch(e.host)
	}
	if hk := s.byHost[e.host]; hk != nil {
		delete(hk, k)
		if len(hk) == 0 {
			delete(s.byHost, e.host)
		}
	}
	if pt := s.perTenant[e.inst.Tenant]; pt != nil {
		if pt[e.host]--; pt[e.host] <= 0 {
			delete(pt, e.host)
		}
		if len(pt) == 0 {
			delete(s.perTenant, e.inst.Tenant)
		}
	}
}

// setHosts replaces the host list unless it is older than the one known.
func (s *state) setHosts(snap store.HostsSnapshot) {
	if snap.Revision < s.hostsRev {
		return
	}
	s.hostsRev = snap.Revision
	hosts := snap.Hosts
	m := make(map[string]*api.Host, len(hosts))
	for i := range hosts {
		h := &hosts[i]
		m[h.Name] = h
		if h.Status.Phase == api.HostReady {
			s.everReady[h.Name] = true
		}
	}
	s.hosts = m
	s.attention = s.attention[:0]
	for name, h := range m {
		if h.Status.Phase != api.HostReady || h.Status.Condition != "" {
			s.attention = append(s.attention, name)
		}
	}
	s.freed = true
	s.sched = s.sched[:0]
	s.schedIdx = make(map[string]int, len(m))
	for name, h := range m {
		s.sched = append(s.sched, hostOf(h, s.alloc[name]))
	}
	slices.SortFunc(s.sched, func(a, b scheduler.Host) int { return strings.Compare(a.Name, b.Name) })
	for i := range s.sched {
		s.schedIdx[s.sched[i].Name] = i
	}
}

// touch brings host's entry in sched up to date with its allocation.
func (s *state) touch(host string) {
	if i, ok := s.schedIdx[host]; ok {
		// The host record is unchanged: keep its image keys rather than
		// build them again on every placement.
		imgs := s.sched[i].Images
		s.sched[i] = hostOfImages(s.hosts[host], s.alloc[host], imgs)
	}
}

// lost reports whether the instances placed on host should be handled as
// lost now.
func (s *state) lost(host string) bool {
	if h, ok := s.hosts[host]; ok && h.Status.Phase == api.HostReady {
		return false
	}
	return s.everReady[host] || s.graceOver
}

// snapshot builds the scheduler's input for the pending requests.
func (s *state) snapshot(reqs []scheduler.Request) scheduler.Snapshot {
	// sched is current (setHosts, touch), and Schedule only reads it:
	// O(1) here rather than O(hosts).
	snap := scheduler.Snapshot{Hosts: s.sched}
	// Tenant spread only needs the counts of the tenants asking now,
	// handed over as kept (Schedule only reads them): O(tenants asking),
	// not O(instances placed).
	snap.Counts = map[string]map[string]int{}
	for _, r := range reqs {
		if pt, ok := s.perTenant[r.Tenant]; ok {
			snap.Counts[r.Tenant] = pt
		}
	}
	return snap
}
