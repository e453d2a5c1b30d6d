package agent

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	cgroups "github.com/containerd/cgroups"
	"github.com/containerd/containerd"
	"github.com/containerd/containerd/containers"
	cerrdefs "github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/oci"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
	"github.com/kanga-run/kanga/internal/agent/image"
	"github.com/kanga-run/kanga/internal/agent/network"
	"github.com/kanga-run/kanga/internal/agent/warm"
	"github.com/kanga-run/kanga/internal/atomicfile"
	"github.com/kanga-run/kanga/internal/model"
)

// Labels on containerd objects tie them to their instance, so that a
// restarted agent can find what it owns and what is orphaned.
const (
	labelUID       = "kanga.dev/uid"
	labelTenant    = "kanga.dev/tenant"
	labelInstance  = "kanga.dev/instance"
	labelContainer = "kanga.dev/container"
)

// DefaultCgroupRoot is the parent of every instance's cgroup, in each v1
// hierarchy (see tenantcg.go for the layout below it). The instance cgroup
// carries the instance-wide limits; each container gets a child of it.
const DefaultCgroupRoot = "/kanga"

// maxContainerID is containerd's limit on identifiers.
const maxContainerID = 76

// containerID is the containerd id of container name of instance uid.
// Kubernetes allows 63-character container names, which with the uid would
// pass containerd's limit; those keep a prefix of the name and a hash of
// all of it, so the id stays a function of (uid, name) that adoption finds
// again.
func containerID(uid, name string) string {
	id := uid + "-" + name
	if len(id) <= maxContainerID {
		return id
	}
	sum := sha256.Sum256([]byte(name))
	suffix := "-" + hex.EncodeToString(sum[:])[:12]
	return id[:maxContainerID-len(suffix)] + suffix
}

// cgName names the cgroup of instance uid: its uid, or the id of the warm
// container it claimed. A warm container's cgroups keep their names: the
// runtime (runc's and crun's state) knows the container by its cgroup
// path, and exec, pause and delete fail once it is renamed.
func (a *Agent) cgName(uid string) string {
	if id := a.netID(uid); strings.HasPrefix(id, warm.Prefix) {
		return id
	}
	return uid
}

// leafName names the cgroup of container name under its instance's:
// "warm" for a claimed warm container.
func (a *Agent) leafName(uid, name string) string {
	if strings.HasPrefix(a.ctrID(uid, name), warm.Prefix) {
		return "warm"
	}
	return name
}

func (a *Agent) sandboxDir(uid string) string {
	return filepath.Join(a.cfg.DataDir, "sandboxes", uid)
}

// netIDFile records which network attachment an instance uses when it is
// not the one named after the instance: a pooled sandbox it was given.
// It lives as long as the sandbox dir, so teardown, stats and a restarted
// agent find the attachment; api.InstanceStatus has no place for it.
//
// It is written without fsync on purpose: a process crash keeps it, and a
// host crash also loses the network namespaces (they live on /run), after
// which the agent's orphan cleanup destroys the unclaimed pool attachment
// and the instance sets up a fresh one under its own id.
func (a *Agent) netIDFile(uid string) string {
	return filepath.Join(a.sandboxDir(uid), "netns-id")
}

// readNetID returns the pooled sandbox id recorded for uid, or "".
func (a *Agent) readNetID(uid string) string {
	b, err := os.ReadFile(a.netIDFile(uid))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

func (a *Agent) writeNetID(uid, id string) error {
	if err := os.MkdirAll(a.sandboxDir(uid), 0o755); err != nil {
		return err
	}
	// Not fsynced: on the start path, and the network it names does not
	// outlive a reboot.
	return atomicfile.WriteNoSync(a.netIDFile(uid), []byte(id+"\n"), 0o644)
}

// netID is the network attachment id of instance uid: its pooled
// sandbox's if it has one, else its own uid.
func (a *Agent) netID(uid string) string {
	if id, ok := a.netIDs.Load(uid); ok {
		return id.(string)
	}
	if id := a.readNetID(uid); id != "" {
		return id
	}
	return uid
}

// poolable tells whether the pool can serve an instance: published ports
// and bandwidth limits are CNI runtime config (portmap, bandwidth) given
// at ADD time, so instances with either set up their own attachment.
func poolable(spec api.InstanceSpec, limits network.Limits) bool {
	return len(spec.Ports) == 0 && limits == (network.Limits{})
}

func (a *Agent) logPath(uid, container string) string {
	return filepath.Join(a.logDir(uid), container+".log")
}

func (a *Agent) removeFiles(uid string) {
	a.forgetLogs(a.logDir(uid))
	_ = os.RemoveAll(a.logDir(uid))
	a.removeSandboxDir(uid)
	_ = os.RemoveAll(a.logFIFODir(uid))
}

// removeSandboxDir removes the sandbox dir of uid, with the tmpfs of its
// secret and config files taken off first (RemoveAll would empty it and
// then fail on the mount point, leaving it mounted).
func (a *Agent) removeSandboxDir(uid string) {
	if err := a.unmountSubPaths(uid); err != nil {
		a.log.Warn("unmounting the sub-path binds failed", "uid", uid, "err", err)
	}
	if err := unmountFiles(a.filesDir(uid)); err != nil {
		a.log.Warn("unmounting the secret and config files failed", "uid", uid, "err", err)
	}
	if err := unmountFiles(a.launchDir(uid)); err != nil {
		a.log.Warn("unmounting the launcher's files failed", "uid", uid, "err", err)
	}
	if err := unmountFiles(a.terminationDir(uid)); err != nil {
		a.log.Warn("unmounting the termination messages failed", "uid", uid, "err", err)
	}
	_ = os.RemoveAll(a.sandboxDir(uid))
}

// applyCgroup creates or updates the instance cgroup in every hierarchy
// Kanga manages. containerd/cgroups does the v1 chores (a new cpuset
// cgroup inherits its parent's cpus and mems before it can hold tasks);
// the limits themselves come from cgroupResources.
func applyCgroup(path string, lr *specs.LinuxResources) error {
	cg, err := cgroups.New(hierarchy, cgroups.StaticPath(path), lr)
	if err != nil {
		return err
	}
	return cg.Update(lr)
}

// hierarchy limits Kanga to the controllers it manages; named
// hierarchies such as name=systemd and the v2 mount are left alone.
func hierarchy() ([]cgroups.Subsystem, error) {
	subs, err := cgroups.V1()
	if err != nil {
		return nil, err
	}
	var out []cgroups.Subsystem
	for _, s := range subs {
		switch s.Name() {
		case cgroups.Cpu, cgroups.Cpuacct, cgroups.Cpuset, cgroups.Memory, cgroups.Pids, cgroups.Blkio, cgroups.Freezer, cgroups.Devices, cgroups.Hugetlb:
			out = append(out, s)
		}
	}
	return out, nil
}

// removeCgroup removes the instance cgroup path, with any child left in it
// (a container's cgroup the runtime did not remove: a claimed warm
// container's, which the runtime knows under its old name), from every
// hierarchy, v2 and named ones included.
func removeCgroup(path string) {
	hs, err := os.ReadDir(cgroupV1Root)
	if err != nil {
		return
	}
	for _, h := range hs {
		top := filepath.Join(cgroupV1Root, h.Name(), path)
		var dirs []string
		_ = filepath.WalkDir(top, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- { // children first
			for try := 0; ; try++ {
				err := unix.Rmdir(dirs[i])
				if err == nil || errors.Is(err, unix.ENOENT) || try == 20 {
					break
				}
				// EBUSY while the kernel finishes with exited tasks.
				time.Sleep(5 * time.Millisecond)
			}
		}
	}
}

// oomKills reads the kernel's count of OOM kills charged to a container:
// cgroup v1 counts a kill in the victim's own memory cgroup, not in its
// parents, so the container's cgroup (alive until its task is deleted) and
// the instance's are summed.
func (a *Agent) oomKills(uid, container string) uint64 {
	cg := a.instanceCgroup(uid)
	return readOOMKills(cg) + readOOMKills(cg+"/"+a.leafName(uid, container))
}

func readOOMKills(cgroup string) uint64 {
	kv, _ := readKeyValues(filepath.Join(cgroupV1Root, "memory", cgroup, "memory.oom_control"))
	return kv["oom_kill"]
}

// hostnameOf is the hostname of inst's containers.
func hostnameOf(inst *api.Instance) string {
	if inst.Spec.Hostname != "" {
		return inst.Spec.Hostname
	}
	return inst.Name
}

// writeHosts writes the /etc/hosts, /etc/hostname and /etc/resolv.conf
// every container of the instance shares, so the instance resolves its own
// name, its host aliases and, through the host's upstream nameservers (or
// its own, spec's dnsConfig), everything else. spec is nil for a warm
// container that no instance has claimed yet.
func writeHosts(dir string, spec *api.InstanceSpec, name, ip string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var b strings.Builder
	b.WriteString("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n")
	if ip != "" {
		b.WriteString(ip + "\t" + name + "\n")
	}
	var dns network.DNSSettings
	if spec != nil {
		if len(spec.HostAliases) > 0 {
			b.WriteString("\n# Entries added by HostAliases.\n")
			for _, a := range spec.HostAliases {
				// Validated by the API: an address and DNS names.
				b.WriteString(a.IP + "\t" + strings.Join(a.Hostnames, "\t") + "\n")
			}
		}
		dns.Replace = spec.DNSPolicy == api.DNSNone
		if c := spec.DNSConfig; c != nil {
			dns.Nameservers, dns.Searches = c.Nameservers, c.Searches
			for _, o := range c.Options {
				if o.Value != nil {
					dns.Options = append(dns.Options, o.Name+":"+*o.Value)
				} else {
					dns.Options = append(dns.Options, o.Name)
				}
			}
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "hosts"), []byte(b.String()), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "hostname"), []byte(name+"\n"), 0o644); err != nil {
		return err
	}
	resolv, err := network.ResolvConfWith(network.HostResolvConf, dns)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "resolv.conf"), resolv, 0o644)
}

// processArgs combines the image's entrypoint and cmd with the spec's
// command and args, with Kubernetes' rules.
func processArgs(entrypoint, cmd []string, spec api.ContainerSpec) []string {
	switch {
	case len(spec.Command) > 0:
		return append(append([]string{}, spec.Command...), spec.Args...)
	case len(spec.Args) > 0:
		return append(append([]string{}, entrypoint...), spec.Args...)
	}
	return append(append([]string{}, entrypoint...), cmd...)
}

// ensureContainer creates the containerd container for c, or loads the
// one a previous agent created.
func (r *runner) ensureContainer(ctx context.Context, inst *api.Instance, netns string, c *ctr) error {
	id := containerID(r.uid, c.spec.Name)
	// An instance still Pending has never had a container on this host,
	// unless an agent died between making one and writing Creating (which
	// is written asynchronously): that case surfaces as "already exists"
	// below and is handled there, so the common case skips a lookup.
	if inst.Status.Phase != api.PhasePending {
		if existing, err := r.a.cfg.Client.LoadContainer(ctx, r.a.ctrID(r.uid, c.spec.Name)); err == nil {
			c.c = existing
			return r.limitExistingLayer(ctx, &inst.Spec, c, existing)
		} else if !cerrdefs.IsNotFound(err) {
			return err
		}
	}
	r.mark("container-lookup")
	class, ok := r.a.cfg.Classes[inst.Spec.Runtime]
	if !ok {
		return fmt.Errorf("runtime class %q is not available on host %s", inst.Spec.Runtime, r.a.cfg.HostName)
	}
	img, err := r.a.cfg.Images.Resolve(ctx, r.tenant, c.spec.Image)
	if err != nil {
		return err
	}
	r.mark("image-resolve")
	opts, err := r.instanceSpecOpts(inst, img, netns, c, r.a.sandboxDir(r.uid))
	if err != nil {
		return err
	}
	diskLimits, err := r.a.withDiskLimits(r.res)
	if err != nil {
		return err
	}
	opts = append(opts, diskLimits)
	opt := class.Options
	// Init containers count: each is a sandbox of its own in the namespace.
	if len(inst.Spec.Containers)+len(inst.Spec.InitContainers) > 1 && class.SharedNetnsOptions != nil {
		opt = class.SharedNetnsOptions
	}
	r.mark("spec-opts")
	newContainer := func() (containerd.Container, error) {
		return r.a.cfg.Client.NewContainer(ctx, id,
			containerd.WithImageName(img.Name),
			r.a.newSnapshot(id, img, inst.Spec.Runtime),
			containerd.WithRuntime(class.Runtime, opt),
			containerd.WithNewSpec(opts...),
			containerd.WithContainerLabels(map[string]string{
				labelUID: r.uid, labelTenant: r.tenant, labelInstance: inst.Name, labelContainer: c.spec.Name,
			}),
			withStopSignal(img),
		)
	}
	ctrd, err := newContainer()
	if cerrdefs.IsAlreadyExists(err) {
		// Made by an agent that died before it recorded Creating.
		if existing, lerr := r.a.cfg.Client.LoadContainer(ctx, id); lerr == nil {
			c.c = existing
			return r.limitExistingLayer(ctx, &inst.Spec, c, existing)
		}
		// Only the snapshot exists: a leftover of a create cut short,
		// which no container uses. Start over with a fresh one.
		r.log.Info("removing a leftover snapshot", "snapshot", id)
		if rerr := r.a.cfg.Client.SnapshotService(img.Snapshotter).Remove(ctx, id); rerr != nil && !cerrdefs.IsNotFound(rerr) {
			return fmt.Errorf("removing leftover snapshot %s: %w", id, rerr)
		}
		ctrd, err = newContainer()
	}
	if err != nil {
		if !cerrdefs.IsAlreadyExists(err) {
			// A spec option that failed (runAsNonRoot) leaves behind the
			// snapshot made before it, which no container owns.
			if rerr := r.a.cfg.Client.SnapshotService(img.Snapshotter).Remove(context.WithoutCancel(ctx), id); rerr != nil && !cerrdefs.IsNotFound(rerr) {
				r.log.Warn("removing the snapshot of a failed create failed", "snapshot", id, "err", rerr)
			}
		}
		return fmt.Errorf("creating container: %w", err)
	}
	if err := r.limitWritableLayer(ctx, &inst.Spec, c, img.Snapshotter, id); err != nil {
		if rerr := r.a.removeContainer(context.WithoutCancel(ctx), ctrd); rerr != nil {
			r.log.Warn("removing the container of a failed start failed", "container", id, "err", rerr)
		}
		return err
	}
	c.c = ctrd
	c.fresh = true
	r.mark("new-container")
	r.event("Normal", "Created", "created container %s from %s (runtime %s)", c.spec.Name, c.spec.Image, inst.Spec.Runtime)
	return nil
}

// withStopSignal records the image's STOPSIGNAL on the container, where
// containerd's GetStopSignal finds it (stop, also after an agent restart),
// from the config the agent already read: no content read on the start
// path.
func withStopSignal(img image.Resolved) containerd.NewContainerOpts {
	return func(_ context.Context, _ *containerd.Client, c *containers.Container) error {
		if img.Config.StopSignal == "" {
			return nil
		}
		if c.Labels == nil {
			c.Labels = map[string]string{}
		}
		c.Labels[containerd.StopSignalLabel] = img.Config.StopSignal
		return nil
	}
}

// baseSpecOpts are the spec options every container of Kanga gets, warm
// or not: the image config (first, see imageSpecs), the network
// namespace, the cgroup and the instance's /etc files from dir.
func (a *Agent) baseSpecOpts(img image.Resolved, netns, cgroup, dir string) []oci.SpecOpts {
	return []oci.SpecOpts{
		a.imageSpecs.withImageConfig(img),
		oci.WithLinuxNamespace(specs.LinuxNamespace{Type: specs.NetworkNamespace, Path: netns}),
		oci.WithCgroup(cgroup),
		oci.WithMounts([]specs.Mount{
			{Destination: "/etc/hosts", Type: "bind", Source: filepath.Join(dir, "hosts"), Options: []string{"rbind", "ro"}},
			{Destination: "/etc/hostname", Type: "bind", Source: filepath.Join(dir, "hostname"), Options: []string{"rbind", "ro"}},
			{Destination: "/etc/resolv.conf", Type: "bind", Source: filepath.Join(dir, "resolv.conf"), Options: []string{"rbind", "ro"}},
		}),
	}
}

// instanceSpecOpts are the spec options of container c of inst, with its
// /etc files in dir; disk limits are added by the caller.
func (r *runner) instanceSpecOpts(inst *api.Instance, img image.Resolved, netns string, c *ctr, dir string) ([]oci.SpecOpts, error) {
	vars, err := r.containerEnv(c)
	if err != nil {
		return nil, err
	}
	launcher := launched(&c.spec)
	if launcher && r.a.initPath == "" {
		return nil, fmt.Errorf("container %s takes env from secrets, which host %s starts through kanga-init, missing there (see the agent's log): %w",
			c.spec.Name, r.a.cfg.HostName, errdefs.ErrUnavailable)
	}
	// Env from the instance's fields (its IP), known only now.
	if model.HasFieldRefs(vars) && r.ip == "" {
		return nil, fmt.Errorf("container %s takes env from the instance's IP, which it has not got yet: %w", c.spec.Name, errdefs.ErrFailedPrecondition)
	}
	spec := c.spec
	vars, spec.Command, spec.Args = model.ResolveFields(&c.spec, vars, model.InstanceFields{PodIP: r.ip})
	args := processArgs(img.Config.Entrypoint, img.Config.Cmd, spec)
	if len(args) == 0 {
		return nil, errors.New("nothing to run: the image has no entrypoint or cmd and the spec gives no command")
	}
	env := make([]string, 0, len(vars)+1)
	env = append(env, "HOSTNAME="+hostnameOf(inst))
	for _, e := range vars {
		env = append(env, e.Name+"="+e.Value)
	}
	opts := r.a.baseSpecOpts(img, netns, r.a.instanceCgroup(r.uid)+"/"+r.a.leafName(r.uid, c.spec.Name), dir)
	var base []string // the image's env, for the launcher's spec
	if launcher {
		opts = append(opts, func(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
			if s.Process != nil {
				base = slices.Clone(s.Process.Env)
			}
			return nil
		})
	}
	opts = append(opts,
		oci.WithProcessArgs(args...),
		oci.WithEnv(env),
		oci.WithHostname(hostnameOf(inst)),
	)
	if mounts := r.withSubPaths(c.spec, r.mountsOf(inst, c.spec)); len(mounts) > 0 {
		opts = append(opts, oci.WithMounts(mounts))
	}
	if ms := terminationMount(r.a.terminationDir(r.uid), &c.spec); len(ms) > 0 {
		opts = append(opts, oci.WithMounts(ms))
	}
	if c.spec.WorkingDir != "" {
		opts = append(opts, oci.WithProcessCwd(c.spec.WorkingDir))
	}
	if r.a.usesUserNS(inst.Spec.Runtime) {
		i := slices.IndexFunc(inst.Spec.Containers, func(s api.ContainerSpec) bool { return s.Name == c.spec.Name })
		if i >= 0 {
			if err := checkUserNSIDs(&inst.Spec, i, r.a.cfg.HostName, inst.Spec.Runtime); err != nil {
				return nil, err
			}
		}
		opts = append(opts, userNSSpecOpts()...)
	}
	opts = append(opts, userSpecOpts(&inst.Spec, &c.spec)...)
	opts = append(opts, sandboxSpecOpts(c.spec.SecurityContext)...)
	if len(r.devices) > 0 {
		opts = append(opts, r.deviceOpts())
	}
	if launcher {
		opts = append(opts, r.launcherOpts(c, &base, "HOSTNAME="+hostnameOf(inst)))
	}
	return opts, nil
}

// withNewSnapshot prepares the container's writable snapshot on top of the
// image's layers, like containerd.WithNewSnapshot but from the resolved
// chain id and with the snapshotter named: WithNewSnapshot reads the
// image's manifest and config again, and asks containerd for the
// namespace's default snapshotter, on every create.
func withNewSnapshot(id string, img image.Resolved) containerd.NewContainerOpts {
	return func(ctx context.Context, client *containerd.Client, c *containers.Container) error {
		if _, err := client.SnapshotService(img.Snapshotter).Prepare(ctx, id, img.ChainID); err != nil {
			return err
		}
		c.Snapshotter = img.Snapshotter
		c.SnapshotKey = id
		return nil
	}
}

// imageSpecs remembers, per image content, what oci.WithImageConfig made
// of a fresh spec's process: environment, arguments, working directory
// and user. The user's additional groups come from the image's
// /etc/group, which WithImageConfig reads by mounting the container's
// snapshot on the host (a mount and unmount on every create); the
// content, and so the result, is fixed by the manifest digest.
type imageSpecs struct {
	m sync.Map // imageSpecKey -> imageProcess
}

type imageSpecKey struct {
	digest      string
	snapshotter string
}

type imageProcess struct {
	env  []string
	args []string
	cwd  string
	user specs.User
}

// withImageConfig applies the image config to a spec as
// oci.WithImageConfig does. It must come first among the spec options:
// what it remembers is WithImageConfig's effect on containerd's default
// spec.
func (s *imageSpecs) withImageConfig(img image.Resolved) oci.SpecOpts {
	key := imageSpecKey{img.Digest.String(), img.Snapshotter}
	return func(ctx context.Context, client oci.Client, c *containers.Container, sp *oci.Spec) error {
		if v, ok := s.m.Load(key); ok && sp.Process != nil {
			p := v.(imageProcess)
			sp.Process.Env = slices.Clone(p.env)
			sp.Process.Args = slices.Clone(p.args)
			sp.Process.Cwd = p.cwd
			sp.Process.User = p.user
			sp.Process.User.AdditionalGids = slices.Clone(p.user.AdditionalGids)
			return nil
		}
		if err := oci.WithImageConfig(img.Image)(ctx, client, c, sp); err != nil {
			return err
		}
		u := sp.Process.User
		u.AdditionalGids = slices.Clone(u.AdditionalGids)
		s.m.Store(key, imageProcess{
			env: slices.Clone(sp.Process.Env), args: slices.Clone(sp.Process.Args),
			cwd: sp.Process.Cwd, user: u,
		})
		return nil
	}
}

// flushConntrack deletes the kernel's connection-tracking entries to and
// from ip (in either direction, NAT included), so that whoever gets the
// address next inherits no NAT or state of this instance. It asks the
// kernel over netlink, in one walk of the table: no conntrack tool (not
// installed by default) and no process per call. Best effort: entries it
// misses expire on their own timeouts.
func flushConntrack(ip string) {
	addr := net.ParseIP(ip)
	if addr == nil {
		return
	}
	family := netlink.InetFamily(unix.AF_INET)
	if addr.To4() == nil {
		family = unix.AF_INET6
	}
	if _, err := netlink.ConntrackDeleteFilter(netlink.ConntrackTable, family, anyIP{addr}); err != nil {
		slog.Debug("flushing conntrack entries failed", "ip", ip, "err", err)
	}
}

// anyIP matches the flows with ip as source or destination in either
// direction: conntrack -D -s, -D -d and the reply side at once.
type anyIP struct{ ip net.IP }

func (f anyIP) MatchConntrackFlow(fl *netlink.ConntrackFlow) bool {
	return f.ip.Equal(fl.Forward.SrcIP) || f.ip.Equal(fl.Forward.DstIP) ||
		f.ip.Equal(fl.Reverse.SrcIP) || f.ip.Equal(fl.Reverse.DstIP)
}
