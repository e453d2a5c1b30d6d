package agent

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
	"github.com/kanga-run/kanga/internal/agent/network"
)

const (
	// sampleInterval is how often a running instance's counters are read
	// while sampling costs little (see sampler).
	sampleInterval = time.Second
	// maxSampleInterval bounds how far a host with many instances, or a
	// starved one, spaces its rounds of samples out.
	maxSampleInterval = 15 * time.Second
	// samplerBudget is the share of one core the sampler may take: a round
	// that took d is followed by a pause of d/samplerBudget.
	samplerBudget = 0.05
	// historyLen bounds each instance's history: ten minutes at 1 s.
	historyLen = 600
	// unlimited memory reads as PAGE_COUNTER_MAX pages; anything this big
	// is no limit.
	memoryUnlimited = 1 << 62
)

// sample is one reading of an instance's counters: what the API shows,
// plus what the SLA report needs to tell "wanted more" from "was idle".
type sample struct {
	api.InstanceStats
	// IngressOverlimits and EgressOverlimits grow while the instance's
	// traffic exceeds its rate (network.Stats).
	IngressOverlimits uint64
	EgressOverlimits  uint64
	// SharedCores is set when a dedicated instance's cpuset overlapped
	// another dedicated instance's, as the kernel had them.
	SharedCores bool
	// RunDelayNanos is the time the instance's tasks spent runnable but
	// waiting for a CPU (from /proc/<tid>/schedstat): cgroup v1 counts
	// throttling by the quota, but not starvation by a busy host.
	RunDelayNanos uint64
}

// runDelay sums the run-queue wait of every task in the instance's cpu
// cgroup and its containers' cgroups. Tasks that exited take their delay
// with them, so the sum can drop; the SLA skips such intervals.
func runDelay(root, cg string) uint64 {
	var total uint64
	dir := filepath.Join(root, "cpu", cg)
	_ = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || d.Name() != "tasks" {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return nil
		}
		for _, tid := range strings.Fields(string(b)) {
			ss, err := os.ReadFile("/proc/" + tid + "/schedstat")
			if err != nil {
				continue
			}
			if f := strings.Fields(string(ss)); len(f) >= 2 {
				if v, err := strconv.ParseUint(f[1], 10, 64); err == nil {
					total += v
				}
			}
		}
		return nil
	})
	return total
}

var errNoCgroup = errors.New("the instance has no cgroup on this host")

// readCgroupStats reads the instance cgroup's counters from the v1
// hierarchies. cgroup v1 charges CPU, memory, pids and (through the
// _recursive files) blkio of the container cgroups to the instance's; OOM
// kills are the exception, counted in the victim's own cgroup only.
func readCgroupStats(root, cg string) (api.InstanceStats, error) {
	path := func(ctrl, file string) string { return filepath.Join(root, ctrl, cg, file) }
	var st api.InstanceStats
	usage, err := readUint(path("cpuacct", "cpuacct.usage"))
	if errors.Is(err, fs.ErrNotExist) {
		return st, errNoCgroup
	}
	if err != nil {
		return st, err
	}
	st.CPUUsageNanos = usage
	if kv, err := readKeyValues(path("cpu", "cpu.stat")); err == nil {
		st.CPUPeriods, st.CPUThrottledPeriods, st.CPUThrottledNanos = kv["nr_periods"], kv["nr_throttled"], kv["throttled_time"]
	}
	if b, err := os.ReadFile(path("cpuset", "cpuset.cpus")); err == nil {
		st.CPUs = strings.TrimSpace(string(b))
	}
	st.MemoryUsage, _ = readUint(path("memory", "memory.usage_in_bytes"))
	st.MemoryPeak, _ = readUint(path("memory", "memory.max_usage_in_bytes"))
	if l, err := readUint(path("memory", "memory.limit_in_bytes")); err == nil && l < memoryUnlimited {
		st.MemoryLimit = l
	}
	oom := func(dir string) uint64 {
		kv, _ := readKeyValues(filepath.Join(dir, "memory.oom_control"))
		return kv["oom_kill"]
	}
	st.OOMKills = oom(filepath.Join(root, "memory", cg))
	if entries, err := os.ReadDir(filepath.Join(root, "memory", cg)); err == nil {
		for _, e := range entries {
			if e.IsDir() {
				st.OOMKills += oom(filepath.Join(root, "memory", cg, e.Name()))
			}
		}
	}
	st.Pids, _ = readUint(path("pids", "pids.current"))
	st.PidsLimit, _ = readUint(path("pids", "pids.max")) // "max" reads as 0: no limit
	for _, f := range []struct {
		file        string
		read, write *uint64
	}{
		{"blkio.throttle.io_service_bytes", &st.DiskReadBytes, &st.DiskWriteBytes},
		{"blkio.throttle.io_serviced", &st.DiskReadOps, &st.DiskWriteOps},
	} {
		b, err := os.ReadFile(path("blkio", f.file+"_recursive"))
		if err != nil {
			b, _ = os.ReadFile(path("blkio", f.file))
		}
		*f.read, *f.write = parseBlkioStat(string(b))
	}
	return st, nil
}

// parseBlkioStat sums the Read and Write lines of a blkio stat file
// ("8:0 Read 4096") over its devices.
func parseBlkioStat(s string) (read, write uint64) {
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 3 {
			continue
		}
		n, err := strconv.ParseUint(f[2], 10, 64)
		if err != nil {
			continue
		}
		switch f[1] {
		case "Read":
			read += n
		case "Write":
			write += n
		}
	}
	return read, write
}

func readUint(path string) (uint64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	s := strings.TrimSpace(string(b))
	if s == "max" {
		return 0, nil
	}
	return strconv.ParseUint(s, 10, 64)
}

// readKeyValues reads a "key value" per line file such as cpu.stat.
func readKeyValues(path string) (map[string]uint64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	kv := map[string]uint64{}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), " ")
		if !ok {
			continue
		}
		if n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64); err == nil {
			kv[k] = n
		}
	}
	return kv, nil
}

// takeSample reads the instance's cgroup and network counters now.
func (a *Agent) takeSample(ctx context.Context, uid string) (sample, error) {
	return a.sampleWith(ctx, uid, nil)
}

// sampleWith reads the instance's cgroup counters now; its network
// counters come from nc, a reading of the whole host's taken for a round
// of samples, or are read alone when nc is nil.
func (a *Agent) sampleWith(ctx context.Context, uid string, nc *network.Counters) (sample, error) {
	cg := a.instanceCgroup(uid)
	st, err := readCgroupStats(cgroupV1Root, cg)
	if err != nil {
		return sample{}, err
	}
	st.Time = time.Now().UTC()
	s := sample{InstanceStats: st}
	var ns network.Stats
	if b, ok := a.cfg.Network.(counterReader); ok && nc != nil {
		ns, err = b.StatsFrom(nc, a.netID(uid))
	} else {
		ns, err = a.cfg.Network.Stats(ctx, a.netID(uid))
	}
	if err == nil {
		s.NetRxBytes, s.NetTxBytes = ns.RxBytes, ns.TxBytes
		s.IngressOverlimits, s.EgressOverlimits = ns.IngressOverlimits, ns.EgressOverlimits
	} else {
		a.log.Debug("reading network counters failed", "uid", uid, "err", err)
	}
	s.SharedCores = a.sharesDedicatedCores(uid, st.CPUs)
	s.RunDelayNanos = runDelay(cgroupV1Root, cg)
	return s, nil
}

// sharesDedicatedCores checks, against the kernel's cpusets rather than
// the allocator's bookkeeping, whether dedicated instance uid runs on a
// core another dedicated instance also has.
func (a *Agent) sharesDedicatedCores(uid, cpus string) bool {
	if _, ok := a.cpus.heldBy(uid); !ok {
		return false
	}
	mine, err := parseCPUList(cpus)
	if err != nil {
		return false
	}
	for _, other := range a.cpus.holders() {
		if other == uid {
			continue
		}
		b, err := os.ReadFile(filepath.Join(cgroupV1Root, "cpuset", a.legacyCgroup(other), "cpuset.cpus"))
		if err != nil {
			continue
		}
		theirs, err := parseCPUList(string(b))
		if err != nil {
			continue
		}
		for _, c := range theirs {
			if slices.Contains(mine, c) {
				return true
			}
		}
	}
	return false
}

// history is an instance's recent samples, oldest first.
type history struct {
	mu      sync.Mutex
	samples []sample
}

func (h *history) add(s sample) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.samples) == historyLen {
		copy(h.samples, h.samples[1:])
		h.samples = h.samples[:historyLen-1]
	}
	h.samples = append(h.samples, s)
}

func (h *history) all() []sample {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.samples)
}

// histories holds the history of every instance being sampled.
type histories struct {
	mu sync.Mutex
	m  map[string]*history
}

func (hs *histories) get(uid string) *history {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	return hs.m[uid]
}

// Stats returns a fresh sample of the instance's counters.
func (a *Agent) Stats(ctx context.Context, inst *api.Instance) (api.InstanceStats, error) {
	if err := checkTenant(ctx, inst); err != nil {
		return api.InstanceStats{}, err
	}
	s, err := a.takeSample(ctx, inst.UID)
	if errors.Is(err, errNoCgroup) {
		return api.InstanceStats{}, fmt.Errorf("instance %q has no sandbox on host %s (phase %s): %w", inst.Name, a.cfg.HostName, inst.Status.Phase, errdefs.ErrFailedPrecondition)
	}
	if err != nil {
		return api.InstanceStats{}, fmt.Errorf("reading the counters of instance %q: %w", inst.Name, err)
	}
	s.Storage = a.storageStats(ctx, inst)
	s.Containers = a.containerStats(inst)
	return s.InstanceStats, nil
}

// containerStats reads each container's own cgroup. Only Stats asks for
// them (the kubelet's stats endpoints of the virtual node), not the
// sampler, which runs for every instance all the time.
func (a *Agent) containerStats(inst *api.Instance) []api.ContainerStats {
	parent := a.instanceCgroup(inst.UID)
	var out []api.ContainerStats
	for _, c := range inst.Spec.Containers {
		cs, err := readContainerCgroup(cgroupV1Root, parent+"/"+a.leafName(inst.UID, c.Name))
		if err != nil {
			// Not running (or not created yet): no figures.
			continue
		}
		cs.Name = c.Name
		out = append(out, cs)
	}
	return out
}

// readContainerCgroup reads a container cgroup's CPU and memory.
func readContainerCgroup(root, cg string) (api.ContainerStats, error) {
	var cs api.ContainerStats
	usage, err := readUint(filepath.Join(root, "cpuacct", cg, "cpuacct.usage"))
	if err != nil {
		return cs, err
	}
	cs.CPUUsageNanos = usage
	cs.MemoryUsage, _ = readUint(filepath.Join(root, "memory", cg, "memory.usage_in_bytes"))
	cs.MemoryWorkingSet = cs.MemoryUsage
	if kv, err := readKeyValues(filepath.Join(root, "memory", cg, "memory.stat")); err == nil {
		if inactive := kv["total_inactive_file"]; inactive < cs.MemoryWorkingSet {
			cs.MemoryWorkingSet -= inactive
		} else {
			cs.MemoryWorkingSet = 0
		}
	}
	return cs, nil
}

// SLA reports, for each resource the instance was promised, whether it got
// it, judged from the samples of the last ten minutes.
func (a *Agent) SLA(ctx context.Context, inst *api.Instance) (api.SLAReport, error) {
	if err := checkTenant(ctx, inst); err != nil {
		return api.SLAReport{}, err
	}
	var samples []sample
	if h := a.histories.get(inst.UID); h != nil {
		samples = h.all()
	}
	if len(samples) == 0 {
		// Not (or no longer) sampled: a single fresh reading still shows
		// peaks, limits and OOM kills.
		if s, err := a.takeSample(ctx, inst.UID); err == nil {
			samples = []sample{s}
		}
	}
	rep := api.SLAReport{Instance: inst.Name, Items: evaluateSLA(a.resourcesOf(inst), samples)}
	rep.Items = append(rep.Items, storageItems(a.storageStats(ctx, inst))...)
	if len(samples) > 0 {
		rep.Since, rep.Until = samples[0].Time, samples[len(samples)-1].Time
	}
	return rep, nil
}
