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
	"strconv"
	"strings"
	"time"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/internal/agent/pool"
	"github.com/kanga-run/kanga/internal/allinone"
	"github.com/kanga-run/kanga/internal/hostlink"
	"github.com/kanga-run/kanga/internal/model"
	"github.com/kanga-run/kanga/internal/server"
)

// AgentOptions configure `kanga agent`.
type AgentOptions struct {
	// Join is the server's agent link URL (https://host:port) and Token
	// the join token it wrote; the token is needed only until the agent
	// has its certificate in DataDir.
	Join     string
	Token    string
	DataDir  string
	HostName string
	Labels   map[string]string
	// Listen is the address of the host API (logs, exec, stats, images)
	// the control plane calls; Advertise, if set, is the address it is
	// reached at (default: Listen's).
	Listen    string
	Advertise string
	Bridge    string
	Subnet    string
	// InsecureRegistries: see allinone.Options. The server's list (its
	// own --insecure-registry) is added when the agent registers.
	InsecureRegistries []string
	Isolation          bool
	Pool               pool.Policy
	// Warm sizes the warm containers (see pool.Warm); Max 0 turns them off.
	Warm      pool.Policy
	WarmTotal int
	// CgroupRoot is the parent of the agent's cgroups (default /kanga).
	CgroupRoot string
	// Ports and Security are the host's guards on published ports and
	// containers' sandboxes; the agent's own ports are added to the
	// reserved ones.
	Ports    model.PortPolicy
	Security model.SecurityBounds
	// UserNS runs crun containers in a user namespace.
	UserNS bool
	// StartSlots bounds the host's concurrent instance starts (0: twice
	// its cores); the host reports it to the control plane.
	StartSlots int
	// RootCPUShares weights the instances against Kanga's own threads
	// (agent.Config.RootCPUShares).
	RootCPUShares int

	Version string
	Logger  *slog.Logger
	// Ready, if set, is called once the host API serves and the agent
	// runs.
	Ready func(hostAPI string)
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
	hostName := o.HostName
	if hostName == "" {
		hostName, _ = os.Hostname()
	}
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
	creds, err := hostlink.Join(ctx, o.Join, o.Token, filepath.Join(dataDir, "pki"), hostName,
		[]string{advHost, "127.0.0.1", "localhost", osHost})
	if err != nil {
		return err
	}
	link := hostlink.NewLink(o.Join, hostName, creds, log)

	ports := o.Ports
	ports.ReserveAddress("the host API", ln.Addr().String())
	for _, j := range strings.Split(o.Join, ",") {
		ports.ReserveAddress("the agents' link", strings.TrimSpace(j))
	}
	allinone.ReserveEtcd(&ports, nil)

	host, err := allinone.StartHost(ctx, allinone.HostConfig{
		DataDir: dataDir, HostName: hostName, Store: link, Usage: link,
		Bridge: o.Bridge, Subnet: o.Subnet, Pool: o.Pool, Warm: o.Warm, WarmTotal: o.WarmTotal, Logger: log,
		InsecureRegistries: o.InsecureRegistries,
		CgroupRoot:         o.CgroupRoot, Ports: ports, Security: o.Security, UserNS: o.UserNS,
		Isolation: o.Isolation, NetView: link.WatchNetView, StartSlots: o.StartSlots,
		RootCPUShares: o.RootCPUShares,
	})
	if err != nil {
		return err
	}
	defer host.Close()
	ag := host.Agent
	// The server's --insecure-registry list comes with each registration.
	link.Registered = func(r hostlink.RegisterResponse) { host.Images.AddInsecureRegistries(r.InsecureRegistries) }
	// What the control plane decided to remove while this host was away
	// (a deleted tenant, a removed image) goes before the host is offered
	// work again; what it could not tell the host at once, within a
	// minute.
	link.Prepare = func(ctx context.Context) error { return ag.ApplyPurges(ctx, link) }
	go ag.RunPurges(host.Context(), link, purgeInterval)

	hs := server.NewHTTPServer(hostlink.HostAPIHandler(ag, link, log), server.DefaultLimits, log)
	hs.TLSConfig = hostlink.HostAPITLS(creds)
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
		go ag.ReportImages(host.Context(), link.ReportImages)
		link.Run(host.Context(), func() api.Host {
			c := ag.Capacity()
			imgs, err := ag.HostImages(host.Context())
			if err != nil {
				log.Warn("listing the host's images for its registration failed", "err", err)
			}
			return api.Host{
				Images:         imgs,
				Name:           hostName,
				Subnet:         host.Subnet(),
				Address:        hostAPI,
				Labels:         o.Labels,
				Capacity:       api.HostCapacity{CPUs: c.CPUs, MemoryBytes: c.Memory, StartSlots: c.StartSlots},
				RuntimeClasses: ag.RuntimeClasses(),
				Version:        o.Version,
			}
		})
	}()
	defer func() { host.StopAgent(); <-linkDone }()

	if err := os.WriteFile(allinone.PIDFile(dataDir), []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		return err
	}
	defer os.Remove(allinone.PIDFile(dataDir))
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
