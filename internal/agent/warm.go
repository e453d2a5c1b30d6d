package agent

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/containers"
	"github.com/containerd/containerd/oci"
	"github.com/containerd/typeurl/v2"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/internal/agent/fill"
	"github.com/kanga-run/kanga/internal/agent/image"
	"github.com/kanga-run/kanga/internal/agent/network"
	"github.com/kanga-run/kanga/internal/agent/threadns"
	"github.com/kanga-run/kanga/internal/agent/warm"
	"github.com/kanga-run/kanga/internal/agent/warm/holder"
	"github.com/kanga-run/kanga/internal/model"
	"github.com/kanga-run/kanga/internal/tenant"
)

// Warm containers: containers created AND started ahead of demand, whose
// init process is the holder (cmd/kanga-init, see package holder). The
// runtime has made the namespaces, cgroups, mounts and root filesystem;
// claiming one for an instance moves its sandbox dir (the /etc files are
// bind mounts of its inodes, rewritten in place) and log file to the
// instance's, applies the instance's limits to the warm cgroup's parent,
// sets the hostname, and hands the holder the instance's process, which
// it execs. The containerd container and its cgroups keep their warm id
// (recorded in the sandbox dir, see ctrID and cgName): runc and crun find
// a container by the cgroup path in their state, so a renamed cgroup
// breaks exec and kill. The container is updated to the instance's real
// spec and labels right after Running is published, so that a restart
// runs the instance's process directly.
//
// What the user sees of it: /.kanga holds the holder binary (init), read
// only, like docker-init (until the first restart, whose spec has no such
// mount: an empty /.kanga mount point stays in the writable layer); the
// ack FIFO is unlinked once the process runs. /proc/self/cgroup shows the
// warm id (random, no tenant data).
//
// Capabilities: the holder runs as root with the spec's default set and
// changes none; execve then applies the kernel's rules exactly as when
// runc or crun exec the process themselves: root keeps the bounding set
// as permitted and effective, a non-root user (after the holder's
// setuid) ends with none, as the spec sets no ambient capabilities.

// labelWarm marks a warm container until its claim is complete; its value
// is the warm id. A container with it and no labelUID is either ready
// (owned by the warm pool) or claimed by an instance that recorded it.
const labelWarm = "kanga.dev/warm"

// warmClasses are the runtime classes warm containers are made for: the
// runc shim with runc or crun. gVisor's sandbox takes the namespace's
// addresses and starts its own kernel; it is not held warm.
var warmClasses = map[string]bool{"runc": true, "crun": true}

// WarmOptions turns warm containers on.
type WarmOptions struct {
	// InitPath is the holder binary (bin/kanga-init), also the launcher
	// of containers with env from secrets (launch.go).
	InitPath string
	Policy   fill.Policy // per key; see warm.Pool
	Total    int
}

// warmCtr is a ready warm container.
type warmCtr struct {
	id    string
	key   warm.Key
	img   image.Resolved
	att   *network.Attachment
	c     containerd.Container
	task  containerd.Task
	stdin *os.File // the agent's end of the holder's stdin FIFO
	ack   *os.File // read-write end of the ack FIFO, held until the claim
	ackRd *os.File // read-only end, opened once the holder is a writer
	held  bool     // holds its tenant's cgroup (holdTenant)
}

func (a *Agent) ctrRecord(uid, name string) string {
	return filepath.Join(a.sandboxDir(uid), "ctr-"+name)
}

// ctrID is the containerd container id of container name of instance uid:
// the warm container it claimed, if it did, else containerID.
func (a *Agent) ctrID(uid, name string) string {
	if b, err := os.ReadFile(a.ctrRecord(uid, name)); err == nil {
		if id := strings.TrimSpace(string(b)); id != "" {
			return id
		}
	}
	return containerID(uid, name)
}

// findInit finds the holder binary: path if set, else kanga-init next to
// the running executable.
func findInit(path string) (string, error) {
	if path == "" {
		exe, err := os.Executable()
		if err != nil {
			return "", err
		}
		path = filepath.Join(filepath.Dir(exe), "kanga-init")
	}
	fi, err := os.Stat(path)
	if err != nil {
		return "", err
	}
	if !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
		return "", fmt.Errorf("%s is not an executable file", path)
	}
	return path, nil
}

func newWarmID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return warm.Prefix + hex.EncodeToString(b)
}

// warmMaker makes the agent's warm containers for its warm.Pool.
type warmMaker struct{ a *Agent }

func (m warmMaker) Make(ctx context.Context, key warm.Key) (any, error) {
	w, err := m.a.makeWarm(ctx, key)
	if err != nil {
		return nil, err // not a typed nil in an interface
	}
	return w, nil
}
func (m warmMaker) Destroy(ctx context.Context, w any) { m.a.destroyWarm(ctx, w.(*warmCtr)) }

// makeWarm creates and starts a warm container for key and waits until
// its holder reports ready.
func (a *Agent) makeWarm(ctx context.Context, key warm.Key) (*warmCtr, error) {
	class, ok := a.cfg.Classes[key.Class]
	if !ok || !warmClasses[key.Class] {
		return nil, fmt.Errorf("runtime class %q is not held warm", key.Class)
	}
	w := &warmCtr{id: newWarmID(), key: key}
	done := false
	defer func() {
		if !done {
			a.destroyWarm(context.WithoutCancel(ctx), w)
		}
	}()
	nctx := tenant.WithName(a.ns(ctx), key.Tenant)
	img, err := a.cfg.Images.Warm(nctx, key.Tenant, key.Image) // not a start: keeps the image's start count honest
	if err != nil {
		return nil, err
	}
	w.img = img
	if w.att, err = a.cfg.Network.Setup(ctx, w.id, nil, network.Limits{}); err != nil {
		return nil, fmt.Errorf("network: %w", err)
	}
	if err := setNetnsSysctls(w.att.NetNS); err != nil {
		return nil, fmt.Errorf("network: %w", err)
	}
	dir := a.sandboxDir(w.id)
	if err := writeHosts(dir, nil, "localhost", ""); err != nil {
		return nil, err
	}
	kdir := filepath.Join(dir, "kanga")
	if err := os.MkdirAll(kdir, 0o755); err != nil {
		return nil, err
	}
	// The mount point of the holder binary, under the read-only /.kanga.
	if err := os.WriteFile(filepath.Join(kdir, "init"), nil, 0o755); err != nil {
		return nil, err
	}
	ackPath, stdinPath := filepath.Join(kdir, "ack"), filepath.Join(dir, "stdin")
	for _, p := range []string{ackPath, stdinPath} {
		if err := unix.Mkfifo(p, 0o600); err != nil {
			return nil, fmt.Errorf("mkfifo %s: %w", p, err)
		}
	}
	if a.usesUserNS(key.Class) {
		// The holder writes it as the container's root, a host id of the
		// user namespace's range.
		if err := os.Chown(ackPath, UserNSBase, UserNSBase); err != nil {
			return nil, err
		}
	}
	// Read-write: neither open blocks, and the holder never sees the end
	// of its stdin (nor the agent the end of ack) before the claim.
	if w.ack, err = os.OpenFile(ackPath, os.O_RDWR, 0); err != nil {
		return nil, err
	}
	if w.stdin, err = os.OpenFile(stdinPath, os.O_RDWR, 0); err != nil {
		return nil, err
	}
	// Under the tenant's cgroup from the start: the warm container keeps
	// its cgroup when an instance claims it. The hold ends with
	// destroyWarm, or with the claim (the instance's runner holds it then).
	a.holdTenant(key.Tenant)
	w.held = true
	if _, err := a.applyTenantCgroup(ctx, key.Tenant); err != nil {
		a.log.Warn("the tenant's cgroup is not capped", "tenant", key.Tenant, "err", err)
	}
	opts := a.baseSpecOpts(img, w.att.NetNS, a.tenantCgroup(key.Tenant)+"/"+w.id+"/warm", dir)
	opts = append(opts,
		oci.WithProcessArgs(holder.Path),
		oci.WithHostname("localhost"),
		// The holder runs as root to take the instance's user itself.
		func(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
			s.Process.User = specs.User{UID: 0, GID: 0}
			s.Process.Cwd = "/"
			return nil
		},
		oci.WithMounts([]specs.Mount{
			{Destination: holder.Dir, Type: "bind", Source: kdir, Options: []string{"rbind", "ro"}},
			{Destination: holder.Path, Type: "bind", Source: a.initPath, Options: []string{"bind", "ro"}},
		}),
	)
	// The default sandbox: the holder and what it execs keep it (seccomp
	// and no_new_privs survive execve; the capability sets follow the
	// kernel's rules, see above), so only instances asking for the default
	// are given a warm container (takeWarm).
	if a.usesUserNS(key.Class) {
		opts = append(opts, userNSSpecOpts()...)
	}
	opts = append(opts, sandboxSpecOpts(nil)...)
	c, err := a.cfg.Client.NewContainer(nctx, w.id,
		containerd.WithImageName(img.Name),
		a.newSnapshot(w.id, img, key.Class),
		containerd.WithRuntime(class.Runtime, class.Options),
		containerd.WithNewSpec(opts...),
		containerd.WithContainerLabels(map[string]string{labelWarm: w.id, labelTenant: key.Tenant}),
		withStopSignal(img),
	)
	if err != nil {
		// A snapshot of a failed create is not tied to a container.
		_ = a.cfg.Client.SnapshotService(img.Snapshotter).Remove(context.WithoutCancel(nctx), w.id)
		return nil, fmt.Errorf("creating container: %w", err)
	}
	w.c = c
	// The holder's output (none, normally) and then the instance's go to
	// the warm log, which the claim moves to the instance's name.
	lw := a.logWriterFor(a.logPath(w.id, "warm"), logLimitsOf(model.Resources{}))
	logs, created := a.logCreator(w.id, "warm", lw, stdinPath)
	task, err := c.NewTask(nctx, logs)
	created()
	if err != nil {
		return nil, fmt.Errorf("creating task: %w", err)
	}
	w.task = task
	if err := resetNice(task.Pid()); err != nil {
		a.log.Warn("the warm container keeps the daemon's CPU priority", "id", w.id, "err", err)
	}
	if err := task.Start(nctx); err != nil {
		return nil, fmt.Errorf("starting task: %w", err)
	}
	_ = w.ack.SetReadDeadline(time.Now().Add(30 * time.Second))
	b := make([]byte, 1)
	if _, err := io.ReadFull(w.ack, b); err != nil || b[0] != holder.Ready {
		return nil, fmt.Errorf("the holder did not report ready (%q): %v", b, err)
	}
	_ = w.ack.SetReadDeadline(time.Time{})
	// A second, read-only end while the holder is a writer: at the claim
	// the read-write one closes, the holder's end is then the only writer,
	// and its execve the end of file.
	if w.ackRd, err = os.OpenFile(ackPath, os.O_RDONLY|syscall.O_NONBLOCK, 0); err != nil {
		return nil, err
	}
	done = true
	return w, nil
}

// destroyWarm removes a warm container that was never claimed (or whose
// claim failed), with everything made for it.
func (a *Agent) destroyWarm(ctx context.Context, w *warmCtr) {
	nctx := tenant.WithName(a.ns(ctx), w.key.Tenant)
	if w.stdin != nil {
		w.stdin.Close()
	}
	if w.ack != nil {
		w.ack.Close()
	}
	if w.ackRd != nil {
		w.ackRd.Close()
	}
	if w.c != nil {
		if err := a.removeContainer(nctx, w.c); err != nil {
			a.log.Warn("removing a warm container failed", "id", w.id, "err", err)
		}
	}
	if err := a.cfg.Network.Teardown(ctx, w.id, nil); err != nil {
		a.log.Warn("removing a warm container's network failed", "id", w.id, "err", err)
	}
	removeCgroup(a.tenantCgroup(w.key.Tenant) + "/" + w.id)
	a.removeFiles(w.id)
	if w.held {
		w.held = false
		a.releaseTenant(ctx, w.key.Tenant)
	}
}

// takeWarm hands the runner a warm container for inst, if inst is one a
// warm container can serve and one is ready.
func (r *runner) takeWarm(ctx context.Context, inst *api.Instance) *warmCtr {
	if r.a.warm == nil || inst.Status.Phase != api.PhasePending || len(inst.Spec.Containers) != 1 || !warmClasses[inst.Spec.Runtime] ||
		len(inst.PersistentVolumes) > 0 { // a running container takes no new mounts
		return nil
	}
	// A warm container runs its process as soon as it is claimed: init
	// containers would have to run before it, in the sandbox the claim
	// brings, so an instance with them starts the usual way.
	if len(inst.Spec.InitContainers) > 0 {
		return nil
	}
	// A warm container has the default sandbox, and its mounts, fixed
	// when it started: an instance with volumes starts the usual way.
	if !model.DefaultSecurity(inst.Spec.Containers[0].SecurityContext) || len(inst.Spec.Volumes) > 0 {
		return nil
	}
	if _, ok := r.a.cfg.Classes[inst.Spec.Runtime]; !ok {
		return nil
	}
	if !poolable(inst.Spec, netLimits(r.res)) || hasDiskLimits(r.res) || hasStorage(inst.Spec) {
		return nil
	}
	// A warm container was made without the bind of a termination
	// message file, and mounts are fixed at creation.
	if len(terminationContainers(&inst.Spec)) > 0 {
		return nil
	}
	// Device nodes and their cgroup rules are fixed at creation too.
	if len(inst.Spec.Devices) > 0 {
		return nil
	}
	// Dedicated cores would narrow the instance's cpuset below that of the
	// warm leaf cgroup, which cgroup v1 refuses: they start the usual way.
	if r.res.DedicatedCores > 0 {
		return nil
	}
	if r.a.readNetID(r.uid) != "" {
		return nil
	}
	img, err := r.a.cfg.Images.Resolve(ctx, r.tenant, inst.Spec.Containers[0].Image)
	if err != nil {
		return nil // the usual path reports it
	}
	v, ok := r.a.warm.Take(warm.Key{Tenant: r.tenant, Image: img.Name, Class: inst.Spec.Runtime})
	countTake(warmTakes, ok)
	if !ok {
		return nil
	}
	w := v.(*warmCtr)
	if w.img.Digest != img.Digest {
		// The name points at another image now: this one serves nobody.
		go r.a.destroyWarm(context.WithoutCancel(ctx), w)
		return nil
	}
	w.img = img
	return w
}

// claimWarm makes warm container w the instance's container c and runs
// the instance's process in it. On error the warm container is destroyed
// and everything moved to the instance undone, so the caller can start
// the usual way.
func (r *runner) claimWarm(ctx context.Context, inst *api.Instance, c *ctr, w *warmCtr) (err error) {
	nctx := r.tctx(ctx)
	name := c.spec.Name
	defer func() {
		if err != nil {
			r.undoClaim(ctx, w)
		}
	}()
	img := w.img
	dir := r.a.sandboxDir(r.uid)
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return err
	}
	if err := os.Rename(r.a.sandboxDir(w.id), dir); err != nil {
		return err
	}
	// The records first: from here on the instance's teardown (or the
	// orphan cleanup of a restarted agent) finds the warm container, its
	// network and its cgroups as the instance's.
	if err := r.a.writeNetID(r.uid, w.id); err != nil {
		return err
	}
	if err := os.WriteFile(r.a.ctrRecord(r.uid, name), []byte(w.id+"\n"), 0o644); err != nil {
		return err
	}
	r.a.netIDs.Store(r.uid, w.id)
	// The holder has run in the sandbox since it was made, with no tenant
	// and so no network; the instance's process gets the tenant's.
	if err := r.a.cfg.Network.Assign(ctx, w.id, r.tenant); err != nil {
		return fmt.Errorf("applying the tenant's network rules: %w", err)
	}
	// The warm container's cgroups keep their names (see cgName); the
	// instance's limits go on its parent, as on any instance cgroup.
	if err := r.a.createCgroup(ctx, r.tenant, r.uid, r.res); err != nil {
		return fmt.Errorf("limiting the instance cgroup: %w", err)
	}
	r.mark("cgroup")
	// In place: the container's /etc files are bind mounts of these inodes.
	if err := writeHosts(dir, &inst.Spec, hostnameOf(inst), w.att.IP); err != nil {
		return err
	}
	// The agent's copier goes on writing the task's output there, under
	// the instance's log caps.
	if err := r.a.moveLog(r.a.logPath(w.id, "warm"), r.a.logPath(r.uid, name), logLimitsOf(r.res)); err != nil {
		return err
	}
	_ = os.Remove(r.a.logDir(w.id))
	r.mark("files")
	if err := setHostname(w.task.Pid(), hostnameOf(inst)); err != nil {
		return fmt.Errorf("setting the hostname: %w", err)
	}
	r.mark("hostname")
	// Env from secrets, from the control plane, as the files step gets it.
	if err := r.ensureSecretEnv(ctx, inst); err != nil {
		return err
	}
	spec, err := r.realSpec(nctx, inst, img, w, c)
	if err != nil {
		return err
	}
	r.mark("spec")
	statusC, err := w.task.Wait(nctx)
	if err != nil {
		return err
	}
	r.mark("task-wait")
	if err := handOver(w, launchProcess(c, spec.Process)); err != nil {
		return err
	}
	r.mark("exec")
	// Nothing in /.kanga but the holder binary from now on.
	_ = os.Remove(filepath.Join(dir, "kanga", "ack"))
	r.ip, r.att = w.att.IP, w.att
	c.c, c.task = w.c, w.task
	c.generation++
	c.oomKills = r.a.oomKills(r.uid, name)
	go r.waitTask(ctx, name, c.generation, w.task, statusC)
	now := time.Now().UTC()
	c.status.State = api.ContainerRunning
	c.postStartDue = hook(c, postStart) != nil
	c.status.Reason = ""
	c.status.ExitCode = nil
	c.status.StartedAt = &now
	c.status.FinishedAt = nil
	c.status.PID = int(w.task.Pid())
	c.warmSpec = spec
	if w.held {
		// The instance's runner holds the tenant's cgroup from now on.
		w.held = false
		go r.a.releaseTenant(context.WithoutCancel(ctx), w.key.Tenant)
	}
	r.event("Normal", "Started", "started container %s in a warm container (runtime %s)", name, inst.Spec.Runtime)
	return nil
}

// handOver gives the holder the process and waits until it has exec'd it
// (or failed to).
func handOver(w *warmCtr, p holder.Process) error {
	b, err := json.Marshal(p)
	if err != nil {
		return err
	}
	rd := w.ackRd
	w.ack.Close()
	w.ack = nil
	// One JSON value: the holder decodes it without waiting for the end of
	// its stdin (see package holder); finishClaim closes it in the shim.
	if _, err := w.stdin.Write(b); err != nil {
		return fmt.Errorf("handing over the process: %w", err)
	}
	w.stdin.Close()
	w.stdin = nil
	_ = rd.SetReadDeadline(time.Now().Add(30 * time.Second))
	out, err := io.ReadAll(rd)
	rd.Close()
	w.ackRd = nil
	if err != nil {
		return fmt.Errorf("waiting for the holder: %w", err)
	}
	switch {
	case bytes.Equal(out, []byte{holder.Exec}):
		return nil
	case len(out) == 0:
		return errors.New("the warm container's holder is gone")
	default:
		msg := strings.TrimLeft(string(out), string([]byte{holder.Exec}))
		return fmt.Errorf("starting the process: %s", msg)
	}
}

// realSpec is the spec the instance's container would have had, had it
// been created for it: what the holder execs, and what a restart runs.
func (r *runner) realSpec(ctx context.Context, inst *api.Instance, img image.Resolved, w *warmCtr, c *ctr) (*oci.Spec, error) {
	opts, err := r.instanceSpecOpts(inst, img, w.att.NetNS, c, r.a.sandboxDir(r.uid))
	if err != nil {
		return nil, err
	}
	cc := &containers.Container{ID: w.id, Snapshotter: img.Snapshotter, SnapshotKey: w.id}
	return oci.GenerateSpec(ctx, r.a.cfg.Client, cc, opts...)
}

// finishClaim records the real spec and the instance's labels on a
// claimed warm container. It runs after the instance is published as
// running; until it has, the container says it is warm, and startTask
// calls it again before any new task.
func (r *runner) finishClaim(ctx context.Context, inst *api.Instance, c *ctr) error {
	spec := c.warmSpec
	if c.task != nil {
		// The shim's own write end of the holder's stdin FIFO.
		if err := c.task.CloseIO(ctx, containerd.WithStdinCloser); err != nil {
			r.log.Debug("closing the warm container's stdin failed", "err", err)
		}
	}
	if spec == nil {
		var err error
		if spec, err = r.generateSpec(ctx, inst, c); err != nil {
			return err
		}
	}
	err := c.c.Update(ctx, func(_ context.Context, _ *containerd.Client, cc *containers.Container) error {
		any, err := typeurl.MarshalAny(spec)
		if err != nil {
			return err
		}
		cc.Spec = any
		cc.Labels = map[string]string{labelUID: r.uid, labelTenant: r.tenant, labelInstance: inst.Name, labelContainer: c.spec.Name}
		return nil
	})
	if err == nil {
		c.warmSpec = nil
	}
	return err
}

// undoClaim destroys a warm container whose claim failed, wherever the
// claim had moved its parts.
func (r *runner) undoClaim(ctx context.Context, w *warmCtr) {
	ctx = context.WithoutCancel(ctx)
	r.a.destroyWarm(ctx, w)
	r.a.netIDs.Delete(r.uid)
	r.a.removeFiles(r.uid)
}

// setHostname sets the UTS hostname of the container whose init is pid,
// from a thread that joins its UTS namespace and then returns to the
// agent's.
func setHostname(pid uint32, name string) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		errc <- threadns.Join(fmt.Sprintf("/proc/%d/ns/uts", pid), unix.CLONE_NEWUTS, func() error {
			return unix.Sethostname([]byte(name))
		})
	}()
	return <-errc
}

// isWarmLabelled tells whether a container's labels still say warm.
func isWarmLabelled(labels map[string]string) bool {
	return labels[labelWarm] != "" && labels[labelUID] == ""
}

// holderRunning tells whether task, of a container still labelled warm, is
// the holder waiting for a process that will never come: the shim keeps
// the holder's stdin open, so it would wait forever.
func (a *Agent) holderRunning(ctx context.Context, c containerd.Container, task containerd.Task) bool {
	labels, err := c.Labels(ctx)
	if err != nil || !isWarmLabelled(labels) {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", task.Pid()))
	return err == nil && strings.TrimRight(string(b), "\x00") == holder.Path
}
