package model

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/containerd/containerd/pkg/cap"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
)

// DefaultCapabilities is the capability set of a container that asks for
// no change: Docker's (and containerd's) default set without CAP_NET_RAW.
// Raw sockets let a tenant forge ARP replies and source addresses on the
// shared bridge; ping keeps working without them through ICMP datagram
// sockets (net.ipv4.ping_group_range, set in each instance's namespace as
// Docker does).
var DefaultCapabilities = []string{
	"CAP_CHOWN",
	"CAP_DAC_OVERRIDE",
	"CAP_FSETID",
	"CAP_FOWNER",
	"CAP_MKNOD",
	"CAP_SETGID",
	"CAP_SETUID",
	"CAP_SETFCAP",
	"CAP_SETPCAP",
	"CAP_NET_BIND_SERVICE",
	"CAP_SYS_CHROOT",
	"CAP_KILL",
	"CAP_AUDIT_WRITE",
}

// NormalizeCapability turns "net_admin" or "CAP_NET_ADMIN" into
// "CAP_NET_ADMIN"; ok is false for a name the kernel does not know.
func NormalizeCapability(name string) (string, bool) {
	n := strings.ToUpper(strings.TrimSpace(name))
	if !strings.HasPrefix(n, "CAP_") {
		n = "CAP_" + n
	}
	return n, slices.Contains(cap.Known(), n)
}

// ParseCapabilities normalizes a list of capability names; each unknown
// name is a 400 naming field[i].
func ParseCapabilities(field string, names []string) ([]string, error) {
	out := make([]string, 0, len(names))
	var errs []error
	for i, n := range names {
		c, ok := NormalizeCapability(n)
		if !ok {
			errs = append(errs, invalid("%s[%d] %q is not a Linux capability (see capabilities(7), e.g. NET_ADMIN)", field, i, n))
			continue
		}
		if !slices.Contains(out, c) {
			out = append(out, c)
		}
	}
	return out, errors.Join(errs...)
}

// SecurityBounds are the operator's limits on what an administrator may
// allow a tenant (kanga up|server|agent --tenant-allowed-caps,
// --tenant-allow-unconfined). The zero value allows nothing.
type SecurityBounds struct {
	// Capabilities may be granted to tenants beyond the default set.
	Capabilities []string
	// Unconfined may be granted: containers without seccomp.
	Unconfined bool
	// PrivilegeEscalation may be granted: containers without
	// no_new_privs (--tenant-allow-privilege-escalation).
	PrivilegeEscalation bool
}

// ValidateTenantSecurity checks a tenant's security policy against the
// operator's port policy and bounds, and normalizes it in place. What
// exceeds the bounds is a 403: only the operator can widen them.
func ValidateTenantSecurity(t *api.TenantSecurity, ports PortPolicy, b SecurityBounds) error {
	if t == nil {
		return nil
	}
	errs := []error{validateTenantPorts(t, ports)}
	caps, err := ParseCapabilities("security.allowedCapabilities", t.AllowedCapabilities)
	errs = append(errs, err)
	if err == nil {
		t.AllowedCapabilities = caps
		for i, c := range caps {
			if !slices.Contains(DefaultCapabilities, c) && !slices.Contains(b.Capabilities, c) {
				errs = append(errs, fmt.Errorf("security.allowedCapabilities[%d] %s may not be granted to tenants on this platform: the operator allows %s (--tenant-allowed-caps): %w",
					i, c, listOrNone(b.Capabilities), errdefs.ErrPermissionDenied))
			}
		}
	}
	if t.AllowPrivilegeEscalation && !b.PrivilegeEscalation {
		errs = append(errs, fmt.Errorf("security.allowPrivilegeEscalation: the operator does not let tenants run containers without no_new_privs (--tenant-allow-privilege-escalation): %w", errdefs.ErrPermissionDenied))
	}
	if t.AllowUnconfined && !b.Unconfined {
		errs = append(errs, fmt.Errorf("security.allowUnconfined: the operator does not let tenants run containers without seccomp (--tenant-allow-unconfined): %w", errdefs.ErrPermissionDenied))
	}
	return errors.Join(errs...)
}

func listOrNone(l []string) string {
	if len(l) == 0 {
		return "none"
	}
	return strings.Join(l, ", ")
}

// validateSecurityContext is the part of Validate about a container's
// security context: names and values, not whether they are allowed.
func validateSecurityContext(f string, sc *api.SecurityContext) []error {
	if sc == nil {
		return nil
	}
	var errs []error
	if c := sc.Capabilities; c != nil {
		for j, n := range c.Add {
			if strings.EqualFold(strings.TrimSpace(n), "ALL") {
				errs = append(errs, invalid("%s.securityContext.capabilities.add[%d] ALL would make a privileged container, which Kanga does not run: add the capabilities the process needs", f, j))
			} else if _, ok := NormalizeCapability(n); !ok {
				errs = append(errs, invalid("%s.securityContext.capabilities.add[%d] %q is not a Linux capability (see capabilities(7), e.g. NET_ADMIN)", f, j, n))
			}
		}
		for j, n := range c.Drop {
			if _, ok := NormalizeCapability(n); !ok && !strings.EqualFold(strings.TrimSpace(n), "ALL") {
				errs = append(errs, invalid("%s.securityContext.capabilities.drop[%d] %q is not a Linux capability or ALL", f, j, n))
			}
		}
	}
	if p := sc.SeccompProfile; p != nil {
		switch p.Type {
		case api.SeccompRuntimeDefault, api.SeccompUnconfined:
		default:
			errs = append(errs, invalid("%s.securityContext.seccompProfile.type %q is not RuntimeDefault or Unconfined", f, p.Type))
		}
	}
	if sc.Privileged != nil && *sc.Privileged {
		errs = append(errs, invalid("%s.securityContext.privileged: Kanga does not run privileged containers: add the capabilities the process needs (capabilities.add) instead", f))
	}
	errs = append(errs, checkID(f+".securityContext.runAsUser", sc.RunAsUser)...)
	errs = append(errs, checkID(f+".securityContext.runAsGroup", sc.RunAsGroup)...)
	if n := len(sc.SupplementalGroups); n > MaxSupplementalGroups {
		errs = append(errs, invalid("%s.securityContext.supplementalGroups has %d groups, at most %d", f, n, MaxSupplementalGroups))
	} else {
		for j, g := range sc.SupplementalGroups {
			errs = append(errs, checkID(fmt.Sprintf("%s.securityContext.supplementalGroups[%d]", f, j), &g)...)
		}
	}
	if sc.RunAsNonRoot != nil && *sc.RunAsNonRoot && sc.RunAsUser != nil && *sc.RunAsUser == 0 {
		errs = append(errs, invalid("%s.securityContext.runAsNonRoot is set and runAsUser is 0 (root): give a non-zero runAsUser", f))
	}
	return errs
}

// MaxID is the largest user or group id a container may run as, as in
// Kubernetes: ids are 32-bit, and the top half is left to the host's
// user-namespace ranges.
const MaxID = 1<<31 - 1

// MaxSupplementalGroups caps a container's supplementalGroups (the
// kernel allows 65536; no workload needs more than a handful).
const MaxSupplementalGroups = 32

// checkID checks a user or group id field: unset, or 0 to MaxID.
func checkID(field string, id *int64) []error {
	if id == nil || (*id >= 0 && *id <= MaxID) {
		return nil
	}
	return []error{invalid("%s %d is out of range 0-%d: give a numeric id (names are not resolved)", field, *id, MaxID)}
}

// validateInstanceSecurity checks spec.securityContext.
func validateInstanceSecurity(sc *api.InstanceSecurityContext) []error {
	if sc == nil {
		return nil
	}
	return checkID("spec.securityContext.fsGroup", sc.FSGroup)
}

// ContainerGroups are the supplemental groups the spec gives container
// c beyond its image's: the instance's fsGroup first, then its own
// supplementalGroups, without repeats.
func ContainerGroups(spec *api.InstanceSpec, c *api.ContainerSpec) []uint32 {
	var out []uint32
	add := func(g int64) {
		if g >= 0 && g <= MaxID && !slices.Contains(out, uint32(g)) {
			out = append(out, uint32(g))
		}
	}
	if spec.SecurityContext != nil && spec.SecurityContext.FSGroup != nil {
		add(*spec.SecurityContext.FSGroup)
	}
	if c.SecurityContext != nil {
		for _, g := range c.SecurityContext.SupplementalGroups {
			add(g)
		}
	}
	return out
}

// PrivilegeEscalation reports whether a container asks to run without
// no_new_privs.
func PrivilegeEscalation(sc *api.SecurityContext) bool {
	return sc != nil && sc.AllowPrivilegeEscalation != nil && *sc.AllowPrivilegeEscalation
}

// PrivilegeEscalationAllowed reports whether containers may run without
// no_new_privs under tenant policy t and operator bounds b (t nil: the
// host's view).
func PrivilegeEscalationAllowed(t *api.TenantSecurity, b SecurityBounds) bool {
	return b.PrivilegeEscalation && (t == nil || t.AllowPrivilegeEscalation)
}

// RunAsNonRoot reports whether a container must not run as root.
func RunAsNonRoot(sc *api.SecurityContext) bool {
	return sc != nil && sc.RunAsNonRoot != nil && *sc.RunAsNonRoot
}

// CheckSecurity checks that every container of a validated spec loosens
// its sandbox only as far as the tenant's policy t allows, itself bounded
// by the operator's b now (which may have narrowed since t was set). A
// capability of the default set may always be added (it is there
// already); dropping is always allowed.
func CheckSecurity(spec *api.InstanceSpec, tenantName string, t *api.TenantSecurity, b SecurityBounds) error {
	if t == nil {
		t = &api.TenantSecurity{} // a tenant without a policy is allowed nothing more
	}
	var errs []error
	for _, ct := range AllContainers(spec) {
		sc := ct.Spec.SecurityContext
		if sc == nil {
			continue
		}
		f := ct.Field + ".securityContext"
		if sc.Capabilities != nil {
			for j, n := range sc.Capabilities.Add {
				cp, _ := NormalizeCapability(n)
				if !CapabilityAllowed(cp, t, b) {
					errs = append(errs, fmt.Errorf("%s.capabilities.add[%d]: tenant %q may not add %s: an administrator can allow it with kanga tenant security %s --allow-caps %s, within what the operator allows (%s): %w",
						f, j, tenantName, cp, tenantName, strings.TrimPrefix(cp, "CAP_"), listOrNone(b.Capabilities), errdefs.ErrPermissionDenied))
				}
			}
		}
		if PrivilegeEscalation(sc) && !PrivilegeEscalationAllowed(t, b) {
			errs = append(errs, fmt.Errorf("%s.allowPrivilegeEscalation: tenant %q may not run containers without no_new_privs: an administrator can allow it with kanga tenant security %s --allow-privilege-escalation, if the operator allows it (--tenant-allow-privilege-escalation): %w",
				f, tenantName, tenantName, errdefs.ErrPermissionDenied))
		}
		if Unconfined(sc) && !UnconfinedAllowed(t, b) {
			errs = append(errs, fmt.Errorf("%s.seccompProfile: tenant %q may not run containers without seccomp: an administrator can allow it with kanga tenant security %s --allow-unconfined, if the operator allows it (--tenant-allow-unconfined): %w",
				f, tenantName, tenantName, errdefs.ErrPermissionDenied))
		}
	}
	return errors.Join(errs...)
}

// CapabilityAllowed reports whether a container may add capability c
// (normalized) under tenant policy t and operator bounds b; a nil t is the
// host's view, which knows only the operator's bounds.
func CapabilityAllowed(c string, t *api.TenantSecurity, b SecurityBounds) bool {
	if slices.Contains(DefaultCapabilities, c) {
		return true
	}
	if !slices.Contains(b.Capabilities, c) {
		return false
	}
	if t == nil {
		return true
	}
	return slices.ContainsFunc(t.AllowedCapabilities, func(a string) bool {
		n, _ := NormalizeCapability(a)
		return n == c
	})
}

// UnconfinedAllowed reports whether containers may run without seccomp
// under tenant policy t and operator bounds b (t nil: the host's view).
func UnconfinedAllowed(t *api.TenantSecurity, b SecurityBounds) bool {
	return b.Unconfined && (t == nil || t.AllowUnconfined)
}

// Unconfined reports whether a container asks to run without seccomp.
func Unconfined(sc *api.SecurityContext) bool {
	return sc != nil && sc.SeccompProfile != nil && sc.SeccompProfile.Type == api.SeccompUnconfined
}

// DefaultSecurity reports whether a security context leaves the
// platform's default sandbox as it is: the capability set, seccomp,
// no_new_privs and a writable root filesystem. The process's user and
// groups are not part of it.
func DefaultSecurity(sc *api.SecurityContext) bool {
	if sc == nil {
		return true
	}
	if c := sc.Capabilities; c != nil && (len(c.Add) > 0 || len(c.Drop) > 0) {
		return false
	}
	return !Unconfined(sc) && !PrivilegeEscalation(sc) && !sc.ReadOnlyRootFilesystem
}

// ContainerCapabilities is a container's capability set: the default,
// without what it drops (ALL drops every one), with what it adds, in the
// kernel's order. The spec is validated: unknown names are skipped.
func ContainerCapabilities(sc *api.SecurityContext) []string {
	set := map[string]bool{}
	for _, c := range DefaultCapabilities {
		set[c] = true
	}
	if sc != nil && sc.Capabilities != nil {
		for _, n := range sc.Capabilities.Drop {
			if strings.EqualFold(strings.TrimSpace(n), "ALL") {
				clear(set)
				break
			}
			if c, ok := NormalizeCapability(n); ok {
				delete(set, c)
			}
		}
		for _, n := range sc.Capabilities.Add {
			if c, ok := NormalizeCapability(n); ok {
				set[c] = true
			}
		}
	}
	out := []string{}
	for _, c := range cap.Known() {
		if set[c] {
			out = append(out, c)
		}
	}
	return out
}
