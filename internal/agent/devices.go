package agent

import (
	"context"
	"fmt"
	"slices"

	"github.com/containerd/containerd/containers"
	"github.com/containerd/containerd/oci"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
	"github.com/kanga-run/kanga/internal/agent/steps"
)

// Devices lists the host's CDI devices, for its registration.
func (a *Agent) Devices() []api.HostDevice {
	if a.cfg.Devices == nil {
		return nil
	}
	return a.cfg.Devices.Devices()
}

// devicesStep gives the instance the devices its spec asks for (package
// device picks those of a count) before its containers are created with
// them: the CDI edits go into each container's spec (deviceOpts).
type devicesStep struct {
	r    *runner
	inst *api.Instance
}

func (s *devicesStep) Name() string { return "devices" }

func (s *devicesStep) Do(ctx context.Context) (steps.Undo, error) {
	r, inst := s.r, s.inst
	if len(inst.Spec.Devices) == 0 {
		return nil, nil
	}
	reg := r.a.cfg.Devices
	if reg == nil {
		return nil, fmt.Errorf("host %s offers no devices: %w", r.a.cfg.HostName, errdefs.ErrFailedPrecondition)
	}
	held := reg.Held(r.uid)
	names, err := reg.Allocate(r.uid, inst.Spec.Devices, r.a.namedByOthers(r.uid))
	if err != nil {
		return nil, err
	}
	r.devices = names
	r.mark("devices")
	if held != nil || !fresh(inst) {
		return nil, nil // an adopted instance's: not this run's to undo
	}
	return func(context.Context) error {
		r.devices = nil
		return reg.Release(r.uid)
	}, nil
}

// namedByOthers tells the devices that instances on this host other
// than uid ask for by name: a count must leave them free.
func (a *Agent) namedByOthers(uid string) func(string) bool {
	a.mu.Lock()
	others := make([]*runner, 0, len(a.runners))
	for other, rn := range a.runners {
		if other != uid {
			others = append(others, rn)
		}
	}
	a.mu.Unlock()
	var named []string
	for _, rn := range others {
		inst, gone := rn.snapshot()
		if gone {
			continue
		}
		for _, d := range inst.Spec.Devices {
			if d.Name != "" {
				named = append(named, d.Name)
			}
		}
	}
	return func(name string) bool { return slices.Contains(named, name) }
}

// deviceOpts applies the CDI edits of the instance's devices to a
// container's spec.
func (r *runner) deviceOpts() oci.SpecOpts {
	names := slices.Clone(r.devices)
	return func(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
		return r.a.cfg.Devices.Inject(s, names)
	}
}

// releaseDevices frees what instance uid holds, at its teardown.
func (a *Agent) releaseDevices(uid string) {
	if a.cfg.Devices == nil {
		return
	}
	if err := a.cfg.Devices.Release(uid); err != nil {
		a.log.Warn("releasing the instance's devices failed", "uid", uid, "err", err)
	}
}

// restoreDevices drops, after an agent restart, the holdings of
// instances that are no longer placed here (deleted while the agent was
// away); the others keep theirs, which their runners find again.
func (a *Agent) restoreDevices(insts []api.Instance) {
	if a.cfg.Devices == nil {
		return
	}
	here := map[string]bool{}
	for i := range insts {
		if insts[i].Status.Host == a.cfg.HostName {
			here[insts[i].UID] = true
		}
	}
	a.cfg.Devices.Retain(func(uid string) bool { return here[uid] })
}
