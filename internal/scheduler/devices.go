package scheduler

import "slices"

// Devices are a per-host resource counted by kind (a CDI kind such as
// nvidia.com/gpu), as Kubernetes counts extended resources, with one
// difference: a request may name one device (nvidia.com/gpu=0). The
// scheduler only checks that the host has enough of each kind free and
// that a named device is not held by another instance; the host's agent
// picks which devices a count request gets, avoiding the named ones, so
// that every placement the scheduler makes can be served.

// DeviceRequest asks for devices of one kind: Count of any of them, or,
// with Name, the one device of that qualified name (Count is then 1).
type DeviceRequest struct {
	Kind  string
	Name  string
	Count int
}

// DeviceFree is what a host has left of one kind of device.
type DeviceFree struct {
	Kind string
	// Free counts the exclusive devices no instance holds. Shareable
	// devices are not counted: any number of instances may use them.
	Free int
	// Names are the devices of the kind the host has, qualified
	// (vendor.com/class=name).
	Names []string
	// Shareable are those of Names that any number of instances may use.
	Shareable []string
	// Held are those of Names that instances named and hold.
	Held []string
}

// devState is a host's devices as the filter reads them; nil on the
// (many) hosts without devices.
type devState struct {
	kinds []DeviceFree // Free and Held are this call's copies
}

func newDevState(free []DeviceFree) *devState {
	if len(free) == 0 {
		return nil
	}
	ds := &devState{kinds: make([]DeviceFree, len(free))}
	for i, f := range free {
		ds.kinds[i] = f
		ds.kinds[i].Held = slices.Clone(f.Held)
	}
	return ds
}

func (ds *devState) kind(k string) *DeviceFree {
	if ds == nil {
		return nil
	}
	for i := range ds.kinds {
		if ds.kinds[i].Kind == k {
			return &ds.kinds[i]
		}
	}
	return nil
}

// charge is what a request takes of one kind on one host: exclusive
// devices by count, and the named ones it holds.
type charge struct {
	kind  *DeviceFree
	n     int
	named []string
}

// devicesFit returns the index in r.Devices of the first request host i
// cannot serve, or -1, and what the request would take there.
func (s *state) devicesFit(i int, r *Request) (int, []charge) {
	ds := s.nodes[i].dev
	var out []charge
	take := func(f *DeviceFree) *charge {
		for k := range out {
			if out[k].kind == f {
				return &out[k]
			}
		}
		out = append(out, charge{kind: f})
		return &out[len(out)-1]
	}
	for j, dr := range r.Devices {
		f := ds.kind(dr.Kind)
		if f == nil {
			return j, nil
		}
		c := take(f)
		if dr.Name != "" {
			if !slices.Contains(f.Names, dr.Name) {
				return j, nil
			}
			if slices.Contains(f.Shareable, dr.Name) {
				continue
			}
			if slices.Contains(f.Held, dr.Name) || slices.Contains(c.named, dr.Name) {
				return j, nil
			}
			c.named = append(c.named, dr.Name)
			c.n++
		} else if len(f.Shareable) < len(f.Names) {
			// A kind with exclusive devices serves counts from them; one
			// whose devices are all shareable serves any number of
			// instances, each up to all of its devices.
			c.n += dr.Count
		} else if dr.Count > len(f.Names) {
			return j, nil
		}
		if c.n > f.Free {
			return j, nil
		}
	}
	return -1, out
}

// useDevices charges host i with what r takes.
func (s *state) useDevices(i int, r *Request) {
	if len(r.Devices) == 0 {
		return
	}
	_, cs := s.devicesFit(i, r)
	for _, c := range cs {
		c.kind.Free -= c.n
		c.kind.Held = append(c.kind.Held, c.named...)
	}
}

// deviceText is the filter text of a device request a host failed.
func deviceText(dr DeviceRequest) string {
	if dr.Name != "" {
		return "device " + dr.Name + " unavailable"
	}
	return "insufficient " + dr.Kind
}
