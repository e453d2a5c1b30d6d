package virtualnode

import (
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
)

// probes maps a container's probes onto its Kanga container. A named
// port is resolved against the container's ports; a host is refused, as
// Kanga's API refuses it (a probe reaches only its own instance).
func probes(c corev1.Container, cs *api.ContainerSpec) error {
	var err error
	for _, p := range []struct {
		field string
		in    *corev1.Probe
		out   **api.Probe
	}{
		{"livenessProbe", c.LivenessProbe, &cs.LivenessProbe},
		{"readinessProbe", c.ReadinessProbe, &cs.ReadinessProbe},
		{"startupProbe", c.StartupProbe, &cs.StartupProbe},
	} {
		if p.in == nil {
			continue
		}
		if *p.out, err = probe(c, p.in); err != nil {
			return fmt.Errorf("container %s: %s: %w", c.Name, p.field, err)
		}
	}
	return nil
}

func probe(c corev1.Container, in *corev1.Probe) (*api.Probe, error) {
	out := &api.Probe{
		InitialDelaySeconds: int(in.InitialDelaySeconds),
		PeriodSeconds:       int(in.PeriodSeconds),
		TimeoutSeconds:      int(in.TimeoutSeconds),
		SuccessThreshold:    int(in.SuccessThreshold),
		FailureThreshold:    int(in.FailureThreshold),
	}
	h := in.ProbeHandler
	if h.Exec != nil {
		out.Exec = &api.ExecAction{Command: h.Exec.Command}
	}
	if g := h.HTTPGet; g != nil {
		port, err := probePort(c, g.Port)
		if err != nil {
			return nil, err
		}
		if g.Host != "" {
			return nil, fmt.Errorf("httpGet.host %q: a Kanga probe reaches only its own pod (set a Host header instead): %w", g.Host, errdefs.ErrInvalidArgument)
		}
		a := &api.HTTPGetAction{Path: g.Path, Port: port, Scheme: string(g.Scheme)}
		for _, hd := range g.HTTPHeaders {
			a.HTTPHeaders = append(a.HTTPHeaders, api.HTTPHeader{Name: hd.Name, Value: hd.Value})
		}
		out.HTTPGet = a
	}
	if t := h.TCPSocket; t != nil {
		port, err := probePort(c, t.Port)
		if err != nil {
			return nil, err
		}
		if t.Host != "" {
			return nil, fmt.Errorf("tcpSocket.host %q: a Kanga probe reaches only its own pod: %w", t.Host, errdefs.ErrInvalidArgument)
		}
		out.TCPSocket = &api.TCPSocketAction{Port: port}
	}
	if g := h.GRPC; g != nil {
		out.GRPC = &api.GRPCAction{Port: int(g.Port), Service: g.Service}
	}
	return out, nil
}

// probePort resolves a probe's port, by number or by the name of one of
// the container's ports.
func probePort(c corev1.Container, p intstr.IntOrString) (int, error) {
	if p.Type == intstr.Int {
		return p.IntValue(), nil
	}
	for _, cp := range c.Ports {
		if cp.Name == p.StrVal && !strings.EqualFold(string(cp.Protocol), "UDP") {
			return int(cp.ContainerPort), nil
		}
	}
	return 0, fmt.Errorf("port %q is not the name of a TCP port of the container: %w", p.StrVal, errdefs.ErrInvalidArgument)
}

// lifecycle maps a container's hooks. An httpGet hook's host must be an
// IP address: Kanga dials it from inside the pod's network, never
// resolving a name on the host. tcpSocket, which the kubelet keeps only
// for compatibility and never runs, is refused rather than dropped.
func lifecycle(c corev1.Container, cs *api.ContainerSpec) error {
	l := c.Lifecycle
	if l == nil || (l.PostStart == nil && l.PreStop == nil) {
		return nil
	}
	cs.Lifecycle = &api.Lifecycle{}
	for _, h := range []struct {
		field string
		in    *corev1.LifecycleHandler
		out   **api.LifecycleHandler
	}{
		{"postStart", l.PostStart, &cs.Lifecycle.PostStart},
		{"preStop", l.PreStop, &cs.Lifecycle.PreStop},
	} {
		if h.in == nil {
			continue
		}
		out := &api.LifecycleHandler{}
		switch in := h.in; {
		case in.Exec != nil:
			out.Exec = &api.ExecAction{Command: in.Exec.Command}
		case in.HTTPGet != nil:
			g := in.HTTPGet
			port, err := probePort(c, g.Port)
			if err != nil {
				return fmt.Errorf("container %s: lifecycle.%s: %w", c.Name, h.field, err)
			}
			a := &api.HTTPGetAction{Host: g.Host, Path: g.Path, Port: port, Scheme: string(g.Scheme)}
			for _, hd := range g.HTTPHeaders {
				a.HTTPHeaders = append(a.HTTPHeaders, api.HTTPHeader{Name: hd.Name, Value: hd.Value})
			}
			out.HTTPGet = a
		case in.Sleep != nil:
			out.Sleep = &api.SleepAction{Seconds: in.Sleep.Seconds}
		default:
			return fmt.Errorf("container %s: lifecycle.%s: only exec, httpGet and sleep hooks run: %w", c.Name, h.field, errdefs.ErrInvalidArgument)
		}
		*h.out = out
	}
	return nil
}
