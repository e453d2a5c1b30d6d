package model

import (
	"errors"
	"strings"
	"testing"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
)

func TestParseCPU(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		err  bool
	}{
		{"0.5", 500, false}, {"2", 2000, false}, {"250m", 250, false}, {"1.25", 1250, false},
		{"", 0, true}, {"abc", 0, true}, {"-1", 0, true}, {"0", 0, true}, {"0.0001", 0, true}, {"5x", 0, true}, {"NaN", 0, true},
	} {
		got, err := ParseCPU(tc.in)
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("ParseCPU(%q) = %d, %v; want %d, err=%v", tc.in, got, err, tc.want, tc.err)
		}
		if err != nil && !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("ParseCPU(%q) error %v is not InvalidArgument", tc.in, err)
		}
	}
}

func TestParseMemory(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		err  bool
	}{
		{"256Mi", 256 << 20, false}, {"1Gi", 1 << 30, false}, {"512M", 512e6, false}, {"256m", 256 << 20, false},
		{"1048576", 1 << 20, false}, {"1.5Gi", 3 << 29, false}, {"64k", 64 << 10, false},
		{"", 0, true}, {"lots", 0, true}, {"12XB", 0, true}, {"-5Mi", 0, true}, {"Mi", 0, true},
	} {
		got, err := ParseMemory(tc.in)
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("ParseMemory(%q) = %d, %v; want %d, err=%v", tc.in, got, err, tc.want, tc.err)
		}
	}
}

func TestValidate(t *testing.T) {
	good := func() api.InstanceSpec {
		s := api.InstanceSpec{Containers: []api.ContainerSpec{{Image: "kanga.test/busybox:latest"}}}
		Defaults(&s, "runc")
		return s
	}
	for _, tc := range []struct {
		name   string
		mutate func(*api.InstanceSpec)
		want   string // substring of the error; empty for valid
	}{
		{"valid", func(*api.InstanceSpec) {}, ""},
		{"no containers", func(s *api.InstanceSpec) { s.Containers = nil }, "spec.containers is empty"},
		{"no image", func(s *api.InstanceSpec) { s.Containers[0].Image = "" }, "spec.containers[0].image is empty"},
		{"bad memory", func(s *api.InstanceSpec) { s.Resources.Memory = "lots" }, "spec.resources.memory"},
		{"tiny memory", func(s *api.InstanceSpec) { s.Resources.Memory = "1Mi" }, "below the minimum"},
		{"bad cpu", func(s *api.InstanceSpec) { s.Resources.CPU = "fast" }, "spec.resources.cpu"},
		{"bad restart", func(s *api.InstanceSpec) { s.RestartPolicy = "sometimes" }, "spec.restartPolicy"},
		{"zero deadline", func(s *api.InstanceSpec) { s.ActiveDeadlineSeconds = new(int64) }, "spec.activeDeadlineSeconds 0"},
		{"bad runtime", func(s *api.InstanceSpec) { s.Runtime = "kata" }, "choose one of runc, crun, gvisor, enclave"},
		{"dup container", func(s *api.InstanceSpec) { s.Containers = append(s.Containers, s.Containers[0]) }, "unique"},
		{"bad env", func(s *api.InstanceSpec) { s.Containers[0].Env = []api.EnvVar{{Name: "1X"}} }, "env[0].name"},
		{"relative workdir", func(s *api.InstanceSpec) { s.Containers[0].WorkingDir = "tmp" }, "absolute"},
		{"bad port", func(s *api.InstanceSpec) {
			s.Ports = []api.PortMapping{{HostPort: 70000, ContainerPort: 80, Protocol: "tcp"}}
		}, "hostPort 70000"},
		{"bad proto", func(s *api.InstanceSpec) {
			s.Ports = []api.PortMapping{{HostPort: 8080, ContainerPort: 80, Protocol: "sctp"}}
		}, "not tcp or udp"},
		{"bad host ip", func(s *api.InstanceSpec) {
			s.Ports = []api.PortMapping{{HostIP: "localhost", HostPort: 8080, ContainerPort: 80, Protocol: "tcp"}}
		}, "not an IP"},
		{"dup host port", func(s *api.InstanceSpec) {
			p := api.PortMapping{HostPort: 8080, ContainerPort: 80, Protocol: "tcp"}
			s.Ports = []api.PortMapping{p, p}
		}, "twice"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := good()
			tc.mutate(&s)
			err := Validate(&s)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v does not mention %q", err, tc.want)
			}
			if !errors.Is(err, errdefs.ErrInvalidArgument) {
				t.Fatalf("error %v is not InvalidArgument", err)
			}
		})
	}
}

func TestDerivePhase(t *testing.T) {
	code := func(n int) *int { return &n }
	term := func(c int) api.ContainerStatus {
		return api.ContainerStatus{State: api.ContainerTerminated, ExitCode: code(c)}
	}
	run := api.ContainerStatus{State: api.ContainerRunning}
	for _, tc := range []struct {
		name    string
		policy  api.RestartPolicy
		stopped bool
		cs      []api.ContainerStatus
		want    api.Phase
	}{
		{"none yet", api.RestartNever, false, nil, api.PhasePending},
		{"running", api.RestartNever, false, []api.ContainerStatus{run}, api.PhaseRunning},
		{"succeeded", api.RestartNever, false, []api.ContainerStatus{term(0)}, api.PhaseSucceeded},
		{"failed", api.RestartNever, false, []api.ContainerStatus{term(0), term(3)}, api.PhaseFailed},
		{"one still running", api.RestartNever, false, []api.ContainerStatus{term(3), run}, api.PhaseRunning},
		{"on-failure restarts", api.RestartOnFailure, false, []api.ContainerStatus{term(1)}, api.PhaseRunning},
		{"on-failure done", api.RestartOnFailure, false, []api.ContainerStatus{term(0)}, api.PhaseSucceeded},
		{"always restarts", api.RestartAlways, false, []api.ContainerStatus{term(0)}, api.PhaseRunning},
		{"stopped always", api.RestartAlways, true, []api.ContainerStatus{term(137)}, api.PhaseFailed},
		{"waiting", api.RestartNever, false, []api.ContainerStatus{{State: api.ContainerWaiting}}, api.PhaseCreating},
	} {
		if got := DerivePhase(tc.policy, tc.stopped, tc.cs); got != tc.want {
			t.Errorf("%s: got %s, want %s", tc.name, got, tc.want)
		}
	}
}

func TestGenerateName(t *testing.T) {
	for in, prefix := range map[string]string{
		"kanga.test/busybox:latest":     "busybox-",
		"127.0.0.1:5000/My_App@sha256:": "my-app-",
		":":                             "instance-",
	} {
		n := GenerateName(in)
		if !strings.HasPrefix(n, prefix) || ValidateName("name", n) != nil {
			t.Errorf("GenerateName(%q) = %q, want valid name with prefix %q", in, n, prefix)
		}
	}
}

func TestUnplaceable(t *testing.T) {
	hosts := map[string][]string{"a": {"runc", "crun"}, "b": {"runc", "gvisor"}}
	if why := Unplaceable("gvisor", hosts); why != "" {
		t.Errorf("gvisor is offered by host b, got %q", why)
	}
	if why := Unplaceable("enclave", hosts); why != "0/2 hosts offer runtime class enclave: it needs host capability sgx, which no host advertises" {
		t.Errorf("enclave: %q", why)
	}
	if why := Unplaceable("crun", map[string][]string{"a": {"runc"}}); why != "0/1 hosts offer runtime class crun" {
		t.Errorf("crun: %q", why)
	}
	if err := ValidateRuntimeClasses("allowed", []string{"gvisor", "kata"}); err == nil || !strings.Contains(err.Error(), `"kata"`) {
		t.Errorf("ValidateRuntimeClasses: %v", err)
	}
}

func TestParseBandwidth(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		err  bool
	}{
		{"5M", 5e6, false}, {"5Mbit", 5e6, false}, {"100Mbit", 100e6, false}, {"500k", 500e3, false},
		{"1G", 1e9, false}, {"8Mi", 8 << 20, false}, {"64000", 64000, false}, {"5Mbps", 5e6, false},
		{"", 0, true}, {"fast", 0, true}, {"-1M", 0, true}, {"1", 0, true}, {"1T", 0, true},
	} {
		got, err := ParseBandwidth(tc.in)
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("ParseBandwidth(%q) = %d, %v; want %d, err=%v", tc.in, got, err, tc.want, tc.err)
		}
	}
}

func TestValidateResources(t *testing.T) {
	for _, tc := range []struct {
		name string
		res  api.Resources
		typ  string
		want string
	}{
		{"full spec", api.Resources{CPU: "2", CPUPolicy: "dedicated", Memory: "1Gi", Pids: 100, DiskReadBPS: "10Mi", DiskWriteIOPS: 200, IngressBandwidth: "8M", EgressBandwidth: "100Mbit"}, "", ""},
		{"dedicated fraction", api.Resources{CPU: "0.5", CPUPolicy: "dedicated"}, "", "whole number of cores"},
		{"dedicated without cpu", api.Resources{CPUPolicy: "dedicated"}, "", "whole number of cores"},
		{"bad policy", api.Resources{CPUPolicy: "burst"}, "", "cpuPolicy"},
		{"few pids", api.Resources{Pids: 2}, "", "spec.resources.pids"},
		{"bad disk bps", api.Resources{DiskWriteBPS: "fast"}, "", "diskWriteBps"},
		{"tiny iops", api.Resources{DiskReadIOPS: 3}, "", "diskReadIops"},
		{"bad bandwidth", api.Resources{EgressBandwidth: "lots"}, "", "egressBandwidth"},
		{"unknown type", api.Resources{}, "x9.huge", "spec.instanceType"},
		{"type", api.Resources{}, "k1.large", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := api.InstanceSpec{Containers: []api.ContainerSpec{{Image: "kanga.test/busybox"}}, Resources: tc.res, InstanceType: tc.typ}
			Defaults(&s, "runc")
			err := Validate(&s)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v does not mention %q", err, tc.want)
			}
		})
	}
	s := api.InstanceSpec{Containers: []api.ContainerSpec{{Image: "x"}}, InstanceType: "k1.small", Resources: api.Resources{Memory: "512Mi"}}
	Defaults(&s, "runc")
	if err := Validate(&s); err != nil {
		t.Fatal(err)
	}
	if s.Resources.CPU != "0.5" || s.Resources.Memory != "512Mi" || s.Resources.EgressBandwidth != "10M" {
		t.Fatalf("type k1.small with memory override: %+v", s.Resources)
	}
}
