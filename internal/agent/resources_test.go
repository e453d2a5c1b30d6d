package agent

import (
	"testing"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/internal/agent/network"
	"github.com/kanga-run/kanga/internal/model"
)

// The readers of an instance's parsed resources on this host, each a
// table over model.Resources as the runner hands them on.

func TestHasDiskLimits(t *testing.T) {
	for _, tc := range []struct {
		r    model.Resources
		want bool
	}{
		{model.Resources{}, false},
		{model.Resources{MilliCPU: 1000, Memory: 1 << 30, Disk: 1 << 30}, false}, // a disk size is not a throttle
		{model.Resources{DiskReadBPS: 1}, true},
		{model.Resources{DiskWriteBPS: 1}, true},
		{model.Resources{DiskReadIOPS: 1}, true},
		{model.Resources{DiskWriteIOPS: 1}, true},
	} {
		if got := hasDiskLimits(tc.r); got != tc.want {
			t.Errorf("hasDiskLimits(%+v) = %v, want %v", tc.r, got, tc.want)
		}
	}
}

func TestLogLimitsOf(t *testing.T) {
	defSize, err := model.ParseMemory(model.DefaultLogSize)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		r    model.Resources
		want logLimits
	}{
		{"the platform's defaults", model.Resources{}, logLimits{size: defSize, files: model.DefaultLogFiles}},
		{"the instance's", model.Resources{LogSize: 1 << 20, LogFiles: 2}, logLimits{size: 1 << 20, files: 2}},
		{"a size alone", model.Resources{LogSize: 4096}, logLimits{size: 4096, files: model.DefaultLogFiles}},
		{"a count alone", model.Resources{LogFiles: 7}, logLimits{size: defSize, files: 7}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := logLimitsOf(tc.r); got != tc.want {
				t.Errorf("logLimitsOf = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestNetLimits(t *testing.T) {
	if got := netLimits(model.Resources{IngressBPS: 5e6, EgressBPS: 1e5, MilliCPU: 100}); got != (network.Limits{IngressBPS: 5e6, EgressBPS: 1e5}) {
		t.Errorf("netLimits = %+v", got)
	}
	if got := netLimits(model.Resources{}); got != (network.Limits{}) {
		t.Errorf("netLimits of nothing = %+v, want unlimited", got)
	}
}

func TestPromised(t *testing.T) {
	for _, tc := range []struct {
		name     string
		r        model.Resources
		cpu, mem int64
	}{
		{"nothing", model.Resources{}, 0, 0},
		{"shared: the reservation, not the cap", model.Resources{MilliCPU: 500, MilliCPULimit: 2000, Memory: 64 << 20}, 500, 64 << 20},
		{"dedicated: whole cores", model.Resources{MilliCPU: 2000, DedicatedCores: 2, Memory: 1 << 30}, 2000, 1 << 30},
		{"dedicated without a size: one core", model.Resources{DedicatedCores: 1}, 1000, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if cpu, mem := promised(tc.r); cpu != tc.cpu || mem != tc.mem {
				t.Errorf("promised = %d, %d; want %d, %d", cpu, mem, tc.cpu, tc.mem)
			}
		})
	}
}

func TestOwnCPUQuota(t *testing.T) {
	for _, tc := range []struct {
		r    model.Resources
		want int64
	}{
		{model.Resources{}, -1},
		{model.Resources{MilliCPU: 500}, 50000},
		{model.Resources{MilliCPU: 500, MilliCPULimit: 2000}, 200000},
		{model.Resources{MilliCPULimit: 250}, 25000},
	} {
		if got := ownCPUQuota(tc.r); got != tc.want {
			t.Errorf("ownCPUQuota(%+v) = %d, want %d", tc.r, got, tc.want)
		}
	}
}

// TestResourcesOf: an instance's resources come from its runner's one
// parse when it has a runner, and are parsed leniently when not.
func TestResourcesOf(t *testing.T) {
	a := New(Config{})
	held := &api.Instance{UID: "u1", Name: "held", Tenant: "t", Spec: api.InstanceSpec{Resources: api.Resources{CPU: "1", Memory: "64Mi"}}}
	r := newRunner(a, held)
	a.mu.Lock()
	a.runners[held.UID] = r
	a.mu.Unlock()
	// The runner's value, not a parse of the record handed in.
	changed := *held
	changed.Spec.Resources = api.Resources{CPU: "3"}
	if got := a.resourcesOf(&changed); got != r.res {
		t.Errorf("resourcesOf a held instance = %+v, want its runner's %+v", got, r.res)
	}
	for _, tc := range []struct {
		name string
		res  api.Resources
		want model.Resources
	}{
		{"parsed", api.Resources{CPU: "250m", Disk: "1Gi"}, model.Resources{MilliCPU: 250, Disk: 1 << 30}},
		{"what does not parse is left out", api.Resources{CPU: "lots", Memory: "64Mi"}, model.Resources{Memory: 64 << 20}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := a.resourcesOf(&api.Instance{UID: "other", Spec: api.InstanceSpec{Resources: tc.res}})
			if got != tc.want {
				t.Errorf("resourcesOf = %+v, want %+v", got, tc.want)
			}
		})
	}
}

// TestTenantUse: a tenant's use on this host is the reservations of its
// shared instances, from their runners' parsed resources; dedicated ones
// (under the root, not the tenant) and ones whose resources do not parse
// (which never run) do not count, nor do other tenants'.
func TestTenantUse(t *testing.T) {
	a := New(Config{})
	for _, inst := range []api.Instance{
		{UID: "a", Tenant: "t1", Spec: api.InstanceSpec{Resources: api.Resources{CPU: "500m", Memory: "64Mi"}}},
		{UID: "b", Tenant: "t1", Spec: api.InstanceSpec{Resources: api.Resources{CPU: "250m", CPULimit: "4", Memory: "32Mi"}}},
		{UID: "c", Tenant: "t1", Spec: api.InstanceSpec{Resources: api.Resources{CPU: "2", CPUPolicy: model.CPUPolicyDedicated, Memory: "1Gi"}}},
		{UID: "d", Tenant: "t1", Spec: api.InstanceSpec{Resources: api.Resources{CPU: "1", Memory: "much"}}},
		{UID: "e", Tenant: "t2", Spec: api.InstanceSpec{Resources: api.Resources{CPU: "1", Memory: "1Gi"}}},
	} {
		a.runners[inst.UID] = newRunner(a, &inst)
	}
	cpu, mem, n := a.tenantUse("t1")
	if cpu != 750 || mem != 96<<20 || n != 2 {
		t.Errorf("tenantUse(t1) = %d mCPU, %d bytes, %d instances; want 750, %d, 2", cpu, mem, n, 96<<20)
	}
	if cpu, mem, n := a.tenantUse("none"); cpu != 0 || mem != 0 || n != 0 {
		t.Errorf("tenantUse of a tenant with nothing here = %d, %d, %d", cpu, mem, n)
	}
}
