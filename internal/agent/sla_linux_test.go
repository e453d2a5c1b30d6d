package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	cgroups "github.com/containerd/cgroups"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
	"github.com/kanga-run/kanga/internal/agent/network"
	"github.com/kanga-run/kanga/internal/tenant"
)

// fakeNet is a Network without interfaces: only Stats is asked for.
type fakeNet struct{ Network }

func (fakeNet) Stats(context.Context, string) (network.Stats, error) {
	return network.Stats{RxBytes: 10, TxBytes: 20}, nil
}

// TestSamplingRealCgroup runs a busy loop in a real instance cgroup with
// a 0.5-CPU quota, samples it as a runner does, and checks what Stats and
// SLA make of the kernel's counters.
func TestSamplingRealCgroup(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("requires root")
	}
	if _, err := os.Stat(filepath.Join(cgroupV1Root, "cpuacct")); err != nil {
		t.Skip("requires cgroup v1 cpu accounting")
	}
	uid := fmt.Sprintf("kangatest%d", os.Getpid())
	res := api.Resources{CPU: "0.5", Memory: "64Mi", Pids: 20}
	a := New(Config{HostName: "h", Network: fakeNet{}})
	if err := a.createCgroup(context.Background(), "t1", uid, parsed(t, res)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { removeCgroup(a.instanceCgroup(uid)) })

	busy := exec.Command("sh", "-c", "while :; do :; done")
	if err := busy.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = busy.Process.Kill(); _ = busy.Wait() })
	cg, err := cgroups.Load(hierarchy, cgroups.StaticPath(a.instanceCgroup(uid)))
	if err != nil {
		t.Fatal(err)
	}
	if err := cg.Add(cgroups.Process{Pid: busy.Process.Pid}); err != nil {
		t.Fatal(err)
	}

	ctx := tenant.WithName(context.Background(), "t1")
	inst := &api.Instance{Name: "busy", UID: uid, Tenant: "t1", Spec: api.InstanceSpec{Resources: res}}
	stop := a.startSampling(ctx, uid)
	time.Sleep(4500 * time.Millisecond)
	rep, err := a.SLA(ctx, inst)
	if err != nil {
		t.Fatal(err)
	}
	st, err := a.Stats(ctx, inst)
	if err != nil {
		t.Fatal(err)
	}
	stop()
	if a.histories.get(uid) != nil {
		t.Fatal("stopping sampling kept the history")
	}

	t.Logf("stats: %+v", st)
	if st.CPUUsageNanos == 0 || st.CPUThrottledPeriods == 0 || st.Pids != 1 || st.PidsLimit != 20 ||
		st.MemoryLimit != 64<<20 || st.NetTxBytes != 20 {
		t.Fatalf("stats do not show the busy loop under its limits: %+v", st)
	}
	var cpu *api.SLAItem
	for i, it := range rep.Items {
		t.Logf("sla: %+v", it)
		if it.Resource == "cpu" {
			cpu = &rep.Items[i]
		}
	}
	if len(rep.Items) != 3 || cpu == nil {
		t.Fatalf("want cpu, memory and pids items: %+v", rep.Items)
	}
	// Whether the promise was kept depends on how loaded this host is (the
	// integration test measures that); here the report must at least have
	// seen the throttling the counters show.
	if !strings.Contains(cpu.Delivered, "while it wanted more") {
		t.Fatalf("a busy loop throttled at its quota is not reported as wanting more: %+v", *cpu)
	}
	if !rep.Until.After(rep.Since) {
		t.Fatalf("report covers %v..%v", rep.Since, rep.Until)
	}

	// Another tenant sees nothing.
	other := tenant.WithName(context.Background(), "t2")
	if _, err := a.Stats(other, inst); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("another tenant's Stats: %v, want not found", err)
	}
	if _, err := a.SLA(other, inst); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("another tenant's SLA: %v, want not found", err)
	}
}

func TestStatsWithoutCgroup(t *testing.T) {
	a := New(Config{HostName: "h", Network: fakeNet{}})
	ctx := tenant.WithName(context.Background(), "t1")
	inst := &api.Instance{Name: "gone", UID: "no-such-uid", Tenant: "t1"}
	if _, err := a.Stats(ctx, inst); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("Stats of an instance without a cgroup: %v, want failed precondition", err)
	}
}
