package controlplane

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/internal/model"
	"github.com/kanga-run/kanga/internal/scheduler"
)

// unmetered stands for a capacity a host does not report (pids,
// bandwidth, instance count): the scheduler treats zero capacity as nothing to give, but a
// host that does not meter a resource should not refuse requests for it.
// It is far from MaxInt64 so that sums of allocations cannot overflow.
const unmetered = math.MaxInt64 / 4

// demand is what an instance takes from its host while it is placed and
// not terminal.
type demand struct {
	res       scheduler.Resources
	dedicated int
	devices   []scheduler.DeviceRequest
}

// demandOf computes an instance's demand from its (validated) spec.
func demandOf(spec *api.InstanceSpec) (demand, error) {
	d := demand{res: scheduler.Resources{Instances: 1}}
	r, err := model.ParseResources(spec.Resources)
	if err != nil {
		return d, err
	}
	d.res.MilliCPU = r.MilliCPU
	if r.DedicatedCores > 0 {
		d.res.MilliCPU = int64(r.DedicatedCores) * 1000
		d.dedicated = r.DedicatedCores
	}
	d.res.Memory = r.Memory
	d.res.Pids = r.Pids
	for _, dr := range spec.Devices {
		d.devices = append(d.devices, scheduler.DeviceRequest{Kind: dr.Kind, Name: dr.Name, Count: model.DeviceCount(dr)})
	}
	// Bandwidth is promised per direction on a full-duplex link: the
	// larger direction is what the host must have.
	d.res.BandwidthBPS = max(r.IngressBPS, r.EgressBPS)
	d.res.Disk = r.Disk
	return d, nil
}

// requestOf maps an instance to the scheduler's request.
func requestOf(id string, inst *api.Instance) (scheduler.Request, error) {
	d, err := demandOf(&inst.Spec)
	if err != nil {
		return scheduler.Request{}, err
	}
	req := scheduler.Request{
		ID:             id,
		Tenant:         inst.Tenant,
		Resources:      d.res,
		DedicatedCores: d.dedicated,
		Devices:        d.devices,
		RuntimeClass:   inst.Spec.Runtime,
		Selector:       inst.Spec.HostSelector,
		Ports:          hostPortsOf(&inst.Spec),
		Mode:           scheduler.Mode(inst.Spec.SchedulingPolicy),
	}
	if len(inst.PersistentVolumes) > 0 {
		// bindVolumes put them all on one host.
		req.Host = inst.PersistentVolumes[0].Host
	}
	for _, c := range model.AllContainers(&inst.Spec) {
		req.Images = append(req.Images, ImageKey(inst.Tenant, c.Spec.Image))
	}
	return req, nil
}

// hostPortsOf is the scheduler's view of the host ports a spec publishes.
func hostPortsOf(spec *api.InstanceSpec) []scheduler.HostPort {
	if len(spec.Ports) == 0 {
		return nil
	}
	out := make([]scheduler.HostPort, 0, len(spec.Ports))
	for _, p := range spec.Ports {
		hp := scheduler.HostPort{IP: p.HostIP, Port: p.HostPort, Protocol: strings.ToLower(p.Protocol)}
		if model.IsWildcard(p.HostIP) {
			hp.IP = ""
		}
		if hp.Protocol == "" {
			hp.Protocol = "tcp"
		}
		out = append(out, hp)
	}
	return out
}

// hostOf maps a registered host and what is placed on it to the
// scheduler's view.
func hostOf(h *api.Host, alloc *allocation) scheduler.Host {
	return hostOfImages(h, alloc, hostImageKeys(h.Images))
}

// hostOfImages is hostOf with the host's image keys already built.
func hostOfImages(h *api.Host, alloc *allocation, images []string) scheduler.Host {
	c := h.Capacity
	sh := scheduler.Host{
		Name:     h.Name,
		Labels:   h.Labels,
		Ready:    h.Status.Phase == api.HostReady,
		Cordoned: h.Cordoned,
		Capacity: scheduler.Resources{
			MilliCPU:     int64(c.CPUs) * 1000,
			Memory:       c.MemoryBytes,
			Pids:         c.Pids,
			BandwidthBPS: c.BandwidthBPS,
			Disk:         c.DiskBytes,
			Instances:    int64(c.Pods),
		},
		DedicatedFree:  c.CPUs,
		RuntimeClasses: h.RuntimeClasses,
		Capabilities:   h.Capabilities,
		Images:         images,
	}
	if sh.Capacity.Pids == 0 {
		sh.Capacity.Pids = unmetered
	}
	if sh.Capacity.BandwidthBPS == 0 {
		sh.Capacity.BandwidthBPS = unmetered
	}
	if sh.Capacity.Disk == 0 {
		sh.Capacity.Disk = unmetered
	}
	if sh.Capacity.Instances == 0 {
		sh.Capacity.Instances = unmetered
	}
	sh.Devices = devicesOf(h.Devices, alloc)
	if alloc != nil {
		sh.Allocated = alloc.res
		sh.DedicatedFree -= alloc.dedicated
		for p, n := range alloc.ports {
			if n > 0 {
				sh.Ports = append(sh.Ports, p)
			}
		}
	}
	return sh
}

// devicesOf is the scheduler's view of a host's devices: per kind, the
// exclusive devices no instance placed there takes. Instances hold named
// devices by name and take counts from the kind's exclusive devices, or
// from none when all of the kind's devices are shareable (as the agent
// serves them).
func devicesOf(devs []api.HostDevice, alloc *allocation) []scheduler.DeviceFree {
	if len(devs) == 0 {
		return nil
	}
	var out []scheduler.DeviceFree
	idx := map[string]int{}
	for _, d := range devs {
		kind, _, ok := strings.Cut(d.Name, "=")
		if !ok {
			continue
		}
		i, seen := idx[kind]
		if !seen {
			i = len(out)
			idx[kind] = i
			out = append(out, scheduler.DeviceFree{Kind: kind})
		}
		f := &out[i]
		f.Names = append(f.Names, d.Name)
		if d.Shareable {
			f.Shareable = append(f.Shareable, d.Name)
		} else {
			f.Free++
		}
	}
	if alloc == nil {
		return out
	}
	for i := range out {
		f := &out[i]
		if len(f.Shareable) < len(f.Names) {
			f.Free -= alloc.deviceCounts[f.Kind]
		}
		for _, n := range f.Names {
			if alloc.devicesNamed[n] > 0 && !slices.Contains(f.Shareable, n) {
				f.Held = append(f.Held, n)
				f.Free--
			}
		}
	}
	return out
}

// Status reasons the control plane sets on instances.
const (
	// ReasonUnschedulable: no host can take the instance now, and not
	// for want of one resource (see api.WaitsForResources).
	ReasonUnschedulable = api.ReasonUnschedulable
	// ReasonInsufficientCPU: hosts of the right kind exist but their
	// cores are taken; the agent uses the same reason for an instance
	// waiting for dedicated cores.
	ReasonInsufficientCPU = api.ReasonInsufficientCPU
	// ReasonLost: the instance's host stopped answering (its lease
	// expired). A restartable instance is re-created elsewhere and waits,
	// Pending with this reason, to be placed; any other is Failed.
	ReasonLost = "Lost"
	// ReasonDrained: the instance was moved off a drained host.
	ReasonDrained = "Drained"
	// ReasonHostNotReady: no host is ready just now (every host failed
	// the not-ready filter, e.g. the only host's lease lapsed for a few
	// seconds under load). That passes on its own, so unlike
	// Unschedulable it does not end a wait for Running: the instance is
	// placed as soon as a host is ready again.
	ReasonHostNotReady = "HostNotReady"
)

// unplacedStatus turns the scheduler's answer into a status reason and
// message.
func unplacedStatus(inst *api.Instance, u scheduler.Unplaced) (string, string) {
	// The other hosts of an instance bound to its volumes' host say
	// nothing of what it waits for.
	filters := slices.DeleteFunc(slices.Clone(u.Filters), func(f string) bool { return f == scheduler.NotVolumeHost })
	// One vocabulary: Insufficient<Resource> when every host that could
	// run the instance lacks the same resource, Unschedulable otherwise.
	reason := ""
	for _, f := range filters {
		r := shortage(f)
		if r == "" || (reason != "" && r != reason) {
			reason = ReasonUnschedulable
			break
		}
		reason = r
	}
	if reason == "" {
		reason = ReasonUnschedulable
	}
	if len(filters) == 1 && filters[0] == "not ready" {
		reason = ReasonHostNotReady
	}
	msg := u.Reason
	if c, ok := model.LookupRuntimeClass(inst.Spec.Runtime); ok && len(c.Requires) > 0 &&
		strings.Contains(msg, "runtime class "+c.Name+" not offered") {
		msg += fmt.Sprintf(" Runtime class %s needs host capability %s.", c.Name, strings.Join(c.Requires, ", "))
	}
	return reason, msg
}

// shortage is the Insufficient<Resource> reason of a scheduler filter that
// is a resource shortage, or "".
func shortage(filter string) string {
	switch filter {
	case "insufficient cpu", "insufficient dedicated cores":
		return api.ReasonInsufficientCPU
	case "insufficient memory":
		return api.ReasonInsufficientMemory
	case "insufficient pids":
		return api.ReasonInsufficientPids
	case "insufficient bandwidth":
		return api.ReasonInsufficientBandwidth
	case "insufficient disk":
		return api.ReasonInsufficientDisk
	case "too many instances":
		return api.ReasonInsufficientInstances
	}
	// The scheduler names a device kind it lacks: "insufficient
	// nvidia.com/gpu".
	if strings.HasPrefix(filter, "insufficient ") {
		return api.ReasonInsufficientDevices
	}
	return ""
}

// restartable reports whether an instance whose host is gone should run
// again elsewhere.
func restartable(inst *api.Instance) bool {
	p := inst.Spec.RestartPolicy
	return (p == api.RestartAlways || p == api.RestartOnFailure) && !inst.StopRequested && !inst.DeletionRequested
}

// Recreate turns inst into a fresh Pending copy that the scheduler will
// place anew: a new UID (so the old host's copy, if that host returns,
// is told apart and removed), no host, no container state. Restart counts
// are kept: they describe the instance's whole life.
func Recreate(inst *api.Instance, reason, msg string, now time.Time) {
	inst.UID = model.NewUID()
	st := &inst.Status
	st.Phase = api.PhasePending
	st.Reason, st.Message = reason, msg
	st.Host, st.IP = "", ""
	st.StartedAt, st.FinishedAt = nil, nil
	for i := range st.Containers {
		c := &st.Containers[i]
		*c = api.ContainerStatus{Name: c.Name, State: api.ContainerWaiting, Reason: reason, RestartCount: c.RestartCount}
	}
	// The new sandbox runs the init containers again, as a new pod would.
	for i := range st.InitContainers {
		c := &st.InitContainers[i]
		*c = api.ContainerStatus{Name: c.Name, State: api.ContainerWaiting, Reason: reason, RestartCount: c.RestartCount}
	}
	st.Events = model.AppendEvent(st.Events, api.Event{Time: now, Type: "Warning", Reason: reason, Message: msg})
}

// failLost ends an instance that cannot run again after its host was
// lost. The host is cleared too: if the host returns it must not run the
// instance again, and a terminal instance holds no resources.
func failLost(inst *api.Instance, msg string, now time.Time) {
	st := &inst.Status
	st.Phase = api.PhaseFailed
	st.Reason, st.Message = ReasonLost, msg
	st.Host = ""
	if st.FinishedAt == nil {
		st.FinishedAt = &now
	}
	for _, cs := range [][]api.ContainerStatus{st.InitContainers, st.Containers} {
		for i := range cs {
			c := &cs[i]
			if c.State != api.ContainerTerminated {
				c.State, c.Reason = api.ContainerTerminated, ReasonLost
				c.FinishedAt = &now
			}
		}
	}
	st.Events = model.AppendEvent(st.Events, api.Event{Time: now, Type: "Warning", Reason: ReasonLost, Message: msg})
}
