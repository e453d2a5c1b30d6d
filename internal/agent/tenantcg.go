package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	cgroups "github.com/containerd/cgroups"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/internal/model"
)

// The cgroup layout, in each v1 hierarchy under the agent's root
// (Config.CgroupRoot, /kanga by default):
//
//	<root>/tenant-<tenant>/<uid>/<container>   shared instances
//	<root>/tenant-<tenant>/<warm id>/warm      warm containers, and the
//	                                           instances that claimed them
//	<root>/<uid>/<container>                   dedicated instances, and
//	                                           instances started before
//	                                           tenant cgroups existed
//
// The tenant cgroup caps what the tenant's shared instances use together
// on this host: CPU (cfs quota) and memory at the tenant's quota, shares
// of the pool taken as shares of this host ("50%" of a 2-core host is one
// core), but never below what its instances here reserve. Dedicated
// instances stay outside: their cores are theirs (cpuset) and their weight
// must count against shared instances' directly, which a tenant cgroup's
// single weight would hide. The tenant cgroup's cpu.shares is 1024 per
// shared instance of the tenant here, so that at the top level tenants
// weigh what their instances weighed side by side before.
//
// cgroup v1 refuses a child's cfs quota above its parent's (EINVAL), so an
// instance's own CPU cap is clamped to its tenant's, and a lower tenant cap
// first lowers the instances' caps.

const tenantCgroupPrefix = "tenant-"

// tenantCgroup is the parent cgroup of tenant t's shared instances.
func (a *Agent) tenantCgroup(t string) string {
	return a.cgRoot + "/" + tenantCgroupPrefix + t
}

// legacyCgroup is the cgroup of name directly under the root.
func (a *Agent) legacyCgroup(name string) string { return a.cgRoot + "/" + name }

// instanceCgroup is the cgroup of instance uid: its cgroup name (see
// cgName) under its tenant's cgroup, or under the root (placeCgroup).
func (a *Agent) instanceCgroup(uid string) string {
	parent := a.cgRoot
	if p, ok := a.cgParents.Load(uid); ok {
		parent = p.(string)
	}
	return parent + "/" + a.cgName(uid)
}

// placeCgroup decides where instance inst's cgroup lives, before anything
// reads or creates it: dedicated instances and those an older agent
// started under the root stay there, the others go under their tenant.
func (a *Agent) placeCgroup(inst *api.Instance, res model.Resources) {
	parent := a.tenantCgroup(inst.Tenant)
	if res.DedicatedCores > 0 {
		parent = a.cgRoot
	} else if _, err := os.Stat(filepath.Join(cgroupV1Root, "memory", a.legacyCgroup(a.cgName(inst.UID)))); err == nil {
		parent = a.cgRoot
	}
	a.cgParents.Store(inst.UID, parent)
}

// ownCPUQuota is the cfs quota (µs per cfsPeriod) r asks for: its CPU
// cap, else its reservation; -1 for none.
func ownCPUQuota(r model.Resources) int64 {
	if r.CPUQuotaMilli() == 0 {
		return -1
	}
	return r.CPUQuotaMilli() * cfsPeriod / 1000
}

// clampQuota is quota held under the cap parent (-1 is none).
func clampQuota(quota, parent int64) int64 {
	if parent < 0 || (quota >= 0 && quota <= parent) {
		return quota
	}
	return parent
}

// tenantCaps are the limits of a tenant's cgroup on this host; -1 is none.
type tenantCaps struct {
	cpuQuota int64 // µs per cfsPeriod
	memory   int64
	shares   uint64
}

// tenantQuotas caches the tenants' quotas for a while: a start reads its
// tenant's only when it has none yet, and refreshes it in the background.
type tenantQuotas struct {
	mu sync.Mutex
	m  map[string]cachedQuota
}

type cachedQuota struct {
	q          *api.Quota
	at         time.Time
	refreshing bool
}

// quotaTTL is how long a cached quota is used before a refresh.
const quotaTTL = 10 * time.Second

// tenantQuota returns tenant t's quota: from the cache if it has one
// (refreshed in the background when older than quotaTTL), else from the
// store.
func (a *Agent) tenantQuota(ctx context.Context, t string) (*api.Quota, error) {
	a.quotas.mu.Lock()
	c, ok := a.quotas.m[t]
	if ok {
		if time.Since(c.at) > quotaTTL && !c.refreshing {
			c.refreshing = true
			a.quotas.m[t] = c
			go a.refreshQuota(context.WithoutCancel(ctx), t)
		}
		a.quotas.mu.Unlock()
		return c.q, nil
	}
	a.quotas.mu.Unlock()
	return a.fetchQuota(ctx, t)
}

func (a *Agent) fetchQuota(ctx context.Context, t string) (*api.Quota, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	q, err := a.cfg.Store.TenantQuota(ctx, t)
	a.quotas.mu.Lock()
	defer a.quotas.mu.Unlock()
	if err != nil {
		if c, ok := a.quotas.m[t]; ok {
			c.refreshing = false
			a.quotas.m[t] = c
		}
		return nil, err
	}
	if a.quotas.m == nil {
		a.quotas.m = map[string]cachedQuota{}
	}
	a.quotas.m[t] = cachedQuota{q: q, at: time.Now()}
	return q, nil
}

// refreshQuota reads tenant t's quota again and, if it changed, applies
// the new caps to the tenant's cgroup.
func (a *Agent) refreshQuota(ctx context.Context, t string) {
	a.quotas.mu.Lock()
	old := a.quotas.m[t].q
	a.quotas.mu.Unlock()
	q, err := a.fetchQuota(ctx, t)
	if err != nil {
		a.log.Debug("refreshing a tenant's quota failed", "tenant", t, "err", err)
		return
	}
	if !sameQuota(old, q) {
		if _, err := a.applyTenantCgroup(ctx, t); err != nil {
			a.log.Warn("applying a tenant's new quota to its cgroup failed", "tenant", t, "err", err)
		}
	}
}

func sameQuota(a, b *api.Quota) bool {
	if a == nil || b == nil {
		return a == b
	}
	eq := func(x, y *int64) bool { return (x == nil) == (y == nil) && (x == nil || *x == *y) }
	return a.CPU == b.CPU && a.Memory == b.Memory && eq(a.Instances, b.Instances)
}

// tenantUse is what tenant t's shared instances on this host reserve, and
// how many there are, from the runners (the one starting included). It
// takes a.mu: never call it with tenantMu held.
func (a *Agent) tenantUse(t string) (milliCPU, memory int64, n int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, r := range a.runners {
		if r.tenant != t {
			continue
		}
		if !r.shared() {
			continue
		}
		inst, _ := r.snapshot()
		c := model.ChargeOf(r.res, len(inst.Spec.Ports))
		milliCPU += c.MilliCPU
		memory += c.MemoryBytes
		n++
	}
	return milliCPU, memory, n
}

// capsFor turns tenant t's quota into its cgroup's limits on this host.
func (a *Agent) capsFor(q *api.Quota, t string) tenantCaps {
	hostMilli, hostMem := int64(runtime.NumCPU())*1000, memTotal()
	usedMilli, usedMem, n := a.tenantUse(t)
	caps := tenantCaps{cpuQuota: -1, memory: -1, shares: uint64(1024 * max(n, 1))}
	caps.shares = min(caps.shares, 262144)
	if q == nil {
		return caps
	}
	limits, err := model.ResolveQuota(q, hostMilli, hostMem)
	if err != nil {
		return caps
	}
	if l := limits.MilliCPU; l != api.Unlimited {
		if l = max(l, usedMilli); l < hostMilli {
			// At least 10 ms per period: a cap of 0 would stop every
			// instance that reserves nothing.
			caps.cpuQuota = max(l*cfsPeriod/1000, cfsPeriod/10)
		}
	}
	if l := limits.MemoryBytes; l != api.Unlimited {
		if l = max(l, usedMem, model.MinMemory); l < hostMem {
			caps.memory = l
		}
	}
	return caps
}

// applyTenantCgroup creates or updates tenant t's cgroup with the caps
// of its quota and returns its CPU cap (-1: none). A cap lower than before
// first lowers the CPU caps of the tenant's instances (see the top).
func (a *Agent) applyTenantCgroup(ctx context.Context, t string) (int64, error) {
	q, err := a.tenantQuota(ctx, t)
	if err != nil {
		// Without the quota the tenant's instances still run, uncapped as
		// a group; the next start or refresh applies it.
		a.log.Warn("reading the tenant's quota failed; its cgroup is not capped for now", "tenant", t, "err", err)
		q = nil
	}
	// What reads the runners (a.mu) comes before tenantMu: dispatch takes
	// tenantMu (holdTenant) with a.mu held.
	caps := a.capsFor(q, t)
	rs := a.tenantRunners(t)
	a.tenantMu.Lock()
	defer a.tenantMu.Unlock()
	path := a.tenantCgroup(t)
	cur := readQuota(path)
	lowering := caps.cpuQuota >= 0 && (cur < 0 || caps.cpuQuota < cur)
	if lowering {
		a.clampInstances(rs, t, caps.cpuQuota)
	}
	lr := &specs.LinuxResources{CPU: &specs.LinuxCPU{Shares: &caps.shares, Quota: &caps.cpuQuota}}
	if caps.cpuQuota >= 0 {
		period := uint64(cfsPeriod)
		lr.CPU.Period = &period
	}
	cg, err := cgroups.New(hierarchy, cgroups.StaticPath(path), &specs.LinuxResources{})
	if err != nil {
		return -1, fmt.Errorf("creating the cgroup of tenant %s: %w", t, err)
	}
	if err := cg.Update(lr); err != nil {
		return cur, fmt.Errorf("capping the CPU of tenant %s: %w", t, err)
	}
	// Memory on its own: lowering it below what the tenant uses fails
	// (EBUSY) after the kernel's reclaim, and must not keep the CPU cap
	// from applying.
	if err := cg.Update(&specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: &caps.memory}}); err != nil {
		a.log.Warn("capping the tenant's memory failed; it uses more than its quota on this host now", "tenant", t, "memory", caps.memory, "err", err)
	}
	if !lowering {
		a.clampInstances(rs, t, caps.cpuQuota)
	}
	return caps.cpuQuota, nil
}

// tenantRunners are the runners of tenant t's instances.
func (a *Agent) tenantRunners(t string) []*runner {
	a.mu.Lock()
	defer a.mu.Unlock()
	var rs []*runner
	for _, r := range a.runners {
		if r.tenant == t {
			rs = append(rs, r)
		}
	}
	return rs
}

// clampInstances sets the CPU cap of every shared instance of tenant t on
// this host (rs, its runners) to its own, held under parent.
func (a *Agent) clampInstances(rs []*runner, t string, parent int64) {
	for _, r := range rs {
		if !r.shared() {
			continue
		}
		inst, _ := r.snapshot()
		path := a.instanceCgroup(r.uid)
		if !strings.HasPrefix(path, a.tenantCgroup(t)+"/") {
			continue
		}
		want := clampQuota(ownCPUQuota(r.res), parent)
		if readQuota(path) == want {
			continue
		}
		if err := writeQuota(path, want); err != nil && !errors.Is(err, os.ErrNotExist) {
			a.log.Warn("adjusting an instance's CPU cap to its tenant's failed", "instance", inst.Name, "err", err)
		}
	}
}

// readQuota reads cpu.cfs_quota_us of cgroup path; -1 when it has none or
// does not exist.
func readQuota(path string) int64 {
	b, err := os.ReadFile(filepath.Join(cgroupV1Root, "cpu", path, "cpu.cfs_quota_us"))
	if err != nil {
		return -1
	}
	v, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return -1
	}
	return v
}

func writeQuota(path string, quota int64) error {
	return os.WriteFile(filepath.Join(cgroupV1Root, "cpu", path, "cpu.cfs_quota_us"), []byte(strconv.FormatInt(quota, 10)), 0)
}

// holdTenant notes that a runner or a warm container of tenant t may put
// a cgroup under the tenant's: the tenant cgroup is not removed until
// every hold is released.
func (a *Agent) holdTenant(t string) {
	a.tenantMu.Lock()
	defer a.tenantMu.Unlock()
	if a.tenantRefs == nil {
		a.tenantRefs = map[string]int{}
	}
	a.tenantRefs[t]++
}

// releaseTenant drops a hold on tenant t's cgroup: the last one removes
// the cgroup (the kernel refuses while anything is left in it); otherwise
// the caps are updated, as one instance fewer weighs less.
func (a *Agent) releaseTenant(ctx context.Context, t string) {
	a.tenantMu.Lock()
	a.tenantRefs[t]--
	last := a.tenantRefs[t] <= 0
	if last {
		delete(a.tenantRefs, t)
		removeEmptyCgroup(a.tenantCgroup(t))
	}
	a.tenantMu.Unlock()
	if last {
		a.quotas.mu.Lock()
		delete(a.quotas.m, t)
		a.quotas.mu.Unlock()
		return
	}
	if _, err := a.applyTenantCgroup(ctx, t); err != nil {
		a.log.Debug("updating a tenant's cgroup failed", "tenant", t, "err", err)
	}
}

// removeEmptyCgroup removes cgroup path from every hierarchy if it has no
// children there; it reports whether it is gone. The kernel refuses
// (EBUSY) a cgroup with tasks or children, so a cgroup in use survives.
func removeEmptyCgroup(path string) bool {
	hs, err := os.ReadDir(cgroupV1Root)
	if err != nil {
		return false
	}
	gone := true
	for _, h := range hs {
		dir := filepath.Join(cgroupV1Root, h.Name(), path)
		ents, err := os.ReadDir(dir)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		for _, e := range ents {
			if e.IsDir() {
				gone = false
			}
		}
		if gone {
			if err := os.Remove(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
				gone = false
			}
		}
	}
	return gone
}

// tenantCgroups lists the tenant cgroups under the root, in any hierarchy.
func (a *Agent) tenantCgroups() []string {
	seen := map[string]bool{}
	var out []string
	for _, h := range []string{"memory", "cpu", "unified", "pids"} {
		ents, _ := os.ReadDir(filepath.Join(cgroupV1Root, h, a.cgRoot))
		for _, e := range ents {
			if e.IsDir() && strings.HasPrefix(e.Name(), tenantCgroupPrefix) && !seen[e.Name()] {
				seen[e.Name()] = true
				out = append(out, a.cgRoot+"/"+e.Name())
			}
		}
	}
	return out
}

// removeCgroupNamed removes the cgroup named name (an instance's uid or a
// warm id) wherever the layout may have put it: under the root, or under
// any tenant's cgroup.
func (a *Agent) removeCgroupNamed(name string) {
	removeCgroup(a.legacyCgroup(name))
	for _, tc := range a.tenantCgroups() {
		removeCgroup(tc + "/" + name)
	}
}
