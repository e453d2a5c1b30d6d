package server

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/internal/hostcontract"
	"github.com/kanga-run/kanga/internal/model"
)

// checkPortPolicy refuses published ports the operator's policy, narrowed
// by the tenant's, does not allow: 400s naming the field.
func (s *Server) checkPortPolicy(spec *api.InstanceSpec, policy api.Tenant) error {
	if len(spec.Ports) == 0 {
		return nil
	}
	return s.ports.Narrow(policy.Security).CheckPorts(spec.Ports)
}

// admitPorts checks, when it is certain which host a new instance will run
// on (the all-in-one's, or the only host its selector and runtime class
// leave), that its ports are free there: not taken by another instance
// (409 naming it, or only saying "another tenant's"), nor by the host
// (its PortChecker). It holds the API's port lock on success: the caller
// stores the instance and then calls unlock, so that racing creates in
// this process see each other. Creates through other API replicas, or
// whose host is not certain, meet on the scheduler, which places only
// where the ports are free (and the agent checks once more before it
// publishes).
func (s *Server) admitPorts(ctx context.Context, tenantName string, spec *api.InstanceSpec) (unlock func(), err error) {
	if len(spec.Ports) == 0 {
		return func() {}, nil
	}
	s.portsMu.Lock()
	defer func() {
		if err != nil {
			s.portsMu.Unlock()
		}
	}()
	hostName, host, single, err := s.certainHost(ctx, spec)
	if err != nil {
		return nil, err
	}
	if hostName == "" {
		return s.portsMu.Unlock, nil
	}
	if pc, ok := host.(hostcontract.PortChecker); ok {
		if err := pc.CheckPorts(ctx, spec.Ports); err != nil {
			return nil, err
		}
	}
	insts, _, err := s.store.ListAllInstances(ctx)
	if err != nil {
		return nil, err
	}
	var errs []error
	for i, p := range spec.Ports {
		for j := range insts {
			other := &insts[j]
			// On the host, or (with one host) bound to land there.
			if other.Status.Host != hostName && (!single || other.Status.Host != "" || other.Status.Phase != api.PhasePending) {
				continue
			}
			if k := slices.IndexFunc(other.Spec.Ports, func(q api.PortMapping) bool { return model.PortsConflict(p, q) }); k >= 0 {
				errs = append(errs, model.PortInUse(fmt.Sprintf("spec.ports[%d]", i), p, holder(tenantName, other)))
				break
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return s.portsMu.Unlock, nil
}

// holder names the instance holding a port to the tenant asking: its own
// instance by name, another tenant's only as such.
func holder(tenantName string, inst *api.Instance) string {
	if inst.Tenant != tenantName {
		return "an instance of another tenant"
	}
	if inst.Status.Phase.Terminal() {
		return fmt.Sprintf("instance %q (%s: its ports stay taken until kanga rm %s)", inst.Name, inst.Status.Phase, inst.Name)
	}
	return fmt.Sprintf("instance %q", inst.Name)
}

// certainHost returns the host a new instance will run on when only one
// can take it: the one host that is ready, not cordoned, offers the
// runtime class and matches the selector; "" when several could, or none
// now. single is set when the pool has one host in all, so that every
// instance waiting to be placed will land on it too.
func (s *Server) certainHost(ctx context.Context, spec *api.InstanceSpec) (name string, h hostcontract.Host, single bool, err error) {
	hosts, err := s.store.ListHosts(ctx)
	if err != nil {
		return "", nil, false, err
	}
	for _, rec := range hosts {
		if rec.Status.Phase != api.HostReady || rec.Cordoned || !slices.Contains(rec.RuntimeClasses, spec.Runtime) {
			continue
		}
		match := true
		for k, v := range spec.HostSelector {
			if rec.Labels[k] != v {
				match = false
			}
		}
		if !match {
			continue
		}
		if name != "" {
			return "", nil, false, nil // more than one
		}
		name = rec.Name
	}
	if name == "" {
		return "", nil, false, nil
	}
	// The all-in-one's directory answers any name with its own host: only
	// ask a host that is the one named.
	if got, ok := s.hosts.Host(name); ok && got != nil && got.Name() == name {
		h = got
	}
	return name, h, len(hosts) == 1, nil
}
