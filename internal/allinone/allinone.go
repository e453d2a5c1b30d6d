// Package allinone assembles `kanga up`: a control plane (package
// assembly/cp) and a host agent (package daemon) in one process. The agent
// joins its own control plane as any `kanga agent` joins `kanga server`:
// over the agents' link, here on loopback, with the same join, mTLS,
// lease and host API, so what runs under `kanga up` runs as it would in a
// cluster.
package allinone

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/kanga-run/kanga/internal/assembly/cp"
	"github.com/kanga-run/kanga/internal/assembly/host"
	"github.com/kanga-run/kanga/internal/daemon"
)

// Options configure `kanga up`: its control plane and its host. The
// control plane's API is plain HTTP, its agents' link listens on loopback
// for its own host only, and its replica is named after the host.
type Options struct {
	ControlPlane cp.Options
	Host         host.Options
	// Ready, if set, is called once the API serves and the host is ready.
	Ready func(addr string)
}

// Run serves until ctx ends, then stops the API, the agent and
// containerd. Instances keep running: the shims outlive containerd, and
// the next Run adopts them.
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
	co.Logger, co.PlainAPI, co.ReplicaName, co.Self = log, true, hostName, hostName
	// The link is for this process's own agent: loopback, any free port.
	co.AgentListen = "127.0.0.1:0"
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
	// The link first, the API once the host is ready: a client that waits
	// for the API finds a platform that can run instances, never the
	// record (and host API address) of this host's previous run.
	plane.ServeLink()

	ho := o.Host
	ho.HostName, ho.Ports = hostName, plane.Ports()
	actx, stopAgent := context.WithCancel(ctx)
	defer stopAgent()
	hostAPI := make(chan string, 1)
	agentErr := make(chan error, 1)
	go func() {
		agentErr <- daemon.RunAgent(actx, daemon.AgentOptions{
			Join: plane.AgentURL(), Token: plane.JoinToken(), DataDir: plane.DataDir(),
			Listen: "127.0.0.1:0", Version: co.Version, Logger: log, NoPIDFile: true, Options: ho,
			Ready: func(u string) { hostAPI <- u },
		})
	}()
	// The agent leaves its instances running when it stops.
	agentDone := func() error { stopAgent(); return <-agentErr }

	// The host holds its lease before the control-plane loop starts, so
	// that a restart after a long stop never finds its own host NotReady;
	// and the loop never treats it as lost while this process lives
	// (cp.Options.Self).
	var addr string
	select {
	case addr = <-hostAPI:
	case err := <-agentErr:
		return fmt.Errorf("host %s: %w", hostName, orStopped(err))
	case <-ctx.Done():
		return agentDone()
	}
	ready := make(chan error, 1)
	go func() { ready <- plane.WaitHost(actx, hostName, addr) }()
	select {
	case err := <-ready:
		if ctx.Err() != nil {
			return agentDone()
		}
		if err != nil {
			_ = agentDone()
			return err
		}
	case err := <-agentErr:
		return fmt.Errorf("host %s: %w", hostName, orStopped(err))
	}
	plane.StartLoop()

	sctx, stopServe := context.WithCancel(ctx)
	defer stopServe()
	serveErr := make(chan error, 1)
	go func() { serveErr <- plane.Serve(sctx) }()
	select {
	case err := <-serveErr:
		aerr := agentDone()
		if ctx.Err() != nil {
			return errors.Join(err, aerr)
		}
		return errors.Join(orStopped(err), aerr)
	case err := <-agentErr:
		stopServe()
		<-serveErr
		return fmt.Errorf("host %s: %w", hostName, orStopped(err))
	}
}

// orStopped says that a half stopped when it returned no error of its own.
func orStopped(err error) error {
	if err == nil {
		return errors.New("stopped unexpectedly")
	}
	return err
}
