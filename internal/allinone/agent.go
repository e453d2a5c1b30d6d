package allinone

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/internal/agent"
	"github.com/kanga-run/kanga/internal/agent/image"
	"github.com/kanga-run/kanga/internal/agent/network"
	"github.com/kanga-run/kanga/internal/agent/pool"
	"github.com/kanga-run/kanga/internal/agent/runtime"
	"github.com/kanga-run/kanga/internal/hostlink"
)

// AgentOptions configure `kanga agent`: one host joined to a control
// plane.
type AgentOptions struct {
	DataDir  string
	JoinURL  string // https://server:port of the server's agent endpoint
	Token    string // join token; only needed before the first join
	HostName string
	Labels   map[string]string
	// Listen is host:port of the host API the control plane calls (logs,
	// exec, stats, images).
	Listen string
	Bridge string
	Subnet string
	// Memory and Pods, if set, override what the host reports (to offer
	// the pool less than the machine has).
	Memory  int64
	Pods    int
	Version string
	Pool    pool.Policy
	Logger  *slog.Logger
	// Ready, if set, is called once the host API serves.
	Ready func(hostAPI string)
}

// RunAgent runs the host until ctx ends. Instances keep running when it
// stops; the next RunAgent adopts them.
func RunAgent(ctx context.Context, o AgentOptions) error {
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	dataDir, err := filepath.Abs(o.DataDir)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return fmt.Errorf("creating data dir: %w", err)
	}
	hostName := o.HostName
	if hostName == "" {
		hostName, _ = os.Hostname()
	}
	ln, err := net.Listen("tcp", o.Listen)
	if err != nil {
		return fmt.Errorf("listening on %s: %w (choose another address with --listen)", o.Listen, err)
	}
	defer ln.Close()
	apiHost, _, _ := net.SplitHostPort(ln.Addr().String())
	creds, err := hostlink.Join(ctx, o.JoinURL, o.Token, filepath.Join(dataDir, "pki"), hostName, []string{apiHost, "127.0.0.1", "localhost", hostName})
	if err != nil {
		return err
	}
	link := hostlink.NewLink(o.JoinURL, hostName, creds, log)

	ctrd := runtime.NewDaemon(runtime.DaemonConfig{DataDir: filepath.Join(dataDir, "containerd"), Logger: log})
	if err := ctrd.Start(ctx); err != nil {
		return fmt.Errorf("starting containerd: %w", err)
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
		defer cancel()
		if err := ctrd.Stop(sctx); err != nil {
			log.Warn("stopping containerd", "err", err)
		}
	}()
	netw, err := network.New(network.Config{StateDir: filepath.Join(dataDir, "network"), Bridge: o.Bridge, Subnet: o.Subnet})
	if err != nil {
		return fmt.Errorf("preparing the instance network: %w", err)
	}
	var warm *pool.Pool
	if o.Pool.Max > 0 {
		warm = pool.New(pool.Config{Network: netw, Policy: o.Pool, Logger: log, StatusFile: filepath.Join(dataDir, "agent", "pool.json")})
	}
	ag := agent.New(agent.Config{
		HostName:    hostName,
		DataDir:     filepath.Join(dataDir, "agent"),
		Store:       link,
		Client:      ctrd.Client(),
		Classes:     runtime.Classes(filepath.Join(dataDir, "containerd")),
		Images:      image.New(ctrd.Client(), "overlayfs"),
		Network:     netw,
		Pool:        warm,
		Logger:      log,
		SnapshotDir: filepath.Join(dataDir, "containerd", "containerd", "root", "io.containerd.snapshotter.v1.overlayfs"),
	})

	hostAPI := &http.Server{Handler: hostlink.HostAPIHandler(ag, link, log), TLSConfig: hostlink.HostAPITLS(creds), ReadHeaderTimeout: 10 * time.Second}
	serveErr := make(chan error, 1)
	go func() { serveErr <- hostAPI.ServeTLS(ln, "", "") }()
	address := "https://" + ln.Addr().String()

	bg, stop := context.WithCancel(context.WithoutCancel(ctx))
	var done []chan struct{}
	goRun := func(f func()) {
		d := make(chan struct{})
		done = append(done, d)
		go func() {
			defer close(d)
			f()
		}()
	}
	defer func() {
		stop()
		for _, d := range done {
			<-d
		}
	}()
	goRun(func() { _ = ag.Run(bg) })
	goRun(func() {
		link.Run(bg, func() api.Host {
			c := ag.Capacity()
			h := api.Host{
				Name: hostName, Address: address, Labels: o.Labels, Version: o.Version,
				Capacity:       api.HostCapacity{CPUs: c.CPUs, MemoryBytes: c.Memory, Pods: o.Pods},
				RuntimeClasses: ag.RuntimeClasses(),
			}
			if o.Memory > 0 {
				h.Capacity.MemoryBytes = o.Memory
			}
			return h
		})
	})

	if err := os.WriteFile(PIDFile(dataDir), []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		return err
	}
	defer os.Remove(PIDFile(dataDir))
	log.Info("kanga agent is up", "host", hostName, "server", o.JoinURL, "host_api", address, "data_dir", dataDir)
	if o.Ready != nil {
		o.Ready(address)
	}
	select {
	case <-ctx.Done():
	case err := <-serveErr:
		if !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("host API: %w", err)
		}
	}
	log.Info("agent shutting down; instances keep running")
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	_ = hostAPI.Shutdown(sctx)
	return nil
}
