// Package agent is the host side of Kanga: it watches the instances
// assigned to its host, runs each through a small lifecycle (sandbox,
// containers, restarts, teardown) on containerd, and reports status back
// to the store. It also serves the host-local operations of the API:
// images, logs and exec.
package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/namespaces"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
	"github.com/kanga-run/kanga/internal/agent/containerdrt"
	"github.com/kanga-run/kanga/internal/agent/device"
	"github.com/kanga-run/kanga/internal/agent/image"
	"github.com/kanga-run/kanga/internal/agent/network"
	"github.com/kanga-run/kanga/internal/agent/pool"
	"github.com/kanga-run/kanga/internal/agent/volume"
	"github.com/kanga-run/kanga/internal/agent/warm"
	"github.com/kanga-run/kanga/internal/hostcontract"
	"github.com/kanga-run/kanga/internal/model"
	"github.com/kanga-run/kanga/internal/tenant"
)

// Store is what the agent needs of the state store: a host-wide view to
// find its instances, and tenant-scoped writes of their status.
type Store interface {
	ListAllInstances(ctx context.Context) ([]api.Instance, int64, error)
	WatchAllInstances(ctx context.Context, fromRevision int64) <-chan hostcontract.InstanceEvent
	UpdateInstance(ctx context.Context, name string, fn func(*api.Instance) error) (*api.Instance, error)
	DeleteInstance(ctx context.Context, name string) error
	// TenantQuota is a tenant's quota (nil: none), which caps the
	// tenant's parent cgroup on the host.
	TenantQuota(ctx context.Context, name string) (*api.Quota, error)
}

// Network is the sandbox network of instances.
type Network interface {
	Setup(ctx context.Context, id string, ports []network.Port, limits network.Limits) (*network.Attachment, error)
	Teardown(ctx context.Context, id string, ports []network.Port) error
	List() ([]string, error)
	Stats(ctx context.Context, id string) (network.Stats, error)
	// Assign gives an attachment to a tenant: until then it reaches
	// nothing (with tenant isolation on).
	Assign(ctx context.Context, id, tenant string) error
	// SetView tells tenant isolation what the rest of the platform looks
	// like (see NetView).
	SetView(ctx context.Context, v network.View) error
}

// Config wires an Agent.
type Config struct {
	HostName string
	DataDir  string
	Store    Store
	Client   *containerd.Client
	Classes  map[string]containerdrt.Class
	Images   *image.Service
	Network  Network
	Logger   *slog.Logger
	// SnapshotDir is where the snapshotter keeps the instances' writable
	// layers; disk limits throttle the device under it.
	SnapshotDir string
	// Pool, if set, hands out ready network sandboxes to instances it can
	// serve (see package pool). It must use the same Network.
	Pool *pool.Pool
	// Warm, if set, keeps warm containers (see warm.go); it is off when
	// the holder binary is missing.
	Warm *WarmOptions
	// Usage, if set, takes the host's usage records (see meter.go).
	Usage UsageSink
	// Files answers the files of an instance's secret and config volumes
	// and its env from secrets (see files.go); without it such instances
	// fail to start.
	Files FileSource
	// CgroupRoot is the parent of every cgroup the agent makes, in each
	// v1 hierarchy (DefaultCgroupRoot when empty). Agents sharing a
	// machine (tests) need one each: tenant cgroups are per host.
	CgroupRoot string
	// NetView, if set, streams the control plane's network view (package
	// netview), which the agent hands to Network.SetView.
	NetView func(ctx context.Context) <-chan hostcontract.NetUpdate
	// Ports is the operator's policy for published ports on this host,
	// with the platform's own ports reserved (the zero value is
	// model.DefaultPortPolicy); Security bounds what a container may add to
	// its sandbox, whatever the control plane admitted.
	Ports    model.PortPolicy
	Security model.SecurityBounds
	// UserNS runs crun containers in a user namespace (see userns.go);
	// the data dir must then be searchable by the range's ids.
	UserNS bool
	// StartSlots bounds the instance starts run at once (see
	// startslots.go); 0 is api.DefaultStartSlots of the host's cores.
	StartSlots int
	// Devices, if set, are the host's CDI devices (see devices.go);
	// without it instances asking for devices fail to start here.
	Devices *device.Registry
	// RootCPUShares is the cpu.shares of CgroupRoot: the weight of all
	// instances together against each of the agent's threads (1024); 0
	// is DefaultRootCPUShares, negative leaves the kernel's default.
	RootCPUShares int
}

// Agent runs the instances of one host.
type Agent struct {
	cfg Config
	log *slog.Logger

	mu      sync.Mutex
	runners map[string]*runner // by instance UID
	wg      sync.WaitGroup

	cpus       *cpuAllocator // dedicated cores
	histories  histories     // SLA samples of running instances
	sampler    sampler       // takes them
	netIDs     sync.Map      // instance UID -> network attachment id, once known
	imageSpecs imageSpecs    // what each image's config makes of a spec
	warm       *warm.Pool    // nil when warm containers are off
	initPath   string        // bin/kanga-init: the warm holder and the launcher (launch.go)
	meter      *meter

	cgRoot     string
	cgParents  sync.Map // instance UID -> the cgroup its cgroup is under (placeCgroup)
	quotas     tenantQuotas
	tenantMu   sync.Mutex     // serializes changes of tenant cgroups
	tenantRefs map[string]int // holds on tenant cgroups (holdTenant)

	logsMu sync.Mutex
	logs   map[string]*logWriter // by path: the writers of the containers' logs

	// adopted is closed once the runners of the instances found at start
	// exist, so that a new instance's ports are checked against them all.
	adopted chan struct{}

	remapMu      sync.Mutex // one image's layers remapped at a time
	remappedKeys sync.Map   // snapshot keys known to exist

	starts startSlots // instance starts running now

	// volumes keeps the instances' emptyDirs, writable-layer caps and
	// persistent volumes under <data-dir>/volumes; nil if that could not be set up (an
	// instance that needs it then fails to start, saying so).
	volumes *volume.Manager
}

// Compile-time check: the agent is the API's host in the all-in-one.
var _ hostcontract.Host = (*Agent)(nil)

// New returns an Agent.
func New(cfg Config) *Agent {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Ports.Range == (model.PortRange{}) {
		cfg.Ports.Range = model.DefaultPortRange
	}
	if cfg.UserNS {
		cfg.Logger.Warn("user namespaces are on for runtime class crun only: runc 1.1 cannot exec into a container whose user namespace does not own its network namespace")
	}
	a := &Agent{
		cfg: cfg, log: cfg.Logger.With("component", "agent"), runners: map[string]*runner{},
		cpus: newCPUAllocator(hostCPUList()), cgRoot: cfg.CgroupRoot,
		adopted: make(chan struct{}), starts: newStartSlots(cfg.StartSlots),
	}
	if a.cgRoot == "" {
		a.cgRoot = DefaultCgroupRoot
	}
	if vm, err := volume.New(filepath.Join(cfg.DataDir, "volumes"), a.log.With("component", "volume")); err != nil {
		a.log.Error("volume storage is off: instances with emptyDirs or a disk limit will not start", "err", err)
	} else {
		a.volumes = vm
	}
	a.meter = newMeter(cfg.HostName, filepath.Join(cfg.DataDir, "meter.json"), cfg.Usage, a.takeSample, a.log.With("component", "meter"))
	initPath := ""
	if cfg.Warm != nil {
		initPath = cfg.Warm.InitPath
	}
	path, initErr := findInit(initPath)
	if initErr != nil {
		a.log.Warn("kanga-init is missing (make build puts it next to kanga): containers with env from secrets will not start", "err", initErr)
	} else {
		a.initPath = path
	}
	if w := cfg.Warm; w != nil && w.Policy.Max != 0 {
		if initErr != nil {
			a.log.Warn("warm containers are off: the holder binary kanga-init is missing", "err", initErr)
		} else {
			class := "crun"
			if _, ok := cfg.Classes[class]; !ok {
				class = "runc"
			}
			a.warm = warm.New(warm.Config{
				Maker: warmMaker{a}, Policy: w.Policy, Total: w.Total, DefaultClass: class, Logger: cfg.Logger,
				StatusFile: filepath.Join(cfg.DataDir, "warm.json"),
			})
		}
	}
	return a
}

func (a *Agent) logDir(uid string) string { return filepath.Join(a.cfg.DataDir, "logs", uid) }

func (a *Agent) ns(ctx context.Context) context.Context {
	return namespaces.WithNamespace(ctx, containerdrt.Namespace)
}

// Run reconciles until ctx ends: it first adopts what a previous run left
// (running containers keep running), removes what no instance owns any
// more, then follows the store.
func (a *Agent) Run(ctx context.Context) error {
	var (
		insts []api.Instance
		rev   int64
		err   error
	)
	for {
		insts, rev, err = a.cfg.Store.ListAllInstances(ctx)
		if err == nil {
			break
		}
		a.log.Warn("listing instances failed; retrying", "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
	a.prioritize()
	known := map[string]bool{}
	for i := range insts {
		if insts[i].Status.Host == a.cfg.HostName {
			known[insts[i].UID] = true
		}
	}
	if err := a.meter.load(); err != nil {
		a.log.Error("reading the meter file failed; metering starts afresh", "err", err)
	}
	a.meter.forget(ctx, known)
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		a.meter.run(ctx)
	}()
	a.cleanupOrphans(ctx, known)
	// Before any instance is adopted: the volumes of instances gone are
	// released, the others mounted again if a reboot took their mounts.
	a.restoreVolumes(ctx, known)
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		a.followNetView(ctx)
	}()
	// Only after the cleanup, which would take fresh pool sandboxes for
	// leftovers of a previous run.
	if a.cfg.Pool != nil {
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			a.cfg.Pool.Run(ctx)
		}()
	}
	if a.warm != nil {
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			a.warm.Run(ctx)
		}()
	}
	// Adopted instances keep their cores before any new one asks.
	a.restoreCPUs(insts)
	a.restoreDevices(insts)
	for i := range insts {
		a.dispatch(ctx, &insts[i], false)
	}
	close(a.adopted)
	for ev := range a.cfg.Store.WatchAllInstances(ctx, rev) {
		if ev.Instance != nil {
			a.dispatch(ctx, ev.Instance, ev.Deleted)
		}
	}
	a.wg.Wait()
	return ctx.Err()
}

// dispatch hands the newest version of an instance to its runner, starting
// one if needed.
func (a *Agent) dispatch(ctx context.Context, inst *api.Instance, deleted bool) {
	if inst.Status.Host != a.cfg.HostName {
		a.relinquish(inst)
		return
	}
	a.mu.Lock()
	r, ok := a.runners[inst.UID]
	if !ok {
		if deleted {
			a.mu.Unlock()
			return
		}
		r = newRunner(a, inst)
		a.placeCgroup(inst, r.res)
		a.holdTenant(inst.Tenant)
		a.runners[inst.UID] = r
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			// The runner's own context ends its task waiters with it.
			rctx, cancel := context.WithCancel(ctx)
			r.run(rctx)
			cancel()
			a.mu.Lock()
			delete(a.runners, inst.UID)
			a.mu.Unlock()
			if ctx.Err() == nil {
				// Torn down (not left running for the next agent).
				a.cgParents.Delete(inst.UID)
				a.releaseTenant(ctx, inst.Tenant)
			}
		}()
	}
	a.mu.Unlock()
	r.update(inst, deleted)
}

// relinquish stops this host's copy of an instance that the control plane
// assigned elsewhere (its host was lost or drained and it was re-created)
// without touching the record, which now belongs to another host. The
// runner tears its containers and sandbox down as if the instance were
// deleted. Runners are found by tenant and name: the re-created instance
// has a new UID.
func (a *Agent) relinquish(inst *api.Instance) {
	a.mu.Lock()
	var rs []*runner
	for _, r := range a.runners {
		if r.tenant == inst.Tenant && r.name == inst.Name {
			rs = append(rs, r)
		}
	}
	a.mu.Unlock()
	for _, r := range rs {
		r.log.Info("instance assigned to another host; removing it here", "host", inst.Status.Host)
		r.update(inst, true)
	}
}

// resourcesOf is inst's resources, parsed: its runner's when it has one
// (parsed when the runner was made), else parsed here, leniently (what
// does not parse is left zero, so not promised), for a record no runner
// holds (one the host API asks about before or after its runner).
func (a *Agent) resourcesOf(inst *api.Instance) model.Resources {
	if r := a.runner(inst.UID); r != nil {
		return r.res
	}
	res, _ := model.ParseResources(inst.Spec.Resources)
	return res
}

func (a *Agent) runner(uid string) *runner {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.runners[uid]
}

// cleanupOrphans removes containers, sandboxes and logs whose instance no
// longer exists, e.g. deleted while the agent was down mid-teardown.
func (a *Agent) cleanupOrphans(ctx context.Context, known map[string]bool) {
	nctx := a.ns(ctx)
	ctrs, err := a.cfg.Client.Containers(nctx)
	if err != nil {
		a.log.Warn("listing containers for orphan cleanup failed", "err", err)
	}
	// Warm containers that an instance claimed (and recorded) but whose
	// labels were not updated yet belong to that instance; every other one
	// was ready and unclaimed when the previous agent stopped.
	claimed := map[string]bool{}
	for uid := range known {
		recs, _ := filepath.Glob(filepath.Join(a.sandboxDir(uid), "ctr-*"))
		for _, rec := range recs {
			if b, err := os.ReadFile(rec); err == nil {
				claimed[strings.TrimSpace(string(b))] = true
			}
		}
	}
	for _, c := range ctrs {
		labels, err := c.Labels(nctx)
		if err != nil {
			continue
		}
		uid := labels[labelUID]
		if isWarmLabelled(labels) && !claimed[c.ID()] {
			a.log.Info("removing an unclaimed warm container", "container", c.ID())
			if err := a.removeContainer(nctx, c); err != nil {
				a.log.Warn("removing an unclaimed warm container failed", "container", c.ID(), "err", err)
			}
			continue
		}
		if uid == "" || known[uid] {
			continue
		}
		a.log.Info("removing orphaned container", "container", c.ID(), "uid", uid)
		if err := a.removeContainer(nctx, c); err != nil {
			a.log.Warn("removing orphaned container failed", "container", c.ID(), "err", err)
			known[uid] = true // keep its sandbox until a later cleanup succeeds
		}
	}
	// Network attachments are named after their instance, or are pooled
	// sandboxes an instance recorded as its own (netns-id). Every other
	// pool id was ready but unclaimed when the previous agent stopped or
	// crashed: it is destroyed like any orphan.
	knownNet := map[string]bool{}
	for uid := range known {
		knownNet[uid] = true
		if id := a.readNetID(uid); id != "" {
			knownNet[id] = true
		}
	}
	ids, err := a.cfg.Network.List()
	if err != nil {
		a.log.Warn("listing sandboxes for orphan cleanup failed", "err", err)
	}
	for _, id := range ids {
		if !knownNet[id] {
			a.log.Info("removing orphaned sandbox", "uid", id, "pooled", pool.IsPoolID(id))
			if err := a.cfg.Network.Teardown(ctx, id, nil); err != nil {
				a.log.Warn("removing orphaned sandbox failed", "uid", id, "err", err)
				known[id] = true // keep its sandbox dir for a later cleanup
			}
			if !pool.IsPoolID(id) {
				a.removeCgroupNamed(id)
			}
		}
	}
	// The containers of gone instances are gone now, their tasks with
	// them: nothing uses those instances' emptyDirs and writable layers
	// but the sub-path binds into them, which go first.
	sandboxes, _ := os.ReadDir(filepath.Join(a.cfg.DataDir, "sandboxes"))
	for _, e := range sandboxes {
		if !known[e.Name()] {
			if err := a.unmountSubPaths(e.Name()); err != nil {
				a.log.Warn("unmounting the sub-path binds of a gone instance failed", "uid", e.Name(), "err", err)
			}
		}
	}
	a.cleanupVolumes(ctx, known)
	a.cleanupCgroups(known, knownNet)
	for _, e := range sandboxes {
		if !known[e.Name()] {
			a.removeSandboxDir(e.Name())
		}
	}
	entries, _ := os.ReadDir(filepath.Join(a.cfg.DataDir, "logs"))
	for _, e := range entries {
		if !known[e.Name()] {
			_ = os.RemoveAll(a.logDir(e.Name()))
		}
	}
	// The log FIFOs of tasks gone with their instance or warm container.
	fifos, _ := os.ReadDir(filepath.Join(a.cfg.DataDir, "logfifo"))
	for _, e := range fifos {
		if !known[e.Name()] && !knownNet[e.Name()] {
			_ = os.RemoveAll(a.logFIFODir(e.Name()))
		}
	}
}

// cleanupCgroups removes the cgroups of unclaimed warm containers (with
// no network left, the orphan cleanup of sandboxes did not reach them),
// those of instances no longer known under the tenant cgroups, and then
// every tenant cgroup left empty. Under the root, only warm containers'
// are removed by name: an instance cgroup there may be a dedicated
// instance's of an agent that shares the root (the default), which this
// agent does not know.
func (a *Agent) cleanupCgroups(known, knownNet map[string]bool) {
	keep := func(name string) bool { return known[name] || knownNet[name] }
	for _, h := range []string{"memory", "unified"} {
		ents, _ := os.ReadDir(filepath.Join(cgroupV1Root, h, a.cgRoot))
		for _, e := range ents {
			if e.IsDir() && strings.HasPrefix(e.Name(), warm.Prefix) && !keep(e.Name()) {
				removeCgroup(a.legacyCgroup(e.Name()))
			}
		}
	}
	for _, tc := range a.tenantCgroups() {
		for _, h := range []string{"memory", "cpu", "unified"} {
			ents, _ := os.ReadDir(filepath.Join(cgroupV1Root, h, tc))
			for _, e := range ents {
				if e.IsDir() && !keep(e.Name()) {
					a.log.Info("removing an orphaned cgroup", "cgroup", tc+"/"+e.Name())
					removeCgroup(tc + "/" + e.Name())
				}
			}
		}
		removeEmptyCgroup(tc)
	}
}

// Name implements hostcontract.Host.
func (a *Agent) Name() string { return a.cfg.HostName }

// RuntimeClasses implements hostcontract.Host.
func (a *Agent) RuntimeClasses() []string {
	var names []string
	for n := range a.cfg.Classes {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// Capacity implements hostcontract.Host.
func (a *Agent) Capacity() hostcontract.Capacity {
	return hostcontract.Capacity{CPUs: runtime.NumCPU(), Memory: memTotal(), StartSlots: a.StartSlots(), Pods: a.instanceCapacity(), Disk: a.diskCapacity()}
}

// diskCapacity is the ephemeral storage the host can promise: its volume
// storage's free space (package volume); 0, not metered, without volume
// storage (an instance with a disk limit fails to start there, saying so).
func (a *Agent) diskCapacity() int64 {
	if a.volumes == nil {
		return 0
	}
	n, err := a.volumes.DiskCapacity()
	if err != nil {
		a.log.Warn("reading the volume storage's free space failed; disk is not metered", "err", err)
		return 0
	}
	return max(n, 1) // 0 would read as not metered
}

// instanceCapacity is how many instances the host has addresses for: an
// instance past it would be placed here and fail in CNI ADD ("no IP
// addresses available"), where the scheduler could have said "too many
// instances" and kept it Pending or placed it elsewhere. Idle sandboxes of
// the pool hold addresses too. 0 (no limit) when the network does not say.
func (a *Agent) instanceCapacity() int {
	n, ok := a.cfg.Network.(interface{ Addresses() int })
	if !ok {
		return 0
	}
	pods := n.Addresses()
	if a.cfg.Pool != nil {
		pods -= a.cfg.Pool.MaxIdle()
	}
	return max(pods, 0)
}

// memTotal reads the host's memory from /proc/meminfo.
func memTotal() int64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "MemTotal:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

func tenantOf(ctx context.Context) (string, error) { return tenant.Name(ctx) }

// ImageConfig implements hostcontract.Host.
func (a *Agent) ImageConfig(ctx context.Context, ref string) (hostcontract.ImageConfig, error) {
	t, err := tenantOf(ctx)
	if err != nil {
		return hostcontract.ImageConfig{}, err
	}
	cfg, err := a.cfg.Images.Config(a.ns(ctx), t, ref)
	if err != nil {
		return hostcontract.ImageConfig{}, err
	}
	return hostcontract.ImageConfig{Entrypoint: cfg.Entrypoint, Cmd: cfg.Cmd}, nil
}

// ListImages implements hostcontract.Host.
func (a *Agent) ListImages(ctx context.Context) ([]api.Image, error) {
	t, err := tenantOf(ctx)
	if err != nil {
		return nil, err
	}
	return a.cfg.Images.List(a.ns(ctx), t)
}

// ImportImage implements hostcontract.Host.
func (a *Agent) ImportImage(ctx context.Context, r io.Reader, progress func(api.Progress)) ([]api.Image, error) {
	t, err := tenantOf(ctx)
	if err != nil {
		return nil, err
	}
	return a.cfg.Images.Import(a.ns(ctx), t, r, progress)
}

// PullImage implements hostcontract.Host.
func (a *Agent) PullImage(ctx context.Context, ref string, progress func(api.Progress)) (api.Image, error) {
	t, err := tenantOf(ctx)
	if err != nil {
		return api.Image{}, err
	}
	return a.cfg.Images.Pull(a.ns(ctx), t, ref, progress)
}

// checkTenant makes sure a host operation on an instance is asked for by
// the instance's own tenant.
func checkTenant(ctx context.Context, inst *api.Instance) error {
	t, err := tenantOf(ctx)
	if err != nil {
		return err
	}
	if t != inst.Tenant {
		return fmt.Errorf("instance %q not found: %w", inst.Name, errdefs.ErrNotFound)
	}
	return nil
}

var errInstanceGone = errors.New("instance is gone")
