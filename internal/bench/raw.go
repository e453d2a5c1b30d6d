package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"github.com/containerd/containerd/oci"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// Commander runs a program to completion and returns what it printed.
type Commander interface {
	Run(ctx context.Context, name string, args ...string) ([]byte, error)
}

// Reaper collects the exit status of containers the OCI runtime leaves
// behind: `run --detach` exits and its container's init is re-parented to
// the nearest child subreaper, which Subreap makes this process.
type Reaper interface {
	// Subreap makes this process a child subreaper until restore is called.
	Subreap() (restore func(), err error)
	// Reap waits for pid to exit and collects it, if it is our child.
	Reap(pid int)
}

// RawStarter starts containers with an OCI runtime binary (runc, crun,
// runsc) called directly on a prepared bundle: the floor under any
// platform's start latency on this host.
type RawStarter struct {
	// Runtime is the class name, for the report.
	Runtime string
	// Binary is the OCI runtime's path.
	Binary string
	// Rootfs fills dir with the image's root filesystem, once, and returns
	// the spec options the image implies (oci.WithImageConfig).
	Rootfs func(ctx context.Context, dir string) ([]oci.SpecOpts, error)
	// Args is the container's process.
	Args []string
	// TempDir is where the work directory is made; "" means os.TempDir().
	TempDir string
	// Exec and Reaper default to the real ones when nil.
	Exec   Commander
	Reaper Reaper

	work    string
	spec    *specs.Spec
	restore func()
}

var _ Starter = (*RawStarter)(nil)

// Path is "raw <runtime>".
func (r *RawStarter) Path() string { return "raw " + r.Runtime }

func (r *RawStarter) stateRoot() string        { return filepath.Join(r.work, "state") }
func (r *RawStarter) bundle(id string) string  { return filepath.Join(r.work, "bundles", id) }
func (r *RawStarter) pidFile(id string) string { return filepath.Join(r.work, "pids", id) }

// Prepare unpacks the rootfs and builds the spec once; each start then
// only writes a small config.json pointing at the shared read-only rootfs.
func (r *RawStarter) Prepare(ctx context.Context) error {
	if r.Exec == nil {
		r.Exec = ExecCommander{}
	}
	if r.Reaper == nil {
		r.Reaper = &ProcReaper{}
	}
	work, err := os.MkdirTemp(r.TempDir, "kanga-bench-raw-")
	if err != nil {
		return err
	}
	r.work = work
	for _, d := range []string{"state", "bundles", "pids"} {
		if err := os.MkdirAll(filepath.Join(work, d), 0o700); err != nil {
			return err
		}
	}
	rootfs := filepath.Join(work, "rootfs")
	opts, err := r.Rootfs(ctx, rootfs)
	if err != nil {
		return fmt.Errorf("preparing the rootfs: %w", err)
	}
	if err := makeMountPoints(rootfs); err != nil {
		return err
	}
	if r.spec, err = BundleSpec(ctx, rootfs, r.Args, opts...); err != nil {
		return err
	}
	if r.restore, err = r.Reaper.Subreap(); err != nil {
		return fmt.Errorf("becoming a child subreaper: %w", err)
	}
	return nil
}

// Start writes the container's config (untimed) and times `run --detach`,
// which returns once the container's process runs.
func (r *RawStarter) Start(ctx context.Context, id string) (Sample, error) {
	if err := WriteBundle(r.bundle(id), r.spec, id); err != nil {
		return Sample{}, err
	}
	t0 := time.Now()
	if _, err := r.Exec.Run(ctx, r.Binary, "--root", r.stateRoot(), "run", "--detach",
		"--pid-file", r.pidFile(id), "--bundle", r.bundle(id), id); err != nil {
		return Sample{}, err
	}
	return Sample{Total: time.Since(t0)}, nil
}

// Remove kills the container, reaps its process and deletes it. A
// container the runtime does not know is only stripped of its bundle.
func (r *RawStarter) Remove(ctx context.Context, id string) error {
	defer os.RemoveAll(r.bundle(id))
	defer os.Remove(r.pidFile(id))
	if _, err := r.Exec.Run(ctx, r.Binary, "--root", r.stateRoot(), "state", id); err != nil {
		// Most likely never created (a start that failed early); delete
		// anyway in case state failed for another reason, and ignore the
		// runtime's "does not exist".
		_, _ = r.Exec.Run(ctx, r.Binary, "--root", r.stateRoot(), "delete", "--force", id)
		return nil
	}
	_, _ = r.Exec.Run(ctx, r.Binary, "--root", r.stateRoot(), "kill", id, "KILL")
	if pid := readPid(r.pidFile(id)); pid > 0 {
		r.Reaper.Reap(pid)
	}
	if _, err := r.Exec.Run(ctx, r.Binary, "--root", r.stateRoot(), "delete", "--force", id); err != nil {
		return err
	}
	return nil
}

// Close stops subreaping, removes the cgroup parent the runtime leaves and
// the work directory.
func (r *RawStarter) Close(context.Context) error {
	if r.restore != nil {
		r.restore()
		r.restore = nil
	}
	removeCgroupParent(benchCgroupParent)
	if r.work == "" {
		return nil
	}
	err := removeWorkDir(r.work)
	r.work = ""
	return err
}

func readPid(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0
	}
	return pid
}

// removeCgroupParent removes parent (and any empty child) from every
// mounted cgroup hierarchy, v1 and v2. Non-empty cgroups stay: rmdir
// refuses them, which is what we want.
func removeCgroupParent(parent string) {
	mounts, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return
	}
	for _, line := range strings.Split(string(mounts), "\n") {
		pre, post, ok := strings.Cut(line, " - ")
		if !ok {
			continue
		}
		fs := strings.Fields(post)
		f := strings.Fields(pre)
		if len(fs) == 0 || len(f) < 5 || (fs[0] != "cgroup" && fs[0] != "cgroup2") {
			continue
		}
		dir := filepath.Join(f[4], parent)
		children, _ := filepath.Glob(filepath.Join(dir, "*"))
		for _, c := range children {
			if fi, err := os.Stat(c); err == nil && fi.IsDir() {
				_ = unix.Rmdir(c)
			}
		}
		_ = unix.Rmdir(dir)
	}
}

// ExecCommander runs programs with os/exec. Output goes to a temporary
// file, not a pipe: a detached container inherits the runtime's stdio, and
// a pipe it holds open would keep Run waiting for EOF until it exits.
type ExecCommander struct{}

// Run runs name with args and returns its combined output; on failure the
// error includes the output, where runtimes say why.
func (ExecCommander) Run(ctx context.Context, name string, args ...string) ([]byte, error) {
	f, err := os.CreateTemp("", "kanga-bench-out-")
	if err != nil {
		return nil, err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdout, cmd.Stderr = f, f
	runErr := cmd.Run()
	out, err := os.ReadFile(f.Name())
	if err != nil {
		return nil, err
	}
	if runErr != nil {
		return out, fmt.Errorf("%s %s: %w: %s", filepath.Base(name), strings.Join(args, " "), runErr, bytes.TrimSpace(out))
	}
	return out, nil
}

// ProcReaper is the Reaper of this process, with prctl and wait4.
type ProcReaper struct{}

// reapTimeout bounds the wait for a killed container's process.
const reapTimeout = 10 * time.Second

// Subreap sets PR_SET_CHILD_SUBREAPER and returns a func restoring the
// previous setting. Without it the container's init would be re-parented
// to PID 1, which may never reap it (a zombie that runtimes then wait on).
func (ProcReaper) Subreap() (func(), error) {
	var prev int32
	if _, _, errno := unix.Syscall(unix.SYS_PRCTL, unix.PR_GET_CHILD_SUBREAPER, uintptr(unsafe.Pointer(&prev)), 0); errno != 0 {
		return nil, errno
	}
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return nil, err
	}
	return func() {
		reapZombieChildren()
		_ = unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, uintptr(prev), 0, 0, 0)
	}, nil
}

// reapZombieChildren collects every child of this process that has already
// exited. Runtimes leave some behind: crun's `run --detach` orphans an
// intermediate process per container, which then reaches us. It must run
// only when no os/exec command of ours is in flight: an exited command is
// a zombie child too until its Wait collects it.
func reapZombieChildren() {
	self := os.Getpid()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// "pid (comm) state ppid ...": comm may hold spaces and parens,
		// so parse after the last ')'.
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 2 || f[0] != "Z" {
			continue
		}
		if ppid, err := strconv.Atoi(f[1]); err != nil || ppid != self {
			continue
		}
		var ws unix.WaitStatus
		_, _ = unix.Wait4(pid, &ws, unix.WNOHANG, nil)
	}
}

// Reap polls wait4 for pid without blocking forever: a pid that is not our
// child (ECHILD) or does not exit in time is left alone.
func (ProcReaper) Reap(pid int) {
	deadline := time.Now().Add(reapTimeout)
	for {
		var ws unix.WaitStatus
		got, err := unix.Wait4(pid, &ws, unix.WNOHANG, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || got == pid || time.Now().After(deadline) {
			return
		}
		time.Sleep(2 * time.Millisecond)
	}
}
