package model

import (
	"net/netip"
	"strconv"
	"strings"

	"github.com/kanga-run/kanga/api"
)

// Stop grace periods: the platform's default, and the longest a stop or
// a spec may ask for.
const (
	DefaultStopGrace = 10
	MaxStopGrace     = 3600
)

// StopGrace is the grace period of a stop of spec that gives none.
func StopGrace(spec *api.InstanceSpec) int {
	if g := spec.TerminationGracePeriodSeconds; g != nil {
		return int(*g)
	}
	return DefaultStopGrace
}

// MaxHookSleep caps a sleep hook: a preStop is bounded by the stop's
// grace period anyway, a postStart holds the container's readiness.
const MaxHookSleep = 3600

// defaultHandler fills in what a hook may leave out.
func defaultHandler(h *api.LifecycleHandler) {
	if h == nil || h.HTTPGet == nil {
		return
	}
	if h.HTTPGet.Path == "" {
		h.HTTPGet.Path = "/"
	}
	if h.HTTPGet.Scheme == "" {
		h.HTTPGet.Scheme = api.URISchemeHTTP
	}
}

// validateLifecycle checks the hooks of container f (after defaults).
func validateLifecycle(f string, l *api.Lifecycle) []error {
	if l == nil {
		return nil
	}
	var errs []error
	for _, h := range []struct {
		field string
		h     *api.LifecycleHandler
	}{{"postStart", l.PostStart}, {"preStop", l.PreStop}} {
		if h.h != nil {
			errs = append(errs, validateHandler(f+".lifecycle."+h.field, h.h)...)
		}
	}
	return errs
}

func validateHandler(f string, h *api.LifecycleHandler) []error {
	var errs []error
	var handlers []string
	if h.Exec != nil {
		handlers = append(handlers, "exec")
		errs = append(errs, validateExec(f+".exec", h.Exec)...)
	}
	if g := h.HTTPGet; g != nil {
		handlers = append(handlers, "httpGet")
		// An address, not a name: a name would be resolved by the host,
		// whose resolver is not the instance's. The address is dialled
		// from inside the instance's network, so it reaches only what the
		// instance itself could.
		if g.Host != "" {
			if a, err := netip.ParseAddr(g.Host); err != nil || a.Zone() != "" {
				errs = append(errs, invalid("%s.httpGet.host %q is not an IP address (leave it out for the instance's own)", f, truncate(g.Host)))
			}
		}
		errs = append(errs, validateHTTPGet(f+".httpGet", g)...)
	}
	if s := h.Sleep; s != nil {
		handlers = append(handlers, "sleep")
		if s.Seconds < 0 || s.Seconds > MaxHookSleep {
			errs = append(errs, invalid("%s.sleep.seconds %d is out of range 0-%d", f, s.Seconds, MaxHookSleep))
		}
	}
	switch len(handlers) {
	case 0:
		errs = append(errs, invalid("%s has no handler: give exactly one of exec, httpGet, sleep", f))
	case 1:
	default:
		errs = append(errs, invalid("%s has %s: give exactly one of exec, httpGet, sleep", f, strings.Join(handlers, " and ")))
	}
	return errs
}

// HookDescription is a short form of a hook for events, e.g.
// "exec [sh -c ...]" or "http-get http://10.0.0.3:8080/echo".
func HookDescription(h *api.LifecycleHandler) string {
	switch {
	case h == nil:
		return ""
	case h.Exec != nil:
		return ProbeDescription(&api.Probe{Exec: h.Exec})
	case h.HTTPGet != nil:
		g := h.HTTPGet
		host := g.Host
		if a, err := netip.ParseAddr(host); err == nil && a.Is6() {
			host = "[" + host + "]"
		}
		return "http-get " + strings.ToLower(g.Scheme) + "://" + host + ":" + strconv.Itoa(g.Port) + g.Path
	case h.Sleep != nil:
		return "sleep " + strconv.FormatInt(h.Sleep.Seconds, 10) + "s"
	}
	return ""
}

// validateTermination checks a container's termination message file and
// policy. The file may be under /dev, where Kubernetes puts it
// (/dev/termination-log): it is bound over the container's own /dev
// tmpfs, not the host's.
func validateTermination(f string, c *api.ContainerSpec) []error {
	var errs []error
	if p := c.TerminationMessagePath; p != "" {
		field := f + ".terminationMessagePath"
		check := p
		if rest, ok := strings.CutPrefix(p, "/dev/"); ok {
			// The mount path rules, but for the /dev root.
			check = "/termination-log-dir/" + rest
			if strings.Trim(rest, "/.") == "" {
				check = "/dev" // /dev itself
			}
		}
		if err := ValidateMountPath(field, check); err != nil {
			errs = append(errs, invalid("%s %q is not a file path the container may have: absolute, without '..', not the root nor under /proc, /sys or /.kanga", field, truncate(p)))
		}
	}
	switch c.TerminationMessagePolicy {
	case "", api.TerminationMessageReadFile, api.TerminationMessageFallbackToLogsOnError:
	default:
		errs = append(errs, invalid("%s.terminationMessagePolicy %q is not File or FallbackToLogsOnError", f, truncate(c.TerminationMessagePolicy)))
	}
	return errs
}
