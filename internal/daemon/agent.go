// Package daemon assembles `kanga agent`: a host (package assembly/host)
// joined to a control plane over the agents' link, with the host API the
// control plane calls. `kanga server` is package assembly/cp alone; `kanga
// up`, a control plane and a host in one process, is package allinone.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/internal/assembly"
	"github.com/kanga-run/kanga/internal/assembly/host"
	"github.com/kanga-run/kanga/internal/hostlink"
	"github.com/kanga-run/kanga/internal/hostlink/agentside"
	"github.com/kanga-run/kanga/internal/hostlink/hostapi"
	"github.com/kanga-run/kanga/internal/hostlink/join"
	"github.com/kanga-run/kanga/internal/httpserver"
)

// AgentOptions configure `kanga agent`.
type AgentOptions struct {
	// Join is the server's agent link URL (https://host:port) and Token
	// the join token it wrote; the token is needed only until the agent
	// has its certificate in DataDir.
	Join    string
	Token   string
	DataDir string
	Labels  map[string]string
	// Listen is the address of the host API (logs, exec, stats, images)
	// the control plane calls; Advertise, if set, is the address it is
	// reached at (default: Listen's).
	Listen    string
	Advertise string
	Version   string
	Logger    *slog.Logger
	// Ready, if set, is called once the host API serves and the agent
	// runs.
	Ready func(hostAPI string)
	// NoPIDFile leaves the data dir's pid file to another role in the same
	// process (kanga up's control plane writes it).
	NoPIDFile bool
	// Options are the host's, as kanga up has them. The server's
	// --insecure-registry list is added to InsecureRegistries when the
	// agent registers; the agent's own ports are added to Ports'
	// reserved ones.
	host.Options
}

// purgeInterval is how often an agent looks for purges the control plane
// could not deliver at once.
const purgeInterval = time.Minute

// RunAgent runs a host agent until ctx ends. Instances keep running when
// it stops; the next RunAgent adopts them (or removes those the control
// plane re-placed elsewhere meanwhile).
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
	if err := o.Check(); err != nil {
		return err
	}
	hostName := o.Name()
	ln, err := net.Listen("tcp", o.Listen)
	if err != nil {
		return fmt.Errorf("listening on %s: %w (choose another address with --listen)", o.Listen, err)
	}
	defer ln.Close()
	advertise := o.Advertise
	if advertise == "" {
		advertise = ln.Addr().String()
	}
	advHost, _, err := net.SplitHostPort(advertise)
	if err != nil {
		return fmt.Errorf("--advertise %q: %w", advertise, err)
	}
	if ip := net.ParseIP(advHost); ip != nil && ip.IsUnspecified() {
		return fmt.Errorf("the host API listens on %s, which the control plane cannot dial: set --advertise HOST:PORT to the address it reaches this host at", advertise)
	}
	osHost, _ := os.Hostname()
	creds, err := join.Join(ctx, o.Join, o.Token, filepath.Join(dataDir, "pki"), hostName,
		[]string{advHost, "127.0.0.1", "localhost", osHost})
	if err != nil {
		return err
	}
	link := agentside.NewLink(o.Join, hostName, creds, log)

	ho := o.Options
	ho.HostName = hostName
	ho.Ports.ReserveAddress("the host API", ln.Addr().String())
	for _, j := range strings.Split(o.Join, ",") {
		ho.Ports.ReserveAddress("the agents' link", strings.TrimSpace(j))
	}
	assembly.ReserveEtcd(&ho.Ports, nil)

	h, err := host.Start(ctx, host.Config{Options: ho, DataDir: dataDir, Store: link, Usage: link, Files: link,
		NetView: link.WatchNetView, Logger: log})
	if err != nil {
		return err
	}
	defer h.Close()
	ag := h.Agent
	// The server's --insecure-registry list comes with each registration.
	link.Registered = func(r hostlink.RegisterResponse) { h.Images.AddInsecureRegistries(r.InsecureRegistries) }
	// What the control plane decided to remove while this host was away
	// (a deleted tenant, a removed image) goes before the host is offered
	// work again; what it could not tell the host at once, within a
	// minute.
	link.Prepare = func(ctx context.Context) error { return ag.ApplyPurges(ctx, link) }
	go ag.RunPurges(h.Context(), link, purgeInterval)

	defer registerInstanceMetrics(ag, log)()
	hs := httpserver.New(hostapi.Handler(ag, link, log), httpserver.DefaultLimits, log)
	hs.TLSConfig = hostapi.TLS(creds)
	serveErr := make(chan error, 1)
	go func() { serveErr <- hs.ServeTLS(ln, "", "") }()
	defer hs.Close()

	// Registration and the lease come last: the host is offered to the
	// scheduler only once it can run and serve instances.
	hostAPI := "https://" + advertise
	linkDone := make(chan struct{})
	go func() {
		defer close(linkDone)
		// Image locality: the registration carries the host's images and
		// ReportImages sends them again whenever they change.
		go ag.ReportImages(h.Context(), link.ReportImages)
		link.Run(h.Context(), func() api.Host {
			c := ag.Capacity()
			imgs, err := ag.HostImages(h.Context())
			if err != nil {
				log.Warn("listing the host's images for its registration failed", "err", err)
			}
			return api.Host{
				Images:         imgs,
				Name:           hostName,
				Subnet:         h.Subnet(),
				Address:        hostAPI,
				Labels:         o.Labels,
				Capacity:       api.HostCapacity{CPUs: c.CPUs, MemoryBytes: c.Memory, StartSlots: c.StartSlots, Pods: c.Pods, DiskBytes: c.Disk},
				RuntimeClasses: ag.RuntimeClasses(),
				Devices:        ag.Devices(),
				Version:        o.Version,
			}
		})
	}()
	defer func() { h.StopAgent(); <-linkDone }()

	if !o.NoPIDFile {
		removePID, err := assembly.WritePIDFile(dataDir)
		if err != nil {
			return err
		}
		defer removePID()
	}
	log.Info("kanga agent is up", "host", hostName, "server", o.Join, "host_api", hostAPI, "data_dir", dataDir)
	if o.Ready != nil {
		o.Ready(hostAPI)
	}
	select {
	case <-ctx.Done():
	case err := <-serveErr:
		if !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("host API: %w", err)
		}
	}
	log.Info("shutting down; instances keep running")
	return nil
}
