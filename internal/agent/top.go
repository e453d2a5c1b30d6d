package agent

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
	"github.com/kanga-run/kanga/internal/hostcontract"
	"github.com/kanga-run/kanga/internal/model"
)

var _ hostcontract.ProcessLister = (*Agent)(nil)

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat's times: 100 on
// every Linux architecture Kanga runs on.
const clockTicks = 100

// Top implements hostcontract.ProcessLister: the processes in each
// container's cgroup, read from the host's /proc, so that an image needs
// no ps.
func (a *Agent) Top(ctx context.Context, inst *api.Instance) ([]api.Process, error) {
	if err := checkTenant(ctx, inst); err != nil {
		return nil, err
	}
	if class, ok := a.cfg.Classes[inst.Spec.Runtime]; ok && class.ExclusiveNetns {
		// A user-space kernel (gVisor): the host sees its sandbox and
		// gofer, not the application's processes.
		return nil, fmt.Errorf("instance %q runs in runtime class %s, whose processes live in the sandbox's own kernel, out of the host's sight: %w", inst.Name, inst.Spec.Runtime, errdefs.ErrNotImplemented)
	}
	parent := a.instanceCgroup(inst.UID)
	out := []api.Process{}
	cgroupFound := false
	for _, sc := range model.AllContainers(&inst.Spec) {
		c := sc.Spec
		cg := parent + "/" + a.leafName(inst.UID, c.Name)
		procs, err := cgroupProcesses("/proc", filepath.Join(cgroupV1Root, "pids"), cg)
		if errors.Is(err, fs.ErrNotExist) {
			continue // not started, or ended
		}
		if err != nil {
			return nil, fmt.Errorf("processes of container %s of instance %q: %w", c.Name, inst.Name, err)
		}
		cgroupFound = true
		for i := range procs {
			procs[i].Container = c.Name
		}
		out = append(out, procs...)
	}
	if !cgroupFound {
		return nil, fmt.Errorf("instance %q has no running container on host %s (phase %s): %w", inst.Name, a.cfg.HostName, inst.Status.Phase, errdefs.ErrFailedPrecondition)
	}
	return out, nil
}

// cgroupProcesses lists the processes of cgroup cg (a path under the v1
// hierarchy mounted at hierarchy), read from procRoot. IDs are mapped into
// the processes' own PID and user namespaces. A process that exits while
// it is read is left out.
func cgroupProcesses(procRoot, hierarchy, cg string) ([]api.Process, error) {
	b, err := os.ReadFile(filepath.Join(hierarchy, cg, "cgroup.procs"))
	if err != nil {
		return nil, err
	}
	var procs []api.Process
	hostPPID := map[int]int{} // ns pid -> host ppid
	nsOf := map[int]int{}     // host pid -> ns pid
	for _, f := range strings.Fields(string(b)) {
		pid, err := strconv.Atoi(f)
		if err != nil {
			return nil, fmt.Errorf("%s/cgroup.procs: %q is no pid", cg, f)
		}
		p, ppid, err := readProcess(procRoot, pid, cg)
		if err != nil {
			continue
		}
		nsOf[pid] = p.PID
		hostPPID[p.PID] = ppid
		procs = append(procs, p)
	}
	// A parent outside the cgroup (the runtime's shim) is 0, as a PID
	// namespace's first process sees it.
	for i := range procs {
		procs[i].PPID = nsOf[hostPPID[procs[i].PID]]
	}
	return procs, nil
}

// errMoved is a process that is no longer in the cgroup it was listed in:
// its pid was reused, or it moved.
var errMoved = errors.New("the process left the cgroup")

// readProcess reads process pid through one directory descriptor of
// /proc/<pid>: once the process is gone, reads through it fail even if
// the pid is reused, so that checking its cgroup first makes sure nothing
// of another process (the host's, another tenant's) is read. It returns
// the process with its PID in its own namespace, and its parent's host
// pid.
func readProcess(procRoot string, pid int, cg string) (api.Process, int, error) {
	dir, err := os.Open(filepath.Join(procRoot, strconv.Itoa(pid)))
	if err != nil {
		return api.Process{}, 0, err
	}
	defer dir.Close()
	read := func(name string) ([]byte, error) {
		fd, err := unix.Openat(int(dir.Fd()), name, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
		if err != nil {
			return nil, &fs.PathError{Op: "openat", Path: name, Err: err}
		}
		f := os.NewFile(uintptr(fd), name)
		defer f.Close()
		return io.ReadAll(io.LimitReader(f, 1<<20))
	}
	cgroups, err := read("cgroup")
	if err != nil {
		return api.Process{}, 0, err
	}
	if !inCgroup(cgroups, "pids", cg) {
		return api.Process{}, 0, errMoved
	}
	stat, err := read("stat")
	if err != nil {
		return api.Process{}, 0, err
	}
	status, err := read("status")
	if err != nil {
		return api.Process{}, 0, err
	}
	cmdline, err := read("cmdline")
	if err != nil {
		return api.Process{}, 0, err
	}
	uidMap, err := read("uid_map")
	if err != nil {
		return api.Process{}, 0, err
	}
	p, ppid, err := parseStat(stat)
	if err != nil {
		return api.Process{}, 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	p.PID = pid
	if ns, ok := statusField(status, "NSpid"); ok {
		if f := strings.Fields(ns); len(f) > 0 {
			p.PID, _ = strconv.Atoi(f[len(f)-1])
		}
	}
	if ids, ok := statusField(status, "Uid"); ok {
		if f := strings.Fields(ids); len(f) > 1 {
			if euid, err := strconv.ParseUint(f[1], 10, 32); err == nil {
				p.UID = mapID(uidMap, uint32(euid))
			}
		}
	}
	if args := strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00"); len(args) > 0 && args[0] != "" {
		p.Command = args
	} else {
		p.Command = []string{"[" + p.Command[0] + "]"}
	}
	return p, ppid, nil
}

// inCgroup reports whether a /proc/<pid>/cgroup text puts the process in
// cg of the v1 controller. The agent runs in the host's cgroup namespace
// (it makes its cgroups at their absolute paths), so the kernel shows the
// whole path.
func inCgroup(text []byte, controller, cg string) bool {
	sc := bufio.NewScanner(bytes.NewReader(text))
	for sc.Scan() {
		// hierarchy-ID:controller-list:path
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 {
			continue
		}
		for _, c := range strings.Split(parts[1], ",") {
			if c == controller {
				return parts[2] == cg
			}
		}
	}
	return false
}

// parseStat reads a /proc/<pid>/stat line: the command name (comm, in
// brackets later), state, parent's host pid, CPU time and resident memory.
// comm may hold spaces and parentheses, so the fields are split after its
// last ')'.
func parseStat(b []byte) (api.Process, int, error) {
	s := string(b)
	open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || end < open {
		return api.Process{}, 0, errors.New("no command name")
	}
	comm := s[open+1 : end]
	// Fields from 3 (state) on; field n is f[n-3].
	f := strings.Fields(s[end+1:])
	if len(f) < 22 {
		return api.Process{}, 0, fmt.Errorf("%d fields, want at least 24", len(f)+2)
	}
	ppid, err := strconv.Atoi(f[1])
	if err != nil {
		return api.Process{}, 0, fmt.Errorf("ppid %q", f[1])
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	rss, _ := strconv.ParseInt(f[21], 10, 64)
	return api.Process{
		State:     f[0],
		CPUMillis: (utime + stime) * 1000 / clockTicks,
		RSSBytes:  rss * int64(os.Getpagesize()),
		Command:   []string{comm},
	}, ppid, nil
}

// statusField returns the value of a "Name:\tvalue" line of
// /proc/<pid>/status.
func statusField(status []byte, name string) (string, bool) {
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+":"); ok {
			return strings.TrimSpace(v), true
		}
	}
	return "", false
}

// mapID maps a host ID into a user namespace by its uid_map ("inside
// outside count" lines); an ID the map lacks is the overflow ID, as the
// kernel shows it.
func mapID(uidMap []byte, id uint32) uint32 {
	sc := bufio.NewScanner(bytes.NewReader(uidMap))
	for sc.Scan() {
		var in, out, n uint64
		if _, err := fmt.Sscan(sc.Text(), &in, &out, &n); err != nil {
			continue
		}
		if uint64(id) >= out && uint64(id) < out+n {
			return uint32(in + uint64(id) - out)
		}
	}
	return 65534
}
