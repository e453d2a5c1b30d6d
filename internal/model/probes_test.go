package model

import (
	"errors"
	"strings"
	"testing"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
)

func TestProbeDefaults(t *testing.T) {
	s := api.InstanceSpec{Containers: []api.ContainerSpec{{
		Image:          "kanga.test/httpd:latest",
		ReadinessProbe: &api.Probe{HTTPGet: &api.HTTPGetAction{Port: 80}},
		LivenessProbe:  &api.Probe{TCPSocket: &api.TCPSocketAction{Port: 80}, PeriodSeconds: 3},
	}}}
	Defaults(&s, "runc")
	r := s.Containers[0].ReadinessProbe
	if r.PeriodSeconds != 10 || r.TimeoutSeconds != 1 || r.SuccessThreshold != 1 || r.FailureThreshold != 3 {
		t.Errorf("readiness timing = %+v, want Kubernetes' defaults 10/1/1/3", r)
	}
	if r.HTTPGet.Path != "/" || r.HTTPGet.Scheme != api.URISchemeHTTP {
		t.Errorf("httpGet = %+v, want path / and scheme HTTP", r.HTTPGet)
	}
	if l := s.Containers[0].LivenessProbe; l.PeriodSeconds != 3 {
		t.Errorf("liveness period = %d, want the 3 given", l.PeriodSeconds)
	}
	if err := Validate(&s); err != nil {
		t.Errorf("Validate: %v", err)
	}
}

func TestValidateProbes(t *testing.T) {
	svc := "x"
	for _, tc := range []struct {
		name  string
		probe func(c *api.ContainerSpec)
		want  string // substring of the error; empty for valid
	}{
		{"exec", func(c *api.ContainerSpec) {
			c.LivenessProbe = &api.Probe{Exec: &api.ExecAction{Command: []string{"true"}}}
		}, ""},
		{"grpc", func(c *api.ContainerSpec) {
			c.ReadinessProbe = &api.Probe{GRPC: &api.GRPCAction{Port: 9090, Service: &svc}, SuccessThreshold: 3}
		}, ""},
		{"https with headers", func(c *api.ContainerSpec) {
			c.StartupProbe = &api.Probe{HTTPGet: &api.HTTPGetAction{Port: 443, Scheme: "HTTPS", Path: "/healthz",
				HTTPHeaders: []api.HTTPHeader{{Name: "Host", Value: "example.com"}}}}
		}, ""},
		{"no handler", func(c *api.ContainerSpec) {
			c.LivenessProbe = &api.Probe{PeriodSeconds: 5}
		}, "spec.containers[0].livenessProbe has no handler"},
		{"two handlers", func(c *api.ContainerSpec) {
			c.ReadinessProbe = &api.Probe{Exec: &api.ExecAction{Command: []string{"true"}}, TCPSocket: &api.TCPSocketAction{Port: 80}}
		}, "spec.containers[0].readinessProbe has exec and tcpSocket"},
		{"http port out of range", func(c *api.ContainerSpec) {
			c.ReadinessProbe = &api.Probe{HTTPGet: &api.HTTPGetAction{Port: 70000}}
		}, "spec.containers[0].readinessProbe.httpGet.port 70000 is out of range"},
		{"tcp port zero", func(c *api.ContainerSpec) {
			c.LivenessProbe = &api.Probe{TCPSocket: &api.TCPSocketAction{}}
		}, "spec.containers[0].livenessProbe.tcpSocket.port 0 is out of range"},
		{"grpc port negative", func(c *api.ContainerSpec) {
			c.StartupProbe = &api.Probe{GRPC: &api.GRPCAction{Port: -1}}
		}, "spec.containers[0].startupProbe.grpc.port -1"},
		{"http host", func(c *api.ContainerSpec) {
			c.ReadinessProbe = &api.Probe{HTTPGet: &api.HTTPGetAction{Port: 80, Host: "169.254.169.254"}}
		}, "spec.containers[0].readinessProbe.httpGet.host \"169.254.169.254\" is not allowed"},
		{"tcp host", func(c *api.ContainerSpec) {
			c.ReadinessProbe = &api.Probe{TCPSocket: &api.TCPSocketAction{Port: 80, Host: "10.0.0.1"}}
		}, "tcpSocket.host"},
		{"unknown scheme", func(c *api.ContainerSpec) {
			c.ReadinessProbe = &api.Probe{HTTPGet: &api.HTTPGetAction{Port: 80, Scheme: "FTP"}}
		}, "spec.containers[0].readinessProbe.httpGet.scheme \"FTP\" is not HTTP or HTTPS"},
		{"relative path", func(c *api.ContainerSpec) {
			c.ReadinessProbe = &api.Probe{HTTPGet: &api.HTTPGetAction{Port: 80, Path: "healthz"}}
		}, "httpGet.path"},
		{"path with CRLF", func(c *api.ContainerSpec) {
			c.ReadinessProbe = &api.Probe{HTTPGet: &api.HTTPGetAction{Port: 80, Path: "/a\r\nX-Evil: 1"}}
		}, "httpGet.path"},
		{"bad header name", func(c *api.ContainerSpec) {
			c.ReadinessProbe = &api.Probe{HTTPGet: &api.HTTPGetAction{Port: 80, HTTPHeaders: []api.HTTPHeader{{Name: "a b"}}}}
		}, "httpHeaders[0].name"},
		{"header value with LF", func(c *api.ContainerSpec) {
			c.ReadinessProbe = &api.Probe{HTTPGet: &api.HTTPGetAction{Port: 80, HTTPHeaders: []api.HTTPHeader{{Name: "X", Value: "a\nb"}}}}
		}, "httpHeaders[0].value"},
		{"empty exec", func(c *api.ContainerSpec) {
			c.LivenessProbe = &api.Probe{Exec: &api.ExecAction{}}
		}, "spec.containers[0].livenessProbe.exec.command is empty"},
		{"negative failure threshold", func(c *api.ContainerSpec) {
			c.LivenessProbe = &api.Probe{Exec: &api.ExecAction{Command: []string{"true"}}, FailureThreshold: -1}
		}, "spec.containers[0].livenessProbe.failureThreshold -1"},
		{"negative success threshold", func(c *api.ContainerSpec) {
			c.ReadinessProbe = &api.Probe{Exec: &api.ExecAction{Command: []string{"true"}}, SuccessThreshold: -2}
		}, "spec.containers[0].readinessProbe.successThreshold -2"},
		{"negative initial delay", func(c *api.ContainerSpec) {
			c.ReadinessProbe = &api.Probe{Exec: &api.ExecAction{Command: []string{"true"}}, InitialDelaySeconds: -1}
		}, "readinessProbe.initialDelaySeconds -1"},
		{"negative period", func(c *api.ContainerSpec) {
			c.ReadinessProbe = &api.Probe{Exec: &api.ExecAction{Command: []string{"true"}}, PeriodSeconds: -5}
		}, "readinessProbe.periodSeconds -5"},
		{"liveness success threshold", func(c *api.ContainerSpec) {
			c.LivenessProbe = &api.Probe{Exec: &api.ExecAction{Command: []string{"true"}}, SuccessThreshold: 2}
		}, "spec.containers[0].livenessProbe.successThreshold 2: must be 1"},
		{"startup success threshold", func(c *api.ContainerSpec) {
			c.StartupProbe = &api.Probe{Exec: &api.ExecAction{Command: []string{"true"}}, SuccessThreshold: 2}
		}, "startupProbe.successThreshold 2: must be 1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := api.InstanceSpec{Containers: []api.ContainerSpec{{Image: "kanga.test/busybox:latest"}}}
			tc.probe(&s.Containers[0])
			Defaults(&s, "runc")
			err := Validate(&s)
			checkValidate(t, err, tc.want)
		})
	}
}

func TestInitContainersHaveNoProbes(t *testing.T) {
	s := api.InstanceSpec{
		InitContainers: []api.ContainerSpec{{Name: "setup", Image: "kanga.test/busybox:latest",
			ReadinessProbe: &api.Probe{Exec: &api.ExecAction{Command: []string{"true"}}}}},
		Containers: []api.ContainerSpec{{Image: "kanga.test/busybox:latest"}},
	}
	Defaults(&s, "runc")
	err := Validate(&s)
	if err == nil || !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), "spec.initContainers[0].readinessProbe") {
		t.Fatalf("Validate = %v, want a 400 naming spec.initContainers[0].readinessProbe", err)
	}
}
