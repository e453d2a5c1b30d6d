package agent

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/kanga-run/kanga/errdefs"
)

// cgroupV1Root is where the v1 hierarchies are mounted, one per
// controller (cgroupfs driver; there is no systemd here).
const cgroupV1Root = "/sys/fs/cgroup"

// ReasonInsufficientCPU is the status reason of an instance that waits,
// Pending, for dedicated cores that other instances hold.
const ReasonInsufficientCPU = "InsufficientCPU"

// HostCPUs is the number of cores instances may run on: the CPUs of the
// root cpuset, which is what a dedicated instance can be given. The
// server uses it to reject a dedicated spec that no host of this size can
// ever satisfy.
func HostCPUs() int { return len(hostCPUList()) }

// HostCPUs implements the host's capacity query for the API server.
func (a *Agent) HostCPUs() int { return len(a.cpus.all) }

func hostCPUList() []int {
	for _, f := range []string{"cpuset.effective_cpus", "cpuset.cpus"} {
		b, err := os.ReadFile(filepath.Join(cgroupV1Root, "cpuset", f))
		if err != nil {
			continue
		}
		if cpus, err := parseCPUList(string(b)); err == nil && len(cpus) > 0 {
			return cpus
		}
	}
	cpus := make([]int, runtime.NumCPU())
	for i := range cpus {
		cpus[i] = i
	}
	return cpus
}

// cpuAllocator hands out whole cores to dedicated instances so that no
// two of them ever share one. Shared instances are not its business: they
// keep the whole host's cpuset and compete under their CFS quota, while
// a dedicated instance outweighs them on its cores (see createCgroup).
type cpuAllocator struct {
	all []int // the host's cores, ascending

	mu      sync.Mutex
	held    map[string][]int // by instance UID
	owner   map[int]string   // core -> UID
	changed chan struct{}    // closed and replaced when cores are released
}

func newCPUAllocator(all []int) *cpuAllocator {
	return &cpuAllocator{
		all:     slices.Sorted(slices.Values(all)),
		held:    map[string][]int{},
		owner:   map[int]string{},
		changed: make(chan struct{}),
	}
}

// allocate gives uid n cores no other instance holds, lowest first. It
// is idempotent: an instance that already holds cores gets them again. ok
// is false when the cores are held by others now; err is set when the
// host can never satisfy n.
func (c *cpuAllocator) allocate(uid string, n int) (cores []int, ok bool, err error) {
	if n > len(c.all) {
		return nil, false, fmt.Errorf("%d dedicated cores asked, the host has %d: %w", n, len(c.all), errdefs.ErrInvalidArgument)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if have, ok := c.held[uid]; ok {
		return slices.Clone(have), true, nil
	}
	var free []int
	for _, cpu := range c.all {
		if _, taken := c.owner[cpu]; !taken {
			free = append(free, cpu)
		}
	}
	if len(free) < n {
		return nil, false, nil
	}
	cores = free[:n]
	c.held[uid] = cores
	for _, cpu := range cores {
		c.owner[cpu] = uid
	}
	return slices.Clone(cores), true, nil
}

// restore records cores an instance was given before the agent restarted,
// read back from its cgroup. A core claimed twice stays with the first
// claimant: the second is reported so the caller can say so.
func (c *cpuAllocator) restore(uid string, cores []int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, cpu := range cores {
		if o, taken := c.owner[cpu]; taken && o != uid {
			return fmt.Errorf("core %d of instance %s is already held by %s: %w", cpu, uid, o, errdefs.ErrConflict)
		}
		if !slices.Contains(c.all, cpu) {
			return fmt.Errorf("core %d of instance %s is not in the host's cpuset: %w", cpu, uid, errdefs.ErrConflict)
		}
	}
	c.held[uid] = slices.Clone(cores)
	for _, cpu := range cores {
		c.owner[cpu] = uid
	}
	return nil
}

// release frees uid's cores and wakes the instances waiting for some.
func (c *cpuAllocator) release(uid string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	cores, ok := c.held[uid]
	if !ok {
		return
	}
	for _, cpu := range cores {
		delete(c.owner, cpu)
	}
	delete(c.held, uid)
	close(c.changed)
	c.changed = make(chan struct{})
}

// waitCh is closed at the next release.
func (c *cpuAllocator) waitCh() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.changed
}

// holders returns the UIDs that hold dedicated cores.
func (c *cpuAllocator) holders() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]string, 0, len(c.held))
	for uid := range c.held {
		out = append(out, uid)
	}
	slices.Sort(out)
	return out
}

// free is the number of cores no dedicated instance holds.
func (c *cpuAllocator) free() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.all) - len(c.owner)
}

// parseCPUList parses the kernel's cpu list format ("0-2,5,7-8").
func parseCPUList(s string) ([]int, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, nil
	}
	var out []int
	for _, part := range strings.Split(s, ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := strconv.Atoi(lo)
		if err != nil || a < 0 {
			return nil, fmt.Errorf("bad cpu list %q: %w", s, errdefs.ErrInvalidArgument)
		}
		b := a
		if isRange {
			if b, err = strconv.Atoi(hi); err != nil || b < a {
				return nil, fmt.Errorf("bad cpu list %q: %w", s, errdefs.ErrInvalidArgument)
			}
		}
		for i := a; i <= b; i++ {
			out = append(out, i)
		}
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// formatCPUList writes cores in the kernel's cpu list format.
func formatCPUList(cores []int) string {
	cores = slices.Compact(slices.Sorted(slices.Values(cores)))
	var parts []string
	for i := 0; i < len(cores); {
		j := i
		for j+1 < len(cores) && cores[j+1] == cores[j]+1 {
			j++
		}
		if j == i {
			parts = append(parts, strconv.Itoa(cores[i]))
		} else {
			parts = append(parts, strconv.Itoa(cores[i])+"-"+strconv.Itoa(cores[j]))
		}
		i = j + 1
	}
	return strings.Join(parts, ",")
}
