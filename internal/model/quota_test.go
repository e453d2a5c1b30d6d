package model

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
)

func ptr(n int64) *int64 { return &n }

func TestDefaultType(t *testing.T) {
	for _, tc := range []struct {
		name     string
		res      api.Resources
		typ      string // the spec's own
		dflt     string
		want     api.Resources
		wantType string
	}{
		{"nothing asked", api.Resources{}, "", DefaultInstanceType,
			api.Resources{CPULimit: "1", Memory: "256Mi", Pids: 1024, LogSize: "10Mi", LogFiles: 2}, DefaultInstanceType},
		{"cpu asked: reserved, no cap from the type", api.Resources{CPU: "2"}, "", DefaultInstanceType,
			api.Resources{CPU: "2", Memory: "256Mi", Pids: 1024, LogSize: "10Mi", LogFiles: 2}, DefaultInstanceType},
		{"explicit fields win", api.Resources{Memory: "1Gi", Pids: 50, LogFiles: 5}, "", DefaultInstanceType,
			api.Resources{CPULimit: "1", Memory: "1Gi", Pids: 50, LogSize: "10Mi", LogFiles: 5}, DefaultInstanceType},
		{"own type wins", api.Resources{}, "k1.small", DefaultInstanceType,
			api.Resources{CPU: "0.5", Memory: "256Mi", Pids: 256, IngressBandwidth: "10M", EgressBandwidth: "10M", LogSize: "10Mi", LogFiles: 2, Disk: "10Gi"}, "k1.small"},
		{"no default", api.Resources{}, "", NoInstanceType, api.Resources{}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := api.InstanceSpec{Containers: []api.ContainerSpec{{Image: "x"}}, Resources: tc.res, InstanceType: tc.typ}
			ApplyDefaultType(&s, tc.dflt)
			Defaults(&s, "runc")
			if err := Validate(&s); err != nil {
				t.Fatal(err)
			}
			if s.Resources != tc.want || s.InstanceType != tc.wantType {
				t.Fatalf("resources %+v type %q, want %+v type %q", s.Resources, s.InstanceType, tc.want, tc.wantType)
			}
		})
	}
	if err := CheckDefaultType("--default-type", "k1.bogus"); err == nil || !strings.Contains(err.Error(), "--default-type") {
		t.Fatalf("unknown default type: %v", err)
	}
	for _, ok := range []string{"", "none", "k1.small"} {
		if err := CheckDefaultType("x", ok); err != nil {
			t.Errorf("CheckDefaultType(%q): %v", ok, err)
		}
	}
}

func TestValidateCaps(t *testing.T) {
	ctr := api.ContainerSpec{Image: "kanga.test/busybox"}
	for _, tc := range []struct {
		name   string
		mutate func(*api.InstanceSpec)
		want   string
	}{
		{"101 containers", func(s *api.InstanceSpec) {
			s.Containers = nil
			for i := range 101 {
				c := ctr
				c.Name = fmt.Sprintf("c%d", i)
				s.Containers = append(s.Containers, c)
			}
		}, "spec.containers has 101 containers, at most 20"},
		{"1 MB env value", func(s *api.InstanceSpec) {
			s.Containers[0].Env = []api.EnvVar{{Name: "A"}, {Name: "B"}, {Name: "C"}, {Name: "BIG", Value: strings.Repeat("x", 1<<20)}}
		}, "spec.containers[0].env[3].value: 1048576 bytes, at most 32768"},
		{"env total", func(s *api.InstanceSpec) {
			for i := range 3 {
				s.Containers[0].Env = append(s.Containers[0].Env, api.EnvVar{Name: fmt.Sprintf("V%d", i), Value: strings.Repeat("x", 30<<10)})
			}
		}, "spec.containers[0].env: 92172 bytes in all, at most 65536"},
		{"too many env vars", func(s *api.InstanceSpec) {
			for i := range 300 {
				s.Containers[0].Env = append(s.Containers[0].Env, api.EnvVar{Name: fmt.Sprintf("V%d", i)})
			}
		}, "spec.containers[0].env has 300 variables, at most 256"},
		{"long arg", func(s *api.InstanceSpec) { s.Containers[0].Args = []string{"sh", strings.Repeat("y", 40<<10)} }, "spec.containers[0].args[1]: 40960 bytes, at most 32768"},
		{"args total", func(s *api.InstanceSpec) {
			s.Containers[0].Command = []string{strings.Repeat("a", 30<<10), strings.Repeat("b", 30<<10)}
			s.Containers[0].Args = []string{strings.Repeat("c", 30<<10)}
		}, "command and args take 92163 bytes in all, at most 65536"},
		{"long image", func(s *api.InstanceSpec) { s.Containers[0].Image = strings.Repeat("i", 2000) }, "spec.containers[0].image: 2000 bytes, at most 1024"},
		{"many ports", func(s *api.InstanceSpec) {
			for i := range 65 {
				s.Ports = append(s.Ports, api.PortMapping{HostPort: 10000 + i, ContainerPort: 80, Protocol: "tcp"})
			}
		}, "spec.ports has 65 ports, at most 64"},
		{"selector value", func(s *api.InstanceSpec) { s.HostSelector = map[string]string{"zone": strings.Repeat("z", 64)} }, `spec.hostSelector["zone"]: value of 64 bytes, at most 63`},
		{"cpu limit below cpu", func(s *api.InstanceSpec) { s.Resources.CPU, s.Resources.CPULimit = "2", "1" }, "cpuLimit \"1\" is below spec.resources.cpu"},
		{"cpu limit dedicated", func(s *api.InstanceSpec) {
			s.Resources.CPU, s.Resources.CPUPolicy, s.Resources.CPULimit = "1", "dedicated", "2"
		}, "a dedicated instance has its cores to itself"},
		{"bad cpu limit", func(s *api.InstanceSpec) { s.Resources.CPULimit = "lots" }, "spec.resources.cpuLimit"},
		{"huge log", func(s *api.InstanceSpec) { s.Resources.LogSize = "1Gi" }, "spec.resources.logSize \"1Gi\" is not between 64Ki and 100Mi"},
		{"many log files", func(s *api.InstanceSpec) { s.Resources.LogFiles = 50 }, "spec.resources.logFiles 50"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := api.InstanceSpec{Containers: []api.ContainerSpec{ctr}}
			tc.mutate(&s)
			Defaults(&s, "runc")
			err := Validate(&s)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v does not say %q", err, tc.want)
			}
			if !errors.Is(err, errdefs.ErrInvalidArgument) {
				t.Fatalf("error %v is not InvalidArgument", err)
			}
		})
	}
	// At the caps exactly: accepted.
	s := api.InstanceSpec{}
	for i := range MaxContainers {
		s.Containers = append(s.Containers, api.ContainerSpec{Name: fmt.Sprintf("c%d", i), Image: "x",
			Env: []api.EnvVar{{Name: "V", Value: strings.Repeat("x", MaxEnvValue)}}})
	}
	s.Resources = api.Resources{CPU: "1", CPULimit: "2", LogSize: "100Mi", LogFiles: MaxLogFiles}
	Defaults(&s, "runc")
	if err := Validate(&s); err != nil {
		t.Fatalf("a spec at the caps: %v", err)
	}
}

func TestQuota(t *testing.T) {
	q, err := ParseQuota(DefaultQuota)
	if err != nil {
		t.Fatal(err)
	}
	if *q.Instances != 100 || q.CPU != "50%" || q.Memory != "50%" || *q.Ports != 20 || q.Volumes != nil {
		t.Fatalf("default quota parsed as %+v", q)
	}
	lim, err := ResolveQuota(q, 4000, 8<<30)
	if err != nil {
		t.Fatal(err)
	}
	want := api.QuotaAmounts{Instances: 100, MilliCPU: 2000, MemoryBytes: 4 << 30, Ports: 20, Volumes: api.Unlimited, Devices: api.Unlimited, DiskBytes: api.Unlimited}
	if lim != want {
		t.Fatalf("resolved %+v, want %+v", lim, want)
	}
	for _, bad := range []string{"cpu=150%", "instances=-1", "memory=lots", "gpus=1", "cpu", "disk=50%", "disk=lots"} {
		if _, err := ParseQuota(bad); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("ParseQuota(%q) = %v, want InvalidArgument", bad, err)
		}
	}
	if q, err := ParseQuota("none"); q != nil || err != nil {
		t.Errorf("ParseQuota(none) = %v, %v", q, err)
	}
	merged := MergeQuota(q, &api.Quota{Instances: ptr(5), CPU: "2"})
	if *merged.Instances != 5 || merged.CPU != "2" || merged.Memory != "50%" || *merged.Ports != 20 {
		t.Fatalf("merged %+v", merged)
	}

	spec := api.InstanceSpec{Resources: api.Resources{CPU: "1.5", Memory: "1Gi"}, Ports: []api.PortMapping{{HostPort: 1}}}
	charge := QuotaCharge(&spec)
	if charge != (api.QuotaAmounts{Instances: 1, MilliCPU: 1500, MemoryBytes: 1 << 30, Ports: 1}) {
		t.Fatalf("charge %+v", charge)
	}
	limits := api.QuotaAmounts{Instances: 10, MilliCPU: 2000, MemoryBytes: api.Unlimited, Ports: api.Unlimited, Volumes: 0, Devices: 0}
	if err := CheckQuota("a", api.QuotaAmounts{Instances: 9}, charge, limits); err != nil {
		t.Fatalf("fits: %v", err)
	}
	err = CheckQuota("a", api.QuotaAmounts{Instances: 10}, charge, limits)
	if !errors.Is(err, errdefs.ErrPermissionDenied) || !strings.Contains(err.Error(), "tenant a: quota instances 10/10 in use") ||
		!strings.Contains(err.Error(), "kanga tenant quota a --instances N") {
		t.Fatalf("instances over quota: %v", err)
	}
	err = CheckQuota("a", api.QuotaAmounts{Instances: 1, MilliCPU: 1000}, charge, limits)
	if err == nil || !strings.Contains(err.Error(), "quota cpu 1/2 in use, this instance asks for 1.5") {
		t.Fatalf("cpu over quota: %v", err)
	}
	// A CPU cap alone reserves nothing, so it fits a full CPU quota.
	if err := CheckQuota("a", api.QuotaAmounts{MilliCPU: 2000}, QuotaCharge(&api.InstanceSpec{Resources: api.Resources{CPULimit: "1"}}), limits); err != nil {
		t.Fatalf("cpu cap against a full cpu quota: %v", err)
	}
	// Disk: the instance's resources.disk against an amount.
	dq, err := ParseQuota("disk=1Gi")
	if err != nil {
		t.Fatal(err)
	}
	dl, err := ResolveQuota(dq, 4000, 8<<30)
	if err != nil || dl.DiskBytes != 1<<30 || dl.MilliCPU != api.Unlimited {
		t.Fatalf("disk quota resolved %+v, %v", dl, err)
	}
	dc := QuotaCharge(&api.InstanceSpec{Resources: api.Resources{Disk: "600Mi"}})
	if dc.DiskBytes != 600<<20 {
		t.Fatalf("disk charge %+v", dc)
	}
	if err := CheckQuota("a", api.QuotaAmounts{}, dc, dl); err != nil {
		t.Fatalf("disk fits: %v", err)
	}
	err = CheckQuota("a", dc, dc, dl)
	if !errors.Is(err, errdefs.ErrPermissionDenied) || !strings.Contains(err.Error(), "quota disk 600Mi/1Gi in use, this instance asks for 600Mi") ||
		!strings.Contains(err.Error(), "--disk N") {
		t.Fatalf("disk over quota: %v", err)
	}
	if got := FormatBytes(3 << 29); got != "1.5Gi" {
		t.Errorf("FormatBytes = %q", got)
	}
}

// TestChargeOf: the charge of parsed resources is QuotaCharge's of the
// spec they came from; a field that does not parse charges nothing.
func TestChargeOf(t *testing.T) {
	for _, tc := range []struct {
		name string
		spec api.InstanceSpec
		want api.QuotaAmounts
	}{
		{"empty", api.InstanceSpec{}, api.QuotaAmounts{Instances: 1}},
		{"reservation, disk and ports", api.InstanceSpec{Resources: api.Resources{CPU: "500m", CPULimit: "2", Memory: "64Mi", Disk: "1Gi"},
			Ports: []api.PortMapping{{HostPort: 80}, {HostPort: 443}}},
			api.QuotaAmounts{Instances: 1, MilliCPU: 500, MemoryBytes: 64 << 20, DiskBytes: 1 << 30, Ports: 2}},
		{"a cap alone reserves nothing", api.InstanceSpec{Resources: api.Resources{CPULimit: "1"}}, api.QuotaAmounts{Instances: 1}},
		{"what does not parse charges 0", api.InstanceSpec{Resources: api.Resources{CPU: "lots", Memory: "1Gi", Disk: "big"}},
			api.QuotaAmounts{Instances: 1, MemoryBytes: 1 << 30}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, _ := ParseResources(tc.spec.Resources)
			got := ChargeOf(r, len(tc.spec.Ports))
			if got != tc.want {
				t.Errorf("ChargeOf = %+v, want %+v", got, tc.want)
			}
			if q := QuotaCharge(&tc.spec); q != got {
				t.Errorf("QuotaCharge = %+v, ChargeOf = %+v: want the same", q, got)
			}
		})
	}
}
