package agent

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
)

// Devices attached to a running instance (kanga device attach) and
// detached from it. A runtime fixes a container's devices when it creates
// it (runc update cannot change device rules), so the agent does what the
// runtime would have done, in each running container: it makes the
// device's nodes in the container's /dev, resolved inside the container's
// root (openat2 RESOLVE_IN_ROOT through /proc/<pid>/root, so that a
// symlink the tenant planted cannot point the node at the host), and
// allows them in the container's devices cgroup. Detach denies them again
// and removes the nodes. The cgroup v1 devices controller checks at
// open() only: a process that opened the device before the detach keeps
// its descriptor; the detach names those processes in its event rather
// than killing them. The edits other than device nodes (environment,
// mounts, hooks) take effect when a container is next created, as the
// instance's devices are then part of its spec.
//
// The work runs in the runner's goroutine (deviceOps), between the
// instance's own events, so that it never races a restart that creates a
// container anew.

// deviceOp is one attach or detach for the runner's loop.
type deviceOp struct {
	attach *api.DeviceRequest // or
	detach string
	reply  chan deviceReply
}

type deviceReply struct {
	names []string
	err   error
}

// AttachDevice implements hostcontract.DeviceAttacher.
func (a *Agent) AttachDevice(ctx context.Context, inst *api.Instance, req api.DeviceRequest) ([]string, error) {
	rep, err := a.deviceOp(ctx, inst, deviceOp{attach: &req})
	return rep.names, err
}

// DetachDevice implements hostcontract.DeviceAttacher.
func (a *Agent) DetachDevice(ctx context.Context, inst *api.Instance, device string) error {
	_, err := a.deviceOp(ctx, inst, deviceOp{detach: device})
	return err
}

func (a *Agent) deviceOp(ctx context.Context, inst *api.Instance, op deviceOp) (deviceReply, error) {
	if err := checkTenant(ctx, inst); err != nil {
		return deviceReply{}, err
	}
	if a.cfg.Devices == nil {
		return deviceReply{}, fmt.Errorf("host %s offers no devices: %w", a.cfg.HostName, errdefs.ErrFailedPrecondition)
	}
	if inst.Spec.Runtime == "gvisor" {
		return deviceReply{}, fmt.Errorf("instance %q runs in gVisor, whose kernel does not pass host devices through: %w", inst.Name, errdefs.ErrInvalidArgument)
	}
	r := a.runner(inst.UID)
	if r == nil {
		return deviceReply{}, fmt.Errorf("instance %q is not running on host %s: %w", inst.Name, a.cfg.HostName, errdefs.ErrNotFound)
	}
	op.reply = make(chan deviceReply, 1)
	select {
	case r.deviceOps <- op:
	case <-ctx.Done():
		return deviceReply{}, ctx.Err()
	}
	select {
	case rep := <-op.reply:
		return rep, rep.err
	case <-ctx.Done():
		return deviceReply{}, ctx.Err()
	}
}

// handleDeviceOp carries out op in the runner's goroutine.
func (r *runner) handleDeviceOp(op deviceOp) {
	var rep deviceReply
	if op.attach != nil {
		rep.names, rep.err = r.attachDevice(*op.attach)
	} else {
		rep.err = r.detachDevice(op.detach)
	}
	op.reply <- rep
}

// proc is a running container's first process and its devices cgroup.
type proc struct {
	pid    int
	cgroup string
}

// runningProcs are the instance's running containers' processes. Each
// one's cgroup must be under the instance's: a pid whose process ended and
// was reused since containerd reported it belongs to someone else.
func (r *runner) runningProcs() ([]proc, error) {
	var out []proc
	own := r.a.instanceCgroup(r.uid) + "/"
	for _, c := range r.ctrs {
		if c.task == nil || c.status.State != api.ContainerRunning {
			continue
		}
		pid := int(c.task.Pid())
		cg, err := devicesCgroup(pid)
		if err != nil {
			return nil, err
		}
		if !strings.HasPrefix(cg, own) {
			return nil, fmt.Errorf("process %d of container %s is in cgroup %s, not the instance's: it ended meanwhile: %w", pid, c.spec.Name, cg, errdefs.ErrConflict)
		}
		out = append(out, proc{pid: pid, cgroup: cg})
	}
	return out, nil
}

func (r *runner) attachDevice(req api.DeviceRequest) ([]string, error) {
	pids, err := r.runningProcs()
	if err != nil {
		return nil, err
	}
	if len(pids) == 0 {
		return nil, fmt.Errorf("instance %q has no running container: %w", r.name, errdefs.ErrConflict)
	}
	reg := r.a.cfg.Devices
	names, err := reg.Attach(r.uid, req, r.a.namedByOthers(r.uid))
	if err != nil {
		return nil, err
	}
	var done []specs.LinuxDevice
	var donePIDs []proc
	undo := func() {
		for _, pid := range donePIDs {
			for _, d := range done {
				_ = removeDeviceIn(pid, d)
			}
		}
		for _, n := range names {
			_ = reg.Detach(r.uid, n)
		}
	}
	var nodes []specs.LinuxDevice
	for _, n := range names {
		ns, err := reg.Nodes(n)
		if err != nil {
			undo()
			return nil, err
		}
		nodes = append(nodes, ns...)
	}
	for _, pid := range pids {
		donePIDs = append(donePIDs, pid)
		for _, d := range nodes {
			if err := addDeviceIn(pid, d); err != nil {
				undo()
				return nil, fmt.Errorf("attaching %s: %w", d.Path, err)
			}
			if len(done) < len(nodes) {
				done = append(done, d)
			}
		}
	}
	r.devices = append(r.devices, names...)
	r.event("Normal", "DeviceAttached", "attached %s", strings.Join(names, ", "))
	return names, nil
}

func (r *runner) detachDevice(name string) error {
	if !slices.Contains(r.devices, name) {
		return fmt.Errorf("instance %q holds no device %s: %w", r.name, name, errdefs.ErrNotFound)
	}
	reg := r.a.cfg.Devices
	nodes, err := reg.Nodes(name)
	if err != nil {
		return err
	}
	procs, err := r.runningProcs()
	if err != nil {
		return err
	}
	var holders []string
	for _, pid := range procs {
		for _, d := range nodes {
			if err := removeDeviceIn(pid, d); err != nil {
				return fmt.Errorf("detaching %s: %w", d.Path, err)
			}
			holders = append(holders, openers(pid, d)...)
		}
	}
	if err := reg.Detach(r.uid, name); err != nil {
		return err
	}
	r.devices = slices.DeleteFunc(r.devices, func(n string) bool { return n == name })
	if len(holders) > 0 {
		r.event("Warning", "DeviceDetached", "detached %s; still open in %s: the device cgroup checks only at open, so these keep their descriptors until they close them", name, strings.Join(holders, ", "))
	} else {
		r.event("Normal", "DeviceDetached", "detached %s", name)
	}
	return nil
}

// addDeviceIn makes device node d in the mount namespace of process pid
// and allows it in pid's devices cgroup.
func addDeviceIn(pid proc, d specs.LinuxDevice) error {
	if err := deviceRule(pid, "devices.allow", d); err != nil {
		return err
	}
	parent, base, err := nodeParent(pid, d.Path, true)
	if err != nil {
		return err
	}
	defer unix.Close(parent)
	mode := uint32(0o666)
	if d.FileMode != nil {
		mode = uint32(*d.FileMode & 0o777)
	}
	typ := uint32(unix.S_IFCHR)
	if d.Type == "b" {
		typ = unix.S_IFBLK
	}
	dev := int(unix.Mkdev(uint32(d.Major), uint32(d.Minor)))
	err = unix.Mknodat(parent, base, typ|mode, dev)
	if errors.Is(err, unix.EEXIST) {
		// A node the container made itself, or an earlier attach's: it
		// is replaced, so the path opens the device asked for.
		if err = unix.Unlinkat(parent, base, 0); err == nil {
			err = unix.Mknodat(parent, base, typ|mode, dev)
		}
	}
	if err != nil {
		return err
	}
	// Mknodat applies the umask; the spec's mode is what the container
	// gets.
	if err := unix.Fchmodat(parent, base, mode, 0); err != nil {
		return err
	}
	uid, gid := 0, 0
	if d.UID != nil {
		uid = int(*d.UID)
	}
	if d.GID != nil {
		gid = int(*d.GID)
	}
	return unix.Fchownat(parent, base, uid, gid, unix.AT_SYMLINK_NOFOLLOW)
}

// nodeParent opens the directory of node path p in the root of process
// pid, resolved inside that root, making it first with create; it returns
// the directory and the node's name in it.
func nodeParent(pid proc, p string, create bool) (int, string, error) {
	root, err := unix.Open(fmt.Sprintf("/proc/%d/root", pid.pid), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, "", err
	}
	defer unix.Close(root)
	// Still the container's process once its root is open: if the pid
	// was reused before the open, the new process is in another cgroup;
	// if after, the open root is the container's.
	if cg, err := devicesCgroup(pid.pid); err != nil || cg != pid.cgroup {
		return -1, "", fmt.Errorf("process %d left the container: %w", pid.pid, errdefs.ErrConflict)
	}
	dir, base := path.Split(strings.TrimPrefix(path.Clean(p), "/"))
	dir = strings.TrimSuffix(dir, "/")
	if dir == "" {
		dir = "."
	}
	if create {
		if err := mkdirInRoot(root, dir); err != nil {
			return -1, "", err
		}
	}
	parent, err := openInRoot(root, dir, unix.O_PATH|unix.O_DIRECTORY)
	return parent, base, err
}

// removeDeviceIn denies device d in pid's devices cgroup and removes its
// node from pid's /dev. A device every container may use (/dev/null and
// the rest of the runtimes' defaults) is not denied: its node goes, the
// container's right to make and open one stays.
func removeDeviceIn(pid proc, d specs.LinuxDevice) error {
	if !runtimeDefault(d) {
		if err := deviceRule(pid, "devices.deny", d); err != nil {
			return err
		}
	}
	parent, base, err := nodeParent(pid, d.Path, false)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return err
	}
	defer unix.Close(parent)
	// Only a device node of that number: the tenant may have put
	// something else there since.
	var st unix.Stat_t
	if err := unix.Fstatat(parent, base, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil
		}
		return err
	}
	if isDevice(st, d) {
		if err := unix.Unlinkat(parent, base, 0); err != nil && !errors.Is(err, unix.ENOENT) {
			return err
		}
	}
	return nil
}

// runtimeDefaults are the character devices runc and crun allow every
// container (their default device rules): null, zero, full, random,
// urandom, tty, console, ptmx and tun; minor -1 is any (the pts).
var runtimeDefaults = [][2]int64{{1, 3}, {1, 5}, {1, 7}, {1, 8}, {1, 9}, {5, 0}, {5, 1}, {5, 2}, {10, 200}, {136, -1}}

func runtimeDefault(d specs.LinuxDevice) bool {
	if d.Type == "b" {
		return false
	}
	for _, n := range runtimeDefaults {
		if n[0] == d.Major && (n[1] == -1 || n[1] == d.Minor) {
			return true
		}
	}
	return false
}

func isDevice(st unix.Stat_t, d specs.LinuxDevice) bool {
	kind := st.Mode & unix.S_IFMT
	want := uint32(unix.S_IFCHR)
	if d.Type == "b" {
		want = unix.S_IFBLK
	}
	return kind == want && unix.Major(st.Rdev) == uint32(d.Major) && unix.Minor(st.Rdev) == uint32(d.Minor)
}

// deviceRule writes d's rule into file (devices.allow or devices.deny)
// of the devices cgroup of process pid.
func deviceRule(pid proc, file string, d specs.LinuxDevice) error {
	typ := d.Type
	if typ == "" || typ == "u" {
		typ = "c"
	}
	rule := fmt.Sprintf("%s %d:%d rwm", typ, d.Major, d.Minor)
	return os.WriteFile(filepath.Join(cgroupV1Root, "devices", pid.cgroup, file), []byte(rule), 0)
}

// devicesCgroup is the devices cgroup of process pid, from /proc.
func devicesCgroup(pid int) (string, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) == 3 && slices.Contains(strings.Split(parts[1], ","), "devices") {
			if !strings.HasPrefix(parts[2], "/") || strings.Contains(parts[2], "..") {
				return "", fmt.Errorf("process %d's devices cgroup %q", pid, parts[2])
			}
			return parts[2], nil
		}
	}
	return "", fmt.Errorf("process %d has no devices cgroup (cgroup v1): %w", pid, errdefs.ErrNotImplemented)
}

// openers lists the processes of pid's cgroup with device d open, as
// "pid N (comm)".
func openers(pid proc, d specs.LinuxDevice) []string {
	b, err := os.ReadFile(filepath.Join(cgroupV1Root, "devices", pid.cgroup, "cgroup.procs"))
	if err != nil {
		return nil
	}
	var out []string
	for _, f := range strings.Fields(string(b)) {
		p, err := strconv.Atoi(f)
		if err != nil {
			continue
		}
		fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", p))
		if err != nil {
			continue
		}
		for _, fd := range fds {
			var st unix.Stat_t
			if unix.Stat(fmt.Sprintf("/proc/%d/fd/%s", p, fd.Name()), &st) == nil && isDevice(st, d) {
				comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", p))
				out = append(out, fmt.Sprintf("pid %d (%s)", p, strings.TrimSpace(string(comm))))
				break
			}
		}
	}
	return out
}
