package agent

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/containerd/containers"
	"github.com/containerd/containerd/oci"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
	"github.com/kanga-run/kanga/internal/model"
)

// dedicatedShares is the cpu.shares of a dedicated instance, the kernel's
// maximum. Shared instances may run on any core (only dedicated ones
// exclude each other), and keep the default 1024: on a dedicated core a
// busy shared neighbour then gets under 0.4% of it.
const dedicatedShares = 262144

// cfsPeriod is the CFS period of every quota Kanga sets, in microseconds.
const cfsPeriod = 100000

// cgroupResources turns an instance's resources into the limits of its
// cgroup. cores are the dedicated cores it holds (none for shared).
func cgroupResources(r model.Resources, cores []int, disk *blockDevice) (*specs.LinuxResources, error) {
	lr := &specs.LinuxResources{}
	switch {
	case len(cores) > 0:
		// Whole cores and no quota: a quota equal to the cores would
		// still throttle now and then through per-CPU runtime slack,
		// and a dedicated instance is promised never to be throttled.
		shares := uint64(dedicatedShares)
		lr.CPU = &specs.LinuxCPU{Cpus: formatCPUList(cores), Shares: &shares}
	case r.CPUQuotaMilli() > 0:
		// The cap, else the reservation: a shared instance never uses
		// more than either.
		period := uint64(cfsPeriod)
		quota := r.CPUQuotaMilli() * int64(period) / 1000
		lr.CPU = &specs.LinuxCPU{Period: &period, Quota: &quota}
	}
	if r.Memory > 0 {
		lr.Memory = &specs.LinuxMemory{Limit: &r.Memory}
	}
	if r.Pids > 0 {
		lr.Pids = &specs.LinuxPids{Limit: r.Pids}
	}
	bio, err := blockIOLimits(r, disk)
	if err != nil {
		return nil, err
	}
	lr.BlockIO = bio
	return lr, nil
}

// blockIOLimits are the disk throttles of res on disk, nil without any.
//
// cgroup v1 throttles flat: a limit binds the tasks of its own cgroup
// only, never its descendants (the kernel keeps hierarchical throttling
// for cgroup v2). The tasks live in the container cgroups, so each
// container gets these limits through its OCI spec (withDiskLimits); the
// instance cgroup carries them too, where the stats and an operator look.
// An instance of several containers thus gets the promise per container.
func blockIOLimits(r model.Resources, disk *blockDevice) (*specs.LinuxBlockIO, error) {
	if !hasDiskLimits(r) {
		return nil, nil
	}
	if disk == nil {
		return nil, fmt.Errorf("disk limits need the device of the writable layer: %w", errdefs.ErrFailedPrecondition)
	}
	bio := &specs.LinuxBlockIO{}
	dev := func(rate uint64) []specs.LinuxThrottleDevice {
		return []specs.LinuxThrottleDevice{{LinuxBlockIODevice: specs.LinuxBlockIODevice{Major: disk.major, Minor: disk.minor}, Rate: rate}}
	}
	for _, t := range []struct {
		bps  int64
		into *[]specs.LinuxThrottleDevice
	}{{r.DiskReadBPS, &bio.ThrottleReadBpsDevice}, {r.DiskWriteBPS, &bio.ThrottleWriteBpsDevice}} {
		if t.bps > 0 {
			*t.into = dev(uint64(t.bps))
		}
	}
	if r.DiskReadIOPS > 0 {
		bio.ThrottleReadIOPSDevice = dev(uint64(r.DiskReadIOPS))
	}
	if r.DiskWriteIOPS > 0 {
		bio.ThrottleWriteIOPSDevice = dev(uint64(r.DiskWriteIOPS))
	}
	return bio, nil
}

// hasDiskLimits reports whether r throttles disk I/O at all.
func hasDiskLimits(r model.Resources) bool {
	return r.DiskReadBPS > 0 || r.DiskWriteBPS > 0 || r.DiskReadIOPS > 0 || r.DiskWriteIOPS > 0
}

// blockDevice is a whole disk as blkio names it.
type blockDevice struct{ major, minor int64 }

func (d blockDevice) String() string { return fmt.Sprintf("%d:%d", d.major, d.minor) }

// sysDevBlock is where the kernel describes block devices by number.
const sysDevBlock = "/sys/dev/block"

// backingDevice finds the disk that holds dir. blk-throttle only accepts
// whole disks (the kernel answers ENODEV for a partition), so a partition
// is mapped to its disk, whose throttle then covers every partition on it.
// A directory on a filesystem without a block device (tmpfs, or btrfs,
// whose anonymous device numbers blkio does not know) cannot be throttled.
func backingDevice(dir string) (blockDevice, error) {
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return blockDevice{}, fmt.Errorf("finding the device of %s: %w", dir, err)
	}
	d, err := wholeDisk(sysDevBlock, blockDevice{int64(unix.Major(st.Dev)), int64(unix.Minor(st.Dev))})
	if err != nil {
		return blockDevice{}, fmt.Errorf("%s: %w", dir, err)
	}
	return d, nil
}

// wholeDisk maps a device to the disk blkio can throttle, from the
// kernel's description of devices under sysfs (/sys/dev/block).
func wholeDisk(sysfs string, dev blockDevice) (blockDevice, error) {
	sys := filepath.Join(sysfs, dev.String())
	if _, err := os.Stat(sys); err != nil {
		return blockDevice{}, fmt.Errorf("device %s is not a block device, so disk I/O on it cannot be throttled: %w", dev, errdefs.ErrFailedPrecondition)
	}
	if _, err := os.Stat(filepath.Join(sys, "partition")); err != nil {
		return dev, nil
	}
	// /sys/dev/block/M:m links to .../block/<disk>/<partition>.
	real, err := filepath.EvalSymlinks(sys)
	if err != nil {
		return blockDevice{}, err
	}
	b, err := os.ReadFile(filepath.Join(filepath.Dir(real), "dev"))
	if err != nil {
		return blockDevice{}, fmt.Errorf("finding the disk of partition %s: %w", dev, err)
	}
	return parseDevNumber(string(b))
}

func parseDevNumber(s string) (blockDevice, error) {
	a, b, ok := strings.Cut(strings.TrimSpace(s), ":")
	maj, err1 := strconv.ParseInt(a, 10, 64)
	mnr, err2 := strconv.ParseInt(b, 10, 64)
	if !ok || err1 != nil || err2 != nil {
		return blockDevice{}, fmt.Errorf("bad device number %q", s)
	}
	return blockDevice{maj, mnr}, nil
}

// createCgroup makes the instance cgroup with the spec's limits, under
// its tenant's cgroup (created or updated first, see tenantcg.go) unless
// it is dedicated. It is idempotent, so an adopting agent may call it
// again; a dedicated instance must hold its cores (reserveCPUs) first.
func (a *Agent) createCgroup(ctx context.Context, tenantName, uid string, res model.Resources) error {
	var cores []int
	if res.DedicatedCores > 0 {
		var ok bool
		if cores, ok = a.cpus.heldBy(uid); !ok {
			return fmt.Errorf("instance %s holds no dedicated cores: %w", uid, errdefs.ErrFailedPrecondition)
		}
	}
	disk, err := a.diskOf(res)
	if err != nil {
		return err
	}
	lr, err := cgroupResources(res, cores, disk)
	if err != nil {
		return err
	}
	path := a.instanceCgroup(uid)
	if strings.HasPrefix(path, a.tenantCgroup(tenantName)+"/") {
		limit, err := a.applyTenantCgroup(ctx, tenantName)
		if err != nil {
			a.log.Warn("the tenant's cgroup is not capped", "tenant", tenantName, "err", err)
		}
		if q := clampQuota(ownCPUQuota(res), limit); q >= 0 {
			period := uint64(cfsPeriod)
			lr.CPU = &specs.LinuxCPU{Period: &period, Quota: &q}
		}
	}
	return applyCgroup(path, lr)
}

// diskOf is the disk that holds the writable layers, if res limits disk
// I/O.
func (a *Agent) diskOf(res model.Resources) (*blockDevice, error) {
	if !hasDiskLimits(res) {
		return nil, nil
	}
	if a.cfg.SnapshotDir == "" {
		return nil, fmt.Errorf("disk limits need the snapshot directory of the writable layers, which this agent was not given: %w", errdefs.ErrFailedPrecondition)
	}
	d, err := backingDevice(a.cfg.SnapshotDir)
	if err != nil {
		return nil, err
	}
	return &d, nil
}

// withDiskLimits puts the instance's disk throttles on a container's own
// cgroup, where its tasks are (see blockIOLimits).
func (a *Agent) withDiskLimits(res model.Resources) (oci.SpecOpts, error) {
	disk, err := a.diskOf(res)
	if err != nil {
		return nil, err
	}
	bio, err := blockIOLimits(res, disk)
	if err != nil {
		return nil, err
	}
	return func(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
		if bio == nil {
			return nil
		}
		if s.Linux == nil {
			s.Linux = &specs.Linux{}
		}
		if s.Linux.Resources == nil {
			s.Linux.Resources = &specs.LinuxResources{}
		}
		s.Linux.Resources.BlockIO = bio
		return nil
	}, nil
}

// reserveCPUs gets the instance its dedicated cores before anything is
// created, waiting in Pending (reason InsufficientCPU) while other
// dedicated instances hold them. It returns false when the runner is done:
// its context ended, the instance was deleted while waiting (it is then
// torn down) or can never get its cores (it is then failed).
func (r *runner) reserveCPUs(ctx context.Context, inst *api.Instance) bool {
	n := r.res.DedicatedCores
	if n == 0 {
		return true
	}
	var err error
	announced := false
	for err == nil {
		wake := r.a.cpus.waitCh()
		var ok bool
		var cores []int
		cores, ok, err = r.a.cpus.allocate(r.uid, n)
		if err != nil {
			break
		}
		if ok {
			if announced {
				r.hold = nil
				r.event("Normal", "CPUAllocated", "got dedicated cores %s", formatCPUList(cores))
			}
			*inst, _ = r.snapshot()
			return true
		}
		if !announced {
			announced = true
			r.hold = &api.InstanceStatus{
				Reason:  ReasonInsufficientCPU,
				Message: fmt.Sprintf("waiting for %s: %d of the host's %d cores are free, the others are dedicated to other instances", plural(n, "dedicated core"), r.a.cpus.free(), len(r.a.cpus.all)),
			}
			r.event("Warning", ReasonInsufficientCPU, "%s", r.hold.Message)
			r.publish(ctx, api.PhasePending)
		}
		select {
		case <-ctx.Done():
			return false
		case <-wake:
		case <-r.notify:
			latest, gone := r.snapshot()
			if gone || latest.DeletionRequested {
				r.hold = nil
				r.teardown(ctx, !gone)
				return false
			}
		case <-time.After(30 * time.Second):
			// Belt and braces: a release is always signalled, but a
			// periodic retry costs nothing.
		}
	}
	r.hold = nil
	r.event("Warning", "StartFailed", "%v", err)
	r.fail(ctx, ReasonInsufficientCPU, err)
	r.waitForDelete(ctx)
	return false
}

// restoreCPUs rebuilds the dedicated-core allocation after an agent
// restart from the cgroups of the instances it adopts, before any new
// instance can ask for cores.
func (a *Agent) restoreCPUs(insts []api.Instance) {
	for i := range insts {
		inst := &insts[i]
		if inst.Status.Host != a.cfg.HostName {
			continue
		}
		// Read before any runner exists: resourcesOf parses the record.
		if a.resourcesOf(inst).DedicatedCores == 0 {
			continue
		}
		b, err := os.ReadFile(filepath.Join(cgroupV1Root, "cpuset", a.legacyCgroup(inst.UID), "cpuset.cpus"))
		if err != nil {
			continue // not created yet: it allocates when it starts
		}
		cores, err := parseCPUList(string(b))
		if err != nil || len(cores) == 0 {
			continue
		}
		if err := a.cpus.restore(inst.UID, cores); err != nil {
			a.log.Warn("restoring dedicated cores failed", "instance", inst.Name, "err", err)
			continue
		}
		a.log.Info("restored dedicated cores", "instance", inst.Name, "cpus", formatCPUList(cores))
	}
}

// heldBy returns the cores uid holds.
func (c *cpuAllocator) heldBy(uid string) ([]int, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	cores, ok := c.held[uid]
	return append([]int(nil), cores...), ok
}

func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
