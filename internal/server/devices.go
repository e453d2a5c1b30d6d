package server

import (
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
	"github.com/kanga-run/kanga/internal/hostcontract"
	"github.com/kanga-run/kanga/internal/model"
)

// attachDevice gives a running instance devices (kanga device attach):
// its host makes the device nodes in its containers and allows them, then
// the devices join spec.devices by name, so that the scheduler counts them
// as held and a restarted container is created with them.
func (s *Server) attachDevice(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	var req api.DeviceRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	inst, da, err := s.deviceHost(r)
	if err != nil {
		return err
	}
	// Validated as one more entry of the spec: the same checks as at create.
	check := inst.Spec
	check.Devices = append(slices.Clone(check.Devices), req)
	model.Defaults(&check, check.Runtime)
	if err := model.Validate(&check); err != nil {
		return err
	}
	req = check.Devices[len(check.Devices)-1]
	setAuditDetail(ctx, fmt.Sprintf("attach kind=%s name=%s count=%d", req.Kind, req.Name, req.Count))
	names, err := da.AttachDevice(ctx, inst, req)
	if err != nil {
		return err
	}
	out, err := s.store.UpdateInstance(ctx, inst.Name, func(in *api.Instance) error {
		if in.UID != inst.UID {
			return fmt.Errorf("instance %q was replaced meanwhile: %w", inst.Name, errdefs.ErrConflict)
		}
		for _, n := range names {
			kind, _, _ := strings.Cut(n, "=")
			in.Spec.Devices = append(in.Spec.Devices, api.DeviceRequest{Kind: kind, Name: n})
		}
		return nil
	})
	if err != nil {
		// The host holds the devices; give them back rather than leave
		// them unaccounted for.
		for _, n := range names {
			_ = da.DetachDevice(ctx, inst, n)
		}
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// detachDevice takes a device from a running instance (kanga device
// detach) and from its spec: a named entry goes, a count of the kind
// shrinks by one.
func (s *Server) detachDevice(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	name := r.URL.Query().Get("name")
	if name == "" {
		return fmt.Errorf("query parameter name: the qualified name of the device to detach, e.g. nvidia.com/gpu=0: %w", errdefs.ErrInvalidArgument)
	}
	inst, da, err := s.deviceHost(r)
	if err != nil {
		return err
	}
	if !slices.Contains(inst.Status.Devices, name) {
		return fmt.Errorf("instance %q holds no device %s (it holds %s): %w", inst.Name, name, strings.Join(inst.Status.Devices, ", "), errdefs.ErrNotFound)
	}
	setAuditDetail(ctx, "detach name="+name)
	if err := da.DetachDevice(ctx, inst, name); err != nil {
		return err
	}
	kind, _, _ := strings.Cut(name, "=")
	out, err := s.store.UpdateInstance(ctx, inst.Name, func(in *api.Instance) error {
		if in.UID != inst.UID {
			return fmt.Errorf("instance %q was replaced meanwhile: %w", inst.Name, errdefs.ErrConflict)
		}
		if i := slices.IndexFunc(in.Spec.Devices, func(d api.DeviceRequest) bool { return d.Name == name }); i >= 0 {
			in.Spec.Devices = slices.Delete(in.Spec.Devices, i, i+1)
			return nil
		}
		if i := slices.IndexFunc(in.Spec.Devices, func(d api.DeviceRequest) bool { return d.Name == "" && d.Kind == kind }); i >= 0 {
			if in.Spec.Devices[i].Count--; in.Spec.Devices[i].Count == 0 {
				in.Spec.Devices = slices.Delete(in.Spec.Devices, i, i+1)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// deviceHost reads the instance of a device route and its host, which
// must be able to attach devices to it now.
func (s *Server) deviceHost(r *http.Request) (*api.Instance, hostcontract.DeviceAttacher, error) {
	return runningOn[hostcontract.DeviceAttacher](s, r, "attach devices", func(inst *api.Instance) error {
		if inst.Spec.Runtime == "gvisor" {
			return fmt.Errorf("instance %q runs in gVisor, whose kernel does not pass host devices through: %w", inst.Name, errdefs.ErrInvalidArgument)
		}
		return nil
	})
}
