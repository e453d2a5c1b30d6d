package model

import (
	"fmt"
	"strings"

	"github.com/kanga-run/kanga/api"
)

// Probe defaults, Kubernetes' own.
const (
	DefaultProbePeriod           = 10
	DefaultProbeTimeout          = 1
	DefaultProbeSuccessThreshold = 1
	DefaultProbeFailureThreshold = 3
)

// Probe caps: a probe runs for the instance's whole life on its host, so
// its inputs stay small.
const (
	MaxProbeHeaders = 32
	MaxProbeHeader  = 4 << 10
	MaxProbeService = 1024
)

// probeKinds names a container's probes for errors and loops.
func probeKinds(c *api.ContainerSpec) []struct {
	field string
	p     *api.Probe
} {
	return []struct {
		field string
		p     *api.Probe
	}{{"livenessProbe", c.LivenessProbe}, {"readinessProbe", c.ReadinessProbe}, {"startupProbe", c.StartupProbe}}
}

// defaultProbe fills in what a probe may leave out. Negative values are
// left for Validate to refuse.
func defaultProbe(p *api.Probe) {
	if p == nil {
		return
	}
	if p.PeriodSeconds == 0 {
		p.PeriodSeconds = DefaultProbePeriod
	}
	if p.TimeoutSeconds == 0 {
		p.TimeoutSeconds = DefaultProbeTimeout
	}
	if p.SuccessThreshold == 0 {
		p.SuccessThreshold = DefaultProbeSuccessThreshold
	}
	if p.FailureThreshold == 0 {
		p.FailureThreshold = DefaultProbeFailureThreshold
	}
	if h := p.HTTPGet; h != nil {
		if h.Path == "" {
			h.Path = "/"
		}
		if h.Scheme == "" {
			h.Scheme = api.URISchemeHTTP
		}
	}
}

// DefaultProbes fills in the probes of every container of spec.
func DefaultProbes(spec *api.InstanceSpec) {
	for i := range spec.Containers {
		c := &spec.Containers[i]
		defaultProbe(c.LivenessProbe)
		defaultProbe(c.ReadinessProbe)
		defaultProbe(c.StartupProbe)
		if l := c.Lifecycle; l != nil {
			defaultHandler(l.PostStart)
			defaultHandler(l.PreStop)
		}
	}
}

// validateExec checks the exec action at f.
func validateExec(f string, e *api.ExecAction) []error {
	errs := validateArgs(f, e.Command, nil)
	if len(e.Command) == 0 || e.Command[0] == "" {
		errs = append(errs, invalid("%s.command is empty: give the program to run, e.g. [\"cat\", \"/tmp/healthy\"]", f))
	}
	return errs
}

// validateHTTPGet checks the HTTP GET action at f, but for its host,
// which probes and hooks allow differently.
func validateHTTPGet(f string, h *api.HTTPGetAction) []error {
	errs := validateProbePort(f, h.Port)
	switch h.Scheme {
	case api.URISchemeHTTP, api.URISchemeHTTPS:
	default:
		errs = append(errs, invalid("%s.scheme %q is not HTTP or HTTPS", f, truncate(h.Scheme)))
	}
	if !strings.HasPrefix(h.Path, "/") || len(h.Path) > MaxPath || strings.ContainsFunc(h.Path, isCtlOrSpace) {
		errs = append(errs, invalid("%s.path %q must start with / and hold no spaces or control characters (at most %d bytes)", f, truncate(h.Path), MaxPath))
	}
	if len(h.HTTPHeaders) > MaxProbeHeaders {
		errs = append(errs, invalid("%s.httpHeaders has %d headers, at most %d", f, len(h.HTTPHeaders), MaxProbeHeaders))
	}
	for i, hd := range h.HTTPHeaders {
		if hd.Name == "" || strings.ContainsFunc(hd.Name, notToken) {
			errs = append(errs, invalid("%s.httpHeaders[%d].name %q is not a header name", f, i, truncate(hd.Name)))
		}
		if len(hd.Value) > MaxProbeHeader || strings.ContainsAny(hd.Value, "\r\n\x00") {
			errs = append(errs, invalid("%s.httpHeaders[%d].value: at most %d bytes, without CR, LF or NUL", f, i, MaxProbeHeader))
		}
	}
	return errs
}

// validateProbes checks the probes of container f (after defaults).
func validateProbes(f string, c *api.ContainerSpec) []error {
	var errs []error
	for _, k := range probeKinds(c) {
		if k.p != nil {
			errs = append(errs, validateProbe(f+"."+k.field, k.field != "readinessProbe", k.p)...)
		}
	}
	return errs
}

func validateProbe(f string, oneSuccess bool, p *api.Probe) []error {
	var errs []error
	var handlers []string
	if p.Exec != nil {
		handlers = append(handlers, "exec")
		errs = append(errs, validateExec(f+".exec", p.Exec)...)
	}
	if h := p.HTTPGet; h != nil {
		handlers = append(handlers, "httpGet")
		if h.Host != "" {
			errs = append(errs, invalid("%s.httpGet.host %q is not allowed: a probe only reaches its own instance (send a Host header in httpHeaders instead)", f, truncate(h.Host)))
		}
		errs = append(errs, validateHTTPGet(f+".httpGet", h)...)
	}
	if t := p.TCPSocket; t != nil {
		handlers = append(handlers, "tcpSocket")
		errs = append(errs, validateProbePort(f+".tcpSocket", t.Port)...)
		if t.Host != "" {
			errs = append(errs, invalid("%s.tcpSocket.host %q is not allowed: a probe only reaches its own instance", f, truncate(t.Host)))
		}
	}
	if g := p.GRPC; g != nil {
		handlers = append(handlers, "grpc")
		errs = append(errs, validateProbePort(f+".grpc", g.Port)...)
		if g.Service != nil && len(*g.Service) > MaxProbeService {
			errs = append(errs, invalid("%s.grpc.service: %d bytes, at most %d", f, len(*g.Service), MaxProbeService))
		}
	}
	switch len(handlers) {
	case 0:
		errs = append(errs, invalid("%s has no handler: give exactly one of exec, httpGet, tcpSocket, grpc", f))
	case 1:
	default:
		errs = append(errs, invalid("%s has %s: give exactly one of exec, httpGet, tcpSocket, grpc", f, strings.Join(handlers, " and ")))
	}
	for _, n := range []struct {
		name string
		v    int
		min  int
	}{
		{"initialDelaySeconds", p.InitialDelaySeconds, 0},
		{"periodSeconds", p.PeriodSeconds, 1},
		{"timeoutSeconds", p.TimeoutSeconds, 1},
		{"successThreshold", p.SuccessThreshold, 1},
		{"failureThreshold", p.FailureThreshold, 1},
	} {
		if n.v < n.min {
			errs = append(errs, invalid("%s.%s %d: must be at least %d", f, n.name, n.v, n.min))
		}
	}
	if oneSuccess && p.SuccessThreshold > 1 {
		errs = append(errs, invalid("%s.successThreshold %d: must be 1 for liveness and startup probes", f, p.SuccessThreshold))
	}
	return errs
}

func validateProbePort(f string, port int) []error {
	if port < 1 || port > 65535 {
		return []error{invalid("%s.port %d is out of range 1-65535", f, port)}
	}
	return nil
}

func isCtlOrSpace(r rune) bool { return r <= ' ' || r == 0x7f }

// notToken tells a rune that may not be in an HTTP header name (RFC 9110
// token).
func notToken(r rune) bool {
	if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' {
		return false
	}
	return !strings.ContainsRune("!#$%&'*+-.^_`|~", r)
}

// ProbeDescription is a short form of a probe for listings and events,
// e.g. "exec [cat /tmp/ok]" or "http-get http://:8080/healthz".
func ProbeDescription(p *api.Probe) string {
	switch {
	case p == nil:
		return ""
	case p.Exec != nil:
		return fmt.Sprintf("exec %v", p.Exec.Command)
	case p.HTTPGet != nil:
		return fmt.Sprintf("http-get %s://:%d%s", strings.ToLower(p.HTTPGet.Scheme), p.HTTPGet.Port, p.HTTPGet.Path)
	case p.TCPSocket != nil:
		return fmt.Sprintf("tcp-socket :%d", p.TCPSocket.Port)
	case p.GRPC != nil:
		return fmt.Sprintf("grpc :%d", p.GRPC.Port)
	}
	return ""
}
