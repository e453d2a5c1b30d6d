package agent

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/internal/agent/network"
	"github.com/kanga-run/kanga/internal/hostcontract"
)

func TestClampQuota(t *testing.T) {
	for _, tc := range []struct{ own, parent, want int64 }{
		{-1, -1, -1}, {50000, -1, 50000}, {-1, 100000, 100000}, {200000, 100000, 100000}, {50000, 100000, 50000},
	} {
		if got := clampQuota(tc.own, tc.parent); got != tc.want {
			t.Errorf("clampQuota(%d, %d) = %d, want %d", tc.own, tc.parent, got, tc.want)
		}
	}
	if q := ownCPUQuota(parsed(t, api.Resources{CPU: "0.5", CPULimit: "2"})); q != 200000 {
		t.Errorf("own quota of a capped reservation = %d", q)
	}
	if q := ownCPUQuota(parsed(t, api.Resources{})); q != -1 {
		t.Errorf("own quota of nothing = %d", q)
	}
}

// quotaStore answers tenant quotas; the rest of the agent's store is not
// used here.
type quotaStore struct {
	Store
	quotas map[string]*api.Quota
}

func (q quotaStore) TenantQuota(_ context.Context, name string) (*api.Quota, error) {
	return q.quotas[name], nil
}

func (quotaStore) WatchAllInstances(ctx context.Context, _ int64) <-chan hostcontract.InstanceEvent {
	return nil
}

type nopNet struct{ fakeNet }

func (nopNet) Setup(context.Context, string, []network.Port, network.Limits) (*network.Attachment, error) {
	return &network.Attachment{}, nil
}

func readCg(t *testing.T, ctrl, path, file string) int64 {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(cgroupV1Root, ctrl, path, file))
	if err != nil {
		t.Fatal(err)
	}
	v, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// The tenant cgroup gets the tenant's quota as a share of this host, an
// instance's own cap is held under it, a lower tenant cap lowers the
// instances' first (cgroup v1 refuses a child above its parent), and the
// last release removes the tenant cgroup. Real cgroups, under a root of
// the test's own.
func TestTenantCgroup(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("requires root")
	}
	if _, err := os.Stat(filepath.Join(cgroupV1Root, "cpu", "cpu.cfs_quota_us")); err != nil {
		t.Skip("requires the cgroup v1 cpu controller")
	}
	if runtime.NumCPU() < 2 {
		t.Skip("requires 2 cores")
	}
	root := fmt.Sprintf("/kanga-test-%d", os.Getpid())
	t.Cleanup(func() {
		for _, h := range []string{"cpu", "memory", "pids", "cpuset", "cpuacct", "blkio", "freezer", "devices", "hugetlb"} {
			_ = os.Remove(filepath.Join(cgroupV1Root, h, root))
		}
	})
	qs := quotaStore{quotas: map[string]*api.Quota{"t1": {CPU: "50%", Memory: "1Gi"}}}
	a := New(Config{HostName: "h", Network: nopNet{}, Store: qs, CgroupRoot: root})
	ctx := context.Background()
	inst := &api.Instance{Name: "web", Tenant: "t1", UID: "u1", Status: api.InstanceStatus{Phase: api.PhasePending},
		Spec: api.InstanceSpec{Resources: api.Resources{CPULimit: fmt.Sprint(runtime.NumCPU()), Memory: "64Mi"}}}
	r := newRunner(a, inst)
	a.mu.Lock()
	a.runners[inst.UID] = r
	a.mu.Unlock()
	a.placeCgroup(inst, r.res)
	a.holdTenant("t1")
	if err := a.createCgroup(ctx, "t1", inst.UID, r.res); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { removeCgroup(a.instanceCgroup("u1")) })
	tc := a.tenantCgroup("t1")
	if got := a.instanceCgroup("u1"); got != tc+"/u1" {
		t.Fatalf("instance cgroup %s, want it under %s", got, tc)
	}
	half := int64(runtime.NumCPU()) * cfsPeriod / 2
	if q := readCg(t, "cpu", tc, "cpu.cfs_quota_us"); q != half {
		t.Fatalf("tenant cpu quota %d, want half the host: %d", q, half)
	}
	if m := readCg(t, "memory", tc, "memory.limit_in_bytes"); m != 1<<30 {
		t.Fatalf("tenant memory limit %d, want 1Gi", m)
	}
	if q := readCg(t, "cpu", tc+"/u1", "cpu.cfs_quota_us"); q != half {
		t.Fatalf("instance cpu quota %d, want its cap of the whole host held to the tenant's %d", q, half)
	}

	// A lower quota: the instance's cap goes down first, then the tenant's.
	qs.quotas["t1"] = &api.Quota{CPU: "0.25"}
	a.quotas.mu.Lock()
	delete(a.quotas.m, "t1")
	a.quotas.mu.Unlock()
	if _, err := a.applyTenantCgroup(ctx, "t1"); err != nil {
		t.Fatalf("lowering the tenant's cap: %v", err)
	}
	if q := readCg(t, "cpu", tc, "cpu.cfs_quota_us"); q != 25000 {
		t.Fatalf("tenant cpu quota %d after lowering, want 25000", q)
	}
	if q := readCg(t, "cpu", tc+"/u1", "cpu.cfs_quota_us"); q != 25000 {
		t.Fatalf("instance cpu quota %d after lowering, want 25000", q)
	}
	// No quota: no caps; the instance gets its own cap back.
	qs.quotas["t1"] = nil
	a.quotas.mu.Lock()
	delete(a.quotas.m, "t1")
	a.quotas.mu.Unlock()
	if _, err := a.applyTenantCgroup(ctx, "t1"); err != nil {
		t.Fatal(err)
	}
	if q := readCg(t, "cpu", tc, "cpu.cfs_quota_us"); q != -1 {
		t.Fatalf("tenant cpu quota %d without a quota, want -1", q)
	}
	if q := readCg(t, "cpu", tc+"/u1", "cpu.cfs_quota_us"); q != int64(runtime.NumCPU())*cfsPeriod {
		t.Fatalf("instance cpu quota %d without a tenant cap, want its own", q)
	}

	// dispatch holds a tenant's cgroup with the runners' lock held, while
	// starts update the tenant's cgroup: the two must not deadlock.
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		for range 200 {
			a.mu.Lock()
			a.holdTenant("t1")
			a.mu.Unlock()
			a.releaseTenant(ctx, "t1")
		}
	}()
	go func() {
		defer wg.Done()
		for range 200 {
			if _, err := a.applyTenantCgroup(ctx, "t1"); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	wg.Wait()

	removeCgroup(a.instanceCgroup("u1"))
	a.mu.Lock()
	delete(a.runners, "u1")
	a.mu.Unlock()
	a.releaseTenant(ctx, "t1")
	if _, err := os.Stat(filepath.Join(cgroupV1Root, "cpu", tc)); !os.IsNotExist(err) {
		t.Fatalf("the tenant cgroup is left after its last release: %v", err)
	}
}

// The orphan cleanup of a restarted agent removes the cgroups of instances
// and warm containers it no longer knows, under tenant cgroups and the
// root, then the tenant cgroups left empty; it keeps what it knows.
func TestCleanupCgroups(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("requires root")
	}
	if _, err := os.Stat(filepath.Join(cgroupV1Root, "memory")); err != nil {
		t.Skip("requires the cgroup v1 memory controller")
	}
	root := fmt.Sprintf("/kanga-test-clean-%d", os.Getpid())
	hs := []string{"memory", "cpu", "pids"}
	t.Cleanup(func() {
		for _, h := range hs {
			dir := filepath.Join(cgroupV1Root, h, root)
			var dirs []string
			_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
				if err == nil && d.IsDir() {
					dirs = append(dirs, p)
				}
				return nil
			})
			for i := len(dirs) - 1; i >= 0; i-- {
				_ = os.Remove(dirs[i])
			}
		}
	})
	mk := func(rel string) {
		for _, h := range hs {
			if err := os.MkdirAll(filepath.Join(cgroupV1Root, h, root, rel), 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
	exists := func(rel string) bool {
		_, err := os.Stat(filepath.Join(cgroupV1Root, "memory", root, rel))
		return err == nil
	}
	mk("tenant-a/known/app")
	mk("tenant-a/gone/app")
	mk("tenant-b/gone2")
	mk("tenant-a/warm-kept/warm")
	mk("warm-orphan/warm")
	mk("dedicated-of-another-agent")
	a := New(Config{HostName: "h", Network: nopNet{}, CgroupRoot: root})
	a.cleanupCgroups(map[string]bool{"known": true}, map[string]bool{"warm-kept": true})
	for rel, want := range map[string]bool{
		"tenant-a/known": true, "tenant-a/warm-kept": true, "dedicated-of-another-agent": true,
		"tenant-a/gone": false, "tenant-b": false, "warm-orphan": false,
	} {
		if got := exists(rel); got != want {
			t.Errorf("%s exists = %v after the cleanup, want %v", rel, got, want)
		}
	}
}
