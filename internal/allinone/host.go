package allinone

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/kanga-run/kanga/internal/agent"
	"github.com/kanga-run/kanga/internal/agent/image"
	"github.com/kanga-run/kanga/internal/agent/network"
	"github.com/kanga-run/kanga/internal/agent/pool"
	"github.com/kanga-run/kanga/internal/agent/runtime"
	"github.com/kanga-run/kanga/internal/model"
	"github.com/kanga-run/kanga/internal/netview"
)

// HostConfig configures the host half of a process: what `kanga up` and
// `kanga agent` both run. It lives here rather than in package daemon
// because daemon imports this package.
type HostConfig struct {
	DataDir  string // absolute
	HostName string
	// Store is where the agent reads and writes instances: the store
	// itself (kanga up) or the agent's link to the server (kanga agent).
	Store agent.Store
	// Usage takes the host's usage records: the store, or the link.
	Usage  agent.UsageSink
	Bridge string
	Subnet string
	// Pool sizes the warm pool of network sandboxes; Max 0 turns it off.
	Pool pool.Policy
	// Warm sizes the warm containers per (tenant, image, runtime class);
	// Max 0 turns them off. WarmTotal caps them across keys.
	Warm      pool.Policy
	WarmTotal int
	// InsecureRegistries: see Options.
	InsecureRegistries []string
	// Isolation keeps tenants apart on the host's network (see
	// network.Config.Isolation); NetView feeds it the rest of the
	// platform (netview.View.Subscribe, or the agent link's stream).
	Isolation bool
	NetView   func(ctx context.Context) <-chan netview.Update
	Logger    *slog.Logger
	// CgroupRoot is the parent of the agent's cgroups (default /kanga);
	// agents sharing a machine need one each.
	CgroupRoot string
	// Ports and Security are the host's guards on published ports and
	// containers' sandboxes (see agent.Config).
	Ports    model.PortPolicy
	Security model.SecurityBounds
	// UserNS runs crun containers in a user namespace.
	UserNS bool
	// StartSlots bounds the instance starts run at once (see
	// agent.Config.StartSlots).
	StartSlots int
	// RootCPUShares weights the instances against Kanga's own threads
	// (agent.Config.RootCPUShares).
	RootCPUShares int
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
	ctrd      *runtime.Daemon
	netw      *network.Manager
	log       *slog.Logger
}

// StartHost starts containerd under DataDir/containerd, prepares the
// instance network (and the warm pool) and runs an agent. The agent runs
// on a context detached from ctx: it stops at Close, not when ctx ends.
// On error, whatever was started is stopped again.
func StartHost(ctx context.Context, c HostConfig) (*Host, error) {
	log := c.Logger
	dataDir := c.DataDir
	if _, err := image.ParseInsecureRegistries(c.InsecureRegistries); err != nil {
		return nil, err
	}
	if r := c.CgroupRoot; r != "" && (!filepath.IsAbs(r) || filepath.Clean(r) != r || r == "/") {
		return nil, fmt.Errorf("--cgroup-root %q must be a clean absolute path below /, such as /kanga", r)
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
	ctrd := runtime.NewDaemon(runtime.DaemonConfig{DataDir: filepath.Join(dataDir, "containerd"), Logger: log})
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
	h.Agent = agent.New(agent.Config{
		HostName:    c.HostName,
		DataDir:     filepath.Join(dataDir, "agent"),
		Store:       c.Store,
		Client:      ctrd.Client(),
		Classes:     runtime.Classes(filepath.Join(dataDir, "containerd")),
		Images:      images,
		Network:     netw,
		Pool:        warm,
		Warm:        warmOptions(c),
		Usage:       c.Usage,
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
func warmOptions(c HostConfig) *agent.WarmOptions {
	if c.Warm.Max <= 0 {
		return nil
	}
	pol := c.Warm
	if pol.Window == 0 {
		pol.Window = c.Pool.Window // one --pool-window for both pools
	}
	return &agent.WarmOptions{Policy: pol, Total: c.WarmTotal}
}
