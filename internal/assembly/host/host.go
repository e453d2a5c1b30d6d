// Package host assembles a host: a containerd the host starts and
// supervises under its data dir, the instance network with its pool of
// ready sandboxes, warm containers and the agent that runs what the control
// plane places here. `kanga agent` runs one joined to a server over the
// agents' link (package daemon), and so does `kanga up`, to the control
// plane in its own process (package allinone). Both take the same
// Options, from the same flags.
package host

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/kanga-run/kanga/internal/agent"
	"github.com/kanga-run/kanga/internal/agent/containerdrt"
	"github.com/kanga-run/kanga/internal/agent/device"
	"github.com/kanga-run/kanga/internal/agent/fill"
	"github.com/kanga-run/kanga/internal/agent/image"
	"github.com/kanga-run/kanga/internal/agent/network"
	"github.com/kanga-run/kanga/internal/agent/pool"
	"github.com/kanga-run/kanga/internal/hostcontract"
	"github.com/kanga-run/kanga/internal/model"
)

// Options are a host's settings: what `kanga up` and `kanga agent` share,
// one flag each.
type Options struct {
	// HostName names the host (default: the hostname; see Name).
	HostName string
	Bridge   string
	Subnet   string
	// InsecureRegistries are the registries pulls may reach on loopback,
	// link-local, private or the host's own addresses (see
	// image.ParseInsecureRegistries); none by default.
	InsecureRegistries []string
	// Isolation keeps tenants apart on the host's network (see
	// network.Config.Isolation).
	Isolation bool
	// Pool sizes the warm pool of network sandboxes; Max 0 turns it off.
	Pool fill.Policy
	// Warm sizes the warm containers per (tenant, image, runtime class);
	// Max 0 turns them off. WarmTotal caps them across keys.
	Warm      fill.Policy
	WarmTotal int
	// CgroupRoot is the parent of the agent's cgroups (default /kanga);
	// agents sharing a machine need one each.
	CgroupRoot string
	// Ports and Security are the host's guards on published ports and
	// containers' sandboxes (see agent.Config); the composition adds the
	// platform's own ports to Ports' reserved ones.
	Ports    model.PortPolicy
	Security model.SecurityBounds
	// UserNS runs crun containers in a user namespace.
	UserNS bool
	// StartSlots bounds the instance starts run at once (0: twice the
	// host's cores; see agent.Config.StartSlots); the host reports it to
	// the control plane.
	StartSlots int
	// RootCPUShares weights the instances against Kanga's own threads
	// (agent.Config.RootCPUShares).
	RootCPUShares int
	// CDISpecDirs are where the host's CDI device specs are read from
	// (device.DefaultSpecDirs when empty).
	CDISpecDirs []string
}

// Check validates what can be checked before anything is started, naming
// the flags.
func (o Options) Check() error {
	if _, err := image.ParseInsecureRegistries(o.InsecureRegistries); err != nil {
		return err
	}
	if r := o.CgroupRoot; r != "" && (!filepath.IsAbs(r) || filepath.Clean(r) != r || r == "/") {
		return fmt.Errorf("--cgroup-root %q must be a clean absolute path below /, such as /kanga", r)
	}
	return nil
}

// Name is the host's name: HostName, or the machine's hostname.
func (o Options) Name() string {
	if o.HostName != "" {
		return o.HostName
	}
	n, _ := os.Hostname()
	return n
}

// Config is a host's Options and what the composition wires into it.
type Config struct {
	Options
	DataDir string // absolute
	// Store is where the agent reads and writes instances: the store
	// itself (kanga up) or the agent's link to the server (kanga agent).
	Store agent.Store
	// Usage takes the host's usage records: the store, or the link.
	Usage agent.UsageSink
	// Files answers the files of the instances' secret and config volumes
	// and their env from secrets: the store's host view, or the link.
	Files agent.FileSource
	// NetView feeds the network isolation the rest of the platform
	// (netview.View.Subscribe, or the agent link's stream).
	NetView func(ctx context.Context) <-chan hostcontract.NetUpdate
	Logger  *slog.Logger
}

// Host is a running host: a supervised containerd, the instance network
// and an agent running in the background.
type Host struct {
	Agent  *agent.Agent
	Images *image.Service

	ctx       context.Context // the caller's, for the detached shutdown
	actx      context.Context
	stopAgent context.CancelFunc
	agentDone chan error
	ctrd      *containerdrt.Daemon
	netw      *network.Manager
	log       *slog.Logger
}

// Start starts containerd under DataDir/containerd, prepares the
// instance network (and the warm pool) and runs an agent. The agent runs
// on a context detached from ctx: it stops at Close, not when ctx ends.
// On error, whatever was started is stopped again.
func Start(ctx context.Context, c Config) (*Host, error) {
	log := c.Logger
	if log == nil {
		log = slog.Default()
	}
	dataDir := c.DataDir
	if err := c.Check(); err != nil {
		return nil, err
	}
	if c.UserNS {
		// A runtime that mounts the container's root from inside the user
		// namespace (runc does) needs the range's root to search the way
		// to the bundle; search rights give nothing away (the range still
		// cannot list or read the data dir).
		if err := os.Chmod(dataDir, 0o711); err != nil {
			return nil, err
		}
	}
	ctrd := containerdrt.NewDaemon(containerdrt.DaemonConfig{DataDir: filepath.Join(dataDir, "containerd"), Logger: log})
	if err := ctrd.Start(ctx); err != nil {
		return nil, fmt.Errorf("starting containerd: %w", err)
	}
	h := &Host{ctx: ctx, ctrd: ctrd, log: log}
	images := image.New(ctrd.Client(), "overlayfs")
	_ = images.AllowInsecureRegistries(c.InsecureRegistries) // checked above
	// Before the agent resolves any image (restarts, warm pools): records
	// from before per-tenant records become the tenants' own.
	if _, err := images.Migrate(ctx); err != nil {
		h.stopContainerd()
		return nil, fmt.Errorf("migrating image records: %w", err)
	}

	netw, err := network.New(network.Config{StateDir: filepath.Join(dataDir, "network"), Bridge: c.Bridge, Subnet: c.Subnet,
		Isolation: c.Isolation})
	if err != nil {
		h.stopContainerd()
		return nil, fmt.Errorf("preparing the instance network: %w", err)
	}
	h.netw = netw
	var warm *pool.Pool
	if c.Pool.Max > 0 {
		warm = pool.New(pool.Config{
			Network: netw, Policy: c.Pool, Logger: log,
			StatusFile: filepath.Join(dataDir, "agent", "pool.json"),
		})
	}
	h.Images = images
	cdiDirs := c.CDISpecDirs
	if len(cdiDirs) == 0 {
		cdiDirs = device.DefaultSpecDirs
	}
	devices, err := device.Open(cdiDirs, filepath.Join(dataDir, "agent", "devices"))
	if err != nil {
		h.stopContainerd()
		return nil, fmt.Errorf("reading the host's devices: %w", err)
	}
	for path, errs := range devices.Errors() {
		log.Warn("a CDI spec is unusable; its devices are left out", "path", path, "err", errors.Join(errs...))
	}
	h.Agent = agent.New(agent.Config{
		Devices:     devices,
		HostName:    c.Name(),
		DataDir:     filepath.Join(dataDir, "agent"),
		Store:       c.Store,
		Client:      ctrd.Client(),
		Classes:     containerdrt.Classes(filepath.Join(dataDir, "containerd")),
		Images:      images,
		Network:     netw,
		Pool:        warm,
		Warm:        warmOptions(c.Options),
		Usage:       c.Usage,
		Files:       c.Files,
		NetView:     c.NetView,
		Ports:       c.Ports,
		Security:    c.Security,
		UserNS:      c.UserNS,
		Logger:      log,
		SnapshotDir: filepath.Join(dataDir, "containerd", "containerd", "root", "io.containerd.snapshotter.v1.overlayfs"),
		CgroupRoot:  c.CgroupRoot,
		StartSlots:  c.StartSlots,

		RootCPUShares: c.RootCPUShares,
	})
	h.actx, h.stopAgent = context.WithCancel(context.WithoutCancel(ctx))
	h.agentDone = make(chan error, 1)
	go func() { h.agentDone <- h.Agent.Run(h.actx) }()
	return h, nil
}

// Subnet is the instance subnet of the host, for its registration.
func (h *Host) Subnet() string { return h.netw.Subnet() }

// Context ends when the agent is told to stop (StopAgent or Close): for
// loops that live as long as the agent, such as its link to the server.
func (h *Host) Context() context.Context { return h.actx }

// StopAgent tells the agent to stop without waiting for it; Close waits.
func (h *Host) StopAgent() { h.stopAgent() }

// Close stops the agent and waits for it, then stops containerd. The
// instances keep running: their shims outlive containerd.
func (h *Host) Close() {
	h.stopAgent()
	<-h.agentDone
	// After the agent (and its pool) let go of the network: removes the
	// subnet's masquerade if no instance is left (kanga down --purge).
	if err := h.netw.Close(context.WithoutCancel(h.ctx)); err != nil {
		h.log.Warn("closing the instance network", "err", err)
	}
	h.stopContainerd()
}

func (h *Host) stopContainerd() {
	sctx, cancel := context.WithTimeout(context.WithoutCancel(h.ctx), 15*time.Second)
	defer cancel()
	if err := h.ctrd.Stop(sctx); err != nil {
		h.log.Warn("stopping containerd", "err", err)
	}
}

// warmOptions turns warm containers on when c asks for them; the holder
// binary is found next to the kanga executable.
func warmOptions(c Options) *agent.WarmOptions {
	if c.Warm.Max <= 0 {
		return nil
	}
	pol := c.Warm
	if pol.Window == 0 {
		pol.Window = c.Pool.Window // one --pool-window for both pools
	}
	return &agent.WarmOptions{Policy: pol, Total: c.WarmTotal}
}
