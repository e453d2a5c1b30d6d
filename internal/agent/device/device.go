// Package device is a host's devices as instances get them: the devices
// its Container Device Interface (CDI) specs describe (/etc/cdi,
// /var/run/cdi), which instance holds which, and the edits that give a
// container its devices (device nodes with their cgroup rules, mounts,
// environment, hooks), applied by the CDI library.
//
// Which devices a count request gets is decided here, on the host: the
// scheduler only made sure enough of the kind were free, so the choice
// avoids the devices other instances placed here ask for by name. Holdings
// are written to a file per instance, so that an agent restart keeps
// them.
package device

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	oci "github.com/opencontainers/runtime-spec/specs-go"
	"tags.cncf.io/container-device-interface/pkg/cdi"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
	"github.com/kanga-run/kanga/internal/atomicfile"
	"github.com/kanga-run/kanga/internal/model"
)

// DefaultSpecDirs are where CDI specs live, as the CDI library reads them.
var DefaultSpecDirs = cdi.DefaultSpecDirs

// Registry is the host's devices and their holders.
type Registry struct {
	cache *cdi.Cache
	state string // one file per holding instance

	mu   sync.Mutex
	held map[string][]string // instance uid -> qualified names
}

// Open reads the CDI specs in specDirs (kept current as they change) and
// the holdings recorded under stateDir.
func Open(specDirs []string, stateDir string) (*Registry, error) {
	cache, err := cdi.NewCache(cdi.WithSpecDirs(specDirs...), cdi.WithAutoRefresh(true))
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return nil, err
	}
	r := &Registry{cache: cache, state: stateDir, held: map[string][]string{}}
	ents, err := os.ReadDir(stateDir)
	if err != nil {
		return nil, err
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(stateDir, e.Name()))
		if err != nil {
			continue
		}
		var names []string
		if json.Unmarshal(b, &names) == nil {
			r.held[e.Name()] = names
		}
	}
	return r, nil
}

// Errors are the problems of the CDI specs read, by file, for the log:
// a broken spec leaves its devices out, not the host.
func (r *Registry) Errors() map[string][]error { return r.cache.GetErrors() }

// Devices lists the host's devices, in name order.
func (r *Registry) Devices() []api.HostDevice {
	var out []api.HostDevice
	for _, name := range r.cache.ListDevices() {
		if d := r.cache.GetDevice(name); d != nil {
			out = append(out, api.HostDevice{Name: name, Shareable: shareable(d)})
		}
	}
	return out
}

func shareable(d *cdi.Device) bool {
	if v, ok := d.Annotations[model.ShareableAnnotation]; ok {
		return v == "true"
	}
	return d.GetSpec().Annotations[model.ShareableAnnotation] == "true"
}

// Held returns the devices instance uid holds.
func (r *Registry) Held(uid string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.held[uid])
}

// holder returns the instance holding exclusive device name, if any.
func (r *Registry) holder(name string) (string, bool) {
	for uid, names := range r.held {
		if slices.Contains(names, name) {
			return uid, true
		}
	}
	return "", false
}

// Allocate gives instance uid the devices reqs ask for and records them;
// an instance that holds devices already keeps them (an adopted one).
// avoid tells the devices other instances placed on the host ask for by
// name, which a count request must not take.
func (r *Registry) Allocate(uid string, reqs []api.DeviceRequest, avoid func(name string) bool) ([]string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if names, ok := r.held[uid]; ok {
		return slices.Clone(names), nil
	}
	got, err := r.pick(nil, reqs, avoid)
	if err != nil {
		return nil, err
	}
	if err := r.record(uid, got); err != nil {
		return nil, err
	}
	return slices.Clone(got), nil
}

// Attach gives instance uid, which may hold devices already, the devices
// req asks for besides, and returns those.
func (r *Registry) Attach(uid string, req api.DeviceRequest, avoid func(name string) bool) ([]string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	have := r.held[uid]
	if req.Name != "" && slices.Contains(have, req.Name) {
		return nil, fmt.Errorf("the instance holds device %s already: %w", req.Name, errdefs.ErrConflict)
	}
	got, err := r.pick(have, []api.DeviceRequest{req}, avoid)
	if err != nil {
		return nil, err
	}
	if err := r.record(uid, append(slices.Clone(have), got[len(have):]...)); err != nil {
		return nil, err
	}
	return slices.Clone(got[len(have):]), nil
}

// Detach takes device name from instance uid.
func (r *Registry) Detach(uid, name string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	have := r.held[uid]
	i := slices.Index(have, name)
	if i < 0 {
		return fmt.Errorf("the instance holds no device %s: %w", name, errdefs.ErrNotFound)
	}
	return r.record(uid, slices.Delete(slices.Clone(have), i, i+1))
}

// pick chooses devices for reqs beyond got (which it extends); r.mu held.
func (r *Registry) pick(got []string, reqs []api.DeviceRequest, avoid func(name string) bool) ([]string, error) {
	devs := r.Devices()
	got = slices.Clone(got)
	taken := func(d api.HostDevice) bool {
		if slices.Contains(got, d.Name) {
			return true
		}
		if d.Shareable {
			return false
		}
		_, held := r.holder(d.Name)
		return held
	}
	for i, req := range reqs {
		if req.Name != "" {
			k := slices.IndexFunc(devs, func(d api.HostDevice) bool { return d.Name == req.Name })
			if k < 0 {
				return nil, fmt.Errorf("spec.devices[%d]: this host has no device %s: %w", i, req.Name, errdefs.ErrNotFound)
			}
			if taken(devs[k]) {
				// Not which instance: it may be another tenant's.
				return nil, fmt.Errorf("spec.devices[%d]: device %s is held by another instance: %w", i, req.Name, errdefs.ErrConflict)
			}
			got = append(got, req.Name)
			continue
		}
		kind := func(d api.HostDevice) bool { return strings.HasPrefix(d.Name, req.Kind+"=") }
		if !slices.ContainsFunc(devs, kind) {
			return nil, fmt.Errorf("spec.devices[%d]: this host has no %s devices: %w", i, req.Kind, errdefs.ErrNotFound)
		}
		exclusive := slices.ContainsFunc(devs, func(d api.HostDevice) bool { return kind(d) && !d.Shareable })
		n := 0
		for _, d := range devs {
			if n == req.Count {
				break
			}
			// Counts take the exclusive devices of a kind that has any.
			if !kind(d) || (exclusive && d.Shareable) || taken(d) || (!d.Shareable && avoid != nil && avoid(d.Name)) {
				continue
			}
			got = append(got, d.Name)
			n++
		}
		if n < req.Count {
			return nil, fmt.Errorf("spec.devices[%d]: %d of %d %s devices free on this host, the others are held: %w", i, n, req.Count, req.Kind, errdefs.ErrConflict)
		}
	}
	return got, nil
}

// record writes what uid holds; r.mu held.
func (r *Registry) record(uid string, names []string) error {
	b, err := json.Marshal(names)
	if err != nil {
		return err
	}
	if err := atomicfile.Write(filepath.Join(r.state, uid), b, 0o600); err != nil {
		return err
	}
	r.held[uid] = names
	return nil
}

// Nodes are the device nodes device's CDI spec gives a container, with
// their numbers filled in from the host's nodes.
func (r *Registry) Nodes(device string) ([]oci.LinuxDevice, error) {
	var spec oci.Spec
	if err := r.Inject(&spec, []string{device}); err != nil {
		return nil, err
	}
	if spec.Linux == nil {
		return nil, nil
	}
	return spec.Linux.Devices, nil
}

// Release frees what instance uid holds.
func (r *Registry) Release(uid string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.held, uid)
	if err := os.Remove(filepath.Join(r.state, uid)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// Retain releases the holdings of every instance keep does not know: an
// agent restart drops those of instances deleted meanwhile.
func (r *Registry) Retain(keep func(uid string) bool) {
	r.mu.Lock()
	var gone []string
	for uid := range r.held {
		if !keep(uid) {
			gone = append(gone, uid)
		}
	}
	r.mu.Unlock()
	for _, uid := range gone {
		_ = r.Release(uid)
	}
}

// Inject applies the CDI edits of devices to spec.
func (r *Registry) Inject(spec *oci.Spec, devices []string) error {
	if len(devices) == 0 {
		return nil
	}
	if unresolved, err := r.cache.InjectDevices(spec, devices...); err != nil {
		return fmt.Errorf("applying the CDI specs of %s (unresolved: %s): %w", strings.Join(devices, ", "), strings.Join(unresolved, ", "), err)
	}
	return nil
}
