// Package allinone assembles `kanga up`: a control plane (package
// assembly/cp) and a host (package assembly/host) in one process, the host
// using the control plane's store directly. `kanga server` and `kanga
// agent` run the same two assemblies apart.
package allinone

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
	"github.com/kanga-run/kanga/internal/agent"
	"github.com/kanga-run/kanga/internal/assembly/cp"
	"github.com/kanga-run/kanga/internal/assembly/host"
	"github.com/kanga-run/kanga/internal/controlplane"
	"github.com/kanga-run/kanga/internal/store"
)

// Options configure `kanga up`: its control plane and its host. The
// control plane's API is plain HTTP, it has no agents' link, and its
// replica is named after the host.
type Options struct {
	ControlPlane cp.Options
	Host         host.Options
	// Ready, if set, is called once the API serves.
	Ready func(addr string)
}

// Run serves until ctx ends, then stops the API and containerd. Instances
// keep running: the shims outlive containerd, and the next Run adopts them.
func Run(ctx context.Context, o Options) error {
	log := o.ControlPlane.Logger
	if log == nil {
		log = slog.Default()
	}
	// The host's flags are checked before anything is started.
	if err := o.Host.Check(); err != nil {
		return err
	}
	hostName := o.Host.Name()
	co := o.ControlPlane
	co.Logger, co.PlainAPI, co.AgentListen, co.ReplicaName = log, true, "", hostName
	co.Ready = func(addr, _ string) {
		log.Info("kanga is up", "api", addr, "host", hostName, "config", co.ConfigPath)
		if o.Ready != nil {
			o.Ready(addr)
		}
	}
	plane, err := cp.Open(ctx, co)
	if err != nil {
		return err
	}
	defer plane.Close()
	st := plane.Store()

	ho := o.Host
	ho.HostName, ho.Ports = hostName, plane.Ports()
	// The host follows the control plane's network view in-process, as
	// `kanga agent` follows it over the link.
	h, err := host.Start(ctx, host.Config{Options: ho, DataDir: plane.DataDir(), Store: st.ForHost(hostName), Usage: st.ForHost(hostName), Files: st.ForHost(hostName),
		NetView: plane.NetView().Subscribe, Logger: log})
	if err != nil {
		return err
	}
	defer h.Close()
	ag := h.Agent
	// Purges the API recorded but could not carry out (it stopped between
	// deleting a tenant and cleaning the host) are done before the host
	// registers; a failure here is retried every minute, and re-creating
	// the tenant is refused until then.
	purges := st.ForHost(hostName)
	if err := ag.ApplyPurges(ctx, purges); err != nil {
		log.Warn("carrying out pending purges failed; retrying in the background", "err", err)
	}
	go ag.RunPurges(h.Context(), purges, time.Minute)

	// The host registers and holds its lease before the control plane
	// starts, so that a restart after a long stop never finds its own host
	// NotReady and re-creates what still runs here.
	stopCP, err := runControlPlane(ctx, st, ag, hostName, h.Subnet(), co.Version, co.Failure, log)
	if err != nil {
		return err
	}
	defer stopCP()
	return plane.Serve(ctx, ag)
}

// hostLeaseTTL is how long the host stays Ready after this process stops
// answering; the failure detector acts when it runs out.
const hostLeaseTTL = 5 * time.Second

// runControlPlane registers this machine as a host (capacity from the
// agent), keeps its lease alive and runs the scheduler loop and failure
// detector in-process. The returned function stops them; the lease is then
// left to expire, as after a crash.
func runControlPlane(ctx context.Context, st *store.Store, ag *agent.Agent, hostName, subnet, version string, fd cp.FailureDetection, log *slog.Logger) (func(), error) {
	c := ag.Capacity()
	h := &api.Host{
		Name:           hostName,
		Subnet:         subnet,
		Capacity:       api.HostCapacity{CPUs: c.CPUs, MemoryBytes: c.Memory, StartSlots: c.StartSlots, Pods: c.Pods},
		RuntimeClasses: ag.RuntimeClasses(),
		Version:        version,
	}
	imgs, err := ag.HostImages(ctx)
	if err != nil {
		log.Warn("listing the host's images for its registration failed", "err", err)
	}
	h.Images = imgs
	if err := st.RegisterHost(ctx, h); err != nil {
		return nil, fmt.Errorf("registering host %s: %w", hostName, err)
	}
	bg, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{}, 3)
	// Image locality: report the host's images again whenever they change.
	go func() {
		defer func() { done <- struct{}{} }()
		ag.ReportImages(bg, func(ctx context.Context, imgs []api.HostImage) error {
			return st.SetHostImages(ctx, hostName, imgs)
		})
	}()
	go func() {
		defer func() { done <- struct{}{} }()
		// losses counts this host's lost leases; the message is stable,
		// with a running count: tests and benchmarks assert that it never
		// appears under load (issue 22).
		losses := 0
		for bg.Err() == nil {
			err := st.KeepHostAlive(bg, hostName, hostLeaseTTL)
			if bg.Err() != nil {
				break
			}
			losses++
			log.Warn("host lease lost; taking a new one", "host", hostName, "err", err, "lease_losses", losses)
			if errors.Is(err, errdefs.ErrFailedPrecondition) {
				// The host record was removed: register again.
				if imgs, err := ag.HostImages(bg); err == nil {
					h.Images = imgs
				}
				if err := st.RegisterHost(bg, h); err != nil {
					log.Warn("registering the host again failed", "host", hostName, "err", err)
				}
			}
			time.Sleep(250 * time.Millisecond)
		}
	}()
	// Wait for the lease before the failure detector looks at this host.
	wctx, stopWatch := context.WithCancel(ctx)
	ready := false
	for hosts := range st.WatchHosts(wctx) {
		if i := slices.IndexFunc(hosts, func(h api.Host) bool { return h.Name == hostName }); i >= 0 && hosts[i].Status.Phase == api.HostReady {
			ready = true
			break
		}
	}
	stopWatch()
	if !ready {
		cancel()
		<-done
		<-done
		return nil, fmt.Errorf("host %s did not become ready: %w", hostName, ctx.Err())
	}
	// Every kanga up holds its own host's lease directly in etcd, whoever
	// leads the control plane, so a new leader need not wait long for
	// hosts to reconnect: a short grace, not the default (meant for agents
	// whose leases go through the control plane).
	//
	// This host is the control plane's own: while the loop runs, the host
	// does, and a lease lost to a starved etcd is taken again (below)
	// without its instances being touched. Other kanga up processes on
	// the same external etcd have no host API to ask: their leases decide.
	cpCfg := controlplane.Config{Store: st, ID: hostName, Logger: log,
		Policy: controlplane.DefaultPolicy, StartupGrace: time.Second}
	fd.Apply(&cpCfg, hostName, nil)
	cp := controlplane.New(cpCfg)
	go func() {
		defer func() { done <- struct{}{} }()
		_ = cp.Run(bg)
	}()
	return func() {
		cancel()
		<-done
		<-done
		<-done
	}, nil
}
