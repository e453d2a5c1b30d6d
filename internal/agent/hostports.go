package agent

import (
	"context"
	"errors"
	"fmt"
	iofs "io/fs"
	"net"
	"net/netip"
	"runtime"
	"slices"

	"github.com/prometheus/procfs"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
	"github.com/kanga-run/kanga/internal/model"
)

// Published ports are DNAT rules in the host's namespace (the CNI portmap
// plugin), which open no socket: nothing but Kanga stops a port from being
// published over one a host process or the platform itself listens on, and
// the rule would win (a tenant publishing 127.0.0.1:7420 took the API's
// traffic). The agent refuses such ports before it sets a network up, and
// answers the API's question at admission in the all-in-one.

// CheckPorts implements hostcontract.PortChecker: the host's part of admitting
// published ports (its policy, its addresses, its reserved ports and its
// listeners); other instances are the API's to check.
func (a *Agent) CheckPorts(_ context.Context, ports []api.PortMapping) error {
	return a.checkHostPorts(ports)
}

// checkHostPorts checks ports against the operator's policy on this host
// (400), against the host's own addresses (400) and against the sockets
// host processes listen on (409).
func (a *Agent) checkHostPorts(ports []api.PortMapping) error {
	if err := a.cfg.Ports.CheckPorts(ports); err != nil {
		return err
	}
	var errs []error
	for i, p := range ports {
		if model.IsWildcard(p.HostIP) {
			continue
		}
		if ok, err := localAddress(p.HostIP); err != nil {
			return err
		} else if !ok {
			errs = append(errs, fmt.Errorf("spec.ports[%d].hostIP %s is not an address of host %s: publish on one of its addresses, or on 127.0.0.1: %w",
				i, p.HostIP, a.cfg.HostName, errdefs.ErrInvalidArgument))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	ls, err := hostListeners()
	if err != nil {
		return fmt.Errorf("reading the host's sockets: %w", err)
	}
	for i, p := range ports {
		for _, l := range ls {
			if model.PortsConflict(p, l) {
				errs = append(errs, model.PortInUse(fmt.Sprintf("spec.ports[%d]", i), p, "a process on host "+a.cfg.HostName))
				break
			}
		}
	}
	return errors.Join(errs...)
}

// localAddress reports whether the kernel delivers packets for ip to this
// host (a local route: an interface address, or 127.0.0.0/8 on lo).
func localAddress(ip string) (bool, error) {
	addr := net.ParseIP(ip)
	if addr == nil {
		return false, nil
	}
	routes, err := netlink.RouteGet(addr)
	if err != nil {
		// No route at all: certainly not local.
		return false, nil
	}
	for _, r := range routes {
		if r.Type == unix.RTN_LOCAL {
			return true, nil
		}
	}
	return false, nil
}

// hostListeners lists the sockets that receive new traffic on the host, as
// published ports would: TCP sockets listening and unconnected UDP
// sockets, from /proc/net/{tcp,tcp6,udp,udp6} of the agent's (the host's)
// network namespace. An IPv6 socket on :: takes IPv4 too (unless
// IPV6_V6ONLY, which /proc does not show: counted anyway), one on an
// IPv4-mapped address takes that address; other IPv6 sockets take no IPv4
// traffic, the only family ports are published on.
func hostListeners() ([]api.PortMapping, error) {
	// The calling thread's view, not the process's: /proc/net follows the
	// thread group leader, which is not where the agent's sockets are if
	// it ever joined another namespace. An unlocked goroutine's thread is
	// in the agent's own.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	fs, err := procfs.NewFS("/proc/thread-self")
	if err != nil {
		return nil, err
	}
	var out []api.PortMapping
	add := func(local net.IP, port uint64, proto string) {
		a, ok := netip.AddrFromSlice(local)
		if !ok {
			return
		}
		v6 := !a.Is4()
		a = a.Unmap()
		switch {
		case a.IsUnspecified():
			out = append(out, api.PortMapping{HostPort: int(port), Protocol: proto})
		case !v6 || a.Is4():
			out = append(out, api.PortMapping{HostIP: a.String(), HostPort: int(port), Protocol: proto})
		}
	}
	const tcpListen = 10
	for _, read := range []func() (procfs.NetTCP, error){fs.NetTCP, fs.NetTCP6} {
		lines, err := read()
		if errors.Is(err, iofs.ErrNotExist) {
			continue // no IPv6 on this host
		}
		if err != nil {
			return nil, err
		}
		for _, l := range lines {
			if l.St == tcpListen {
				add(l.LocalAddr, l.LocalPort, "tcp")
			}
		}
	}
	for _, read := range []func() (procfs.NetUDP, error){fs.NetUDP, fs.NetUDP6} {
		lines, err := read()
		if errors.Is(err, iofs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		for _, l := range lines {
			if l.RemPort == 0 {
				add(l.LocalAddr, l.LocalPort, "udp")
			}
		}
	}
	return out, nil
}

// Start failure reasons of admitStart.
const (
	reasonPortInUse      = "PortInUse"
	reasonPortNotAllowed = "PortNotAllowed"
	reasonNotAllowed     = "SecurityNotAllowed"
)

// admitStart checks, before a new instance's sandbox is set up, what this
// host enforces whatever the control plane admitted: the operator's
// security bounds, and that its ports are allowed here and free (of host
// processes and of the other instances on the host). On success the
// instance holds its ports until its runner ends. It returns the reason to
// fail the instance with.
func (r *runner) admitStart(ctx context.Context, inst *api.Instance) (string, error) {
	if err := r.a.checkSecurity(inst); err != nil {
		return reasonNotAllowed, err
	}
	if len(r.ports) == 0 {
		return "", nil
	}
	// The instances an earlier agent left running hold their ports first.
	select {
	case <-r.a.adopted:
	case <-ctx.Done():
		return "", ctx.Err()
	}
	if err := r.a.checkHostPorts(r.ports); err != nil {
		if errors.Is(err, errdefs.ErrConflict) {
			return reasonPortInUse, err
		}
		return reasonPortNotAllowed, err
	}
	r.a.mu.Lock()
	defer r.a.mu.Unlock()
	var errs []error
	for i, p := range r.ports {
		for _, other := range r.a.runners {
			if other == r || !other.portsHeld {
				continue
			}
			if slices.ContainsFunc(other.ports, func(q api.PortMapping) bool { return model.PortsConflict(p, q) }) {
				holder := "an instance of another tenant"
				if other.tenant == r.tenant {
					holder = fmt.Sprintf("instance %q", other.name)
				}
				errs = append(errs, model.PortInUse(fmt.Sprintf("spec.ports[%d]", i), p, holder+" on host "+r.a.cfg.HostName))
				break
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return reasonPortInUse, err
	}
	r.portsHeld = true
	return "", nil
}

// checkSecurity refuses a container that adds what the operator does not
// let tenants have on this host: the control plane's admission is not the
// host's only guard.
func (a *Agent) checkSecurity(inst *api.Instance) error {
	var errs []error
	for _, c := range model.AllContainers(&inst.Spec) {
		sc := c.Spec.SecurityContext
		if sc == nil {
			continue
		}
		if sc.Capabilities != nil {
			for j, n := range sc.Capabilities.Add {
				if cp, ok := model.NormalizeCapability(n); !ok || !model.CapabilityAllowed(cp, nil, a.cfg.Security) {
					errs = append(errs, fmt.Errorf("%s.securityContext.capabilities.add[%d]: host %s does not give containers %s: %w",
						c.Field, j, a.cfg.HostName, cp, errdefs.ErrPermissionDenied))
				}
			}
		}
		if model.PrivilegeEscalation(sc) && !model.PrivilegeEscalationAllowed(nil, a.cfg.Security) {
			errs = append(errs, fmt.Errorf("%s.securityContext.allowPrivilegeEscalation: host %s does not run containers without no_new_privs: %w",
				c.Field, a.cfg.HostName, errdefs.ErrPermissionDenied))
		}
		if sc.Privileged != nil && *sc.Privileged {
			errs = append(errs, fmt.Errorf("%s.securityContext.privileged: host %s does not run privileged containers: %w",
				c.Field, a.cfg.HostName, errdefs.ErrPermissionDenied))
		}
		if model.Unconfined(sc) && !model.UnconfinedAllowed(nil, a.cfg.Security) {
			errs = append(errs, fmt.Errorf("%s.securityContext.seccompProfile: host %s does not run containers without seccomp: %w",
				c.Field, a.cfg.HostName, errdefs.ErrPermissionDenied))
		}
	}
	return errors.Join(errs...)
}
