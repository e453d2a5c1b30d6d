package agent

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// DefaultRootCPUShares is the cpu.shares of the cgroup root
// (Config.CgroupRoot): the weight of all the host's instances together
// against each process outside it, the agent's own threads among them.
//
// Under CFS's group scheduling (cgroup v1) the root's children compete
// with the tasks of the root cgroup: a runnable thread of the agent at
// nice 0 weighs 1024, and so does, by default, the whole instance tree
// however many busy loops it runs. With 128 a thread of Kanga's (the API,
// the embedded etcd, the lease keep-alives, the control-plane loop) gets
// eight ninths of a core the instances want too, where it got one half:
// the instances cannot starve the control path (issue 22). Shares are
// work-conserving, so instances still take every cycle Kanga leaves idle.
// Kanga's helpers run at a lower weight still (CNI plugins at nice +10,
// the warm filler at nice 19), below the instances when both want the CPU.
const DefaultRootCPUShares = 128

// setRootCPUShares makes the cgroup root in the cpu hierarchy, if it is
// not there yet, and gives it shares. The kernel takes 2 to 262144.
func setRootCPUShares(root string, shares int) error {
	dir := filepath.Join(cgroupV1Root, "cpu", root)
	if _, err := os.Stat(filepath.Join(cgroupV1Root, "cpu", "cpu.shares")); err != nil {
		return fmt.Errorf("no cgroup v1 cpu hierarchy at %s/cpu: %w", cgroupV1Root, err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "cpu.shares"), []byte(strconv.Itoa(shares)), 0)
}

// readRootCPUShares reads the cpu.shares of the cgroup root.
func readRootCPUShares(root string) (int, error) {
	b, err := os.ReadFile(filepath.Join(cgroupV1Root, "cpu", root, "cpu.shares"))
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

// prioritize weights the instances' cgroup root below the agent
// (Config.RootCPUShares); a failure is logged, not fatal: the instances
// run all the same, only at the kernel's default weight.
func (a *Agent) prioritize() {
	shares := a.cfg.RootCPUShares
	if shares < 0 {
		return
	}
	if shares == 0 {
		shares = DefaultRootCPUShares
	}
	if err := setRootCPUShares(a.cgRoot, shares); err != nil {
		a.log.Warn("weighting the instances below the agent failed; they compete with it at the kernel's default weight",
			"cgroup", a.cgRoot, "cpu_shares", shares, "err", err)
		return
	}
	a.log.Info("instances weighted below the agent", "cgroup", a.cgRoot, "cpu_shares", shares)
}

// instanceNice is the CPU priority instances run at: the kernel's
// default, whatever Kanga's own. containerd, its shims and so the
// containers' processes inherit the daemon's nice (--nice, -5 by
// default), and a tenant's processes must not get the control path's
// priority (nor the I/O priority the kernel derives from it).
const instanceNice = 0

// resetNice sets every thread of the created (not yet started) task pid to
// instanceNice, before the task executes the instance's process, which
// then inherits it along with everything it forks. The OCI spec's
// process.scheduler would say this at create time, but runc before 1.2
// ignores it. Nothing is done when the daemon already runs at
// instanceNice.
func resetNice(pid uint32) error {
	own, err := unix.Getpriority(unix.PRIO_PROCESS, 0)
	if err != nil {
		return err
	}
	// getpriority(2) returns 20-nice.
	if 20-own == instanceNice {
		return nil
	}
	tids, err := os.ReadDir(filepath.Join("/proc", strconv.FormatUint(uint64(pid), 10), "task"))
	if err != nil {
		return err
	}
	for _, t := range tids {
		tid, err := strconv.Atoi(t.Name())
		if err != nil {
			continue
		}
		if err := unix.Setpriority(unix.PRIO_PROCESS, tid, instanceNice); err != nil && !errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("set the nice of task %d of process %d: %w", tid, pid, err)
		}
	}
	return nil
}
