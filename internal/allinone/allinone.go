// Package allinone assembles `kanga up`: the control plane and a host
// agent in one process, with embedded etcd and a containerd that the agent
// starts and supervises itself. The same parts split over machines are
// assembled by package daemon (`kanga server`, `kanga agent`).
package allinone

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/client"
	"github.com/kanga-run/kanga/errdefs"
	"github.com/kanga-run/kanga/internal/agent"
	"github.com/kanga-run/kanga/internal/agent/image"
	"github.com/kanga-run/kanga/internal/agent/pool"
	"github.com/kanga-run/kanga/internal/controlplane"
	"github.com/kanga-run/kanga/internal/model"
	"github.com/kanga-run/kanga/internal/netview"
	"github.com/kanga-run/kanga/internal/server"
	"github.com/kanga-run/kanga/internal/store"
	"github.com/kanga-run/kanga/internal/tenant"
)

// Options configure `kanga up`.
type Options struct {
	DataDir  string
	Listen   string // host:port of the API
	HostName string
	// EtcdEndpoints, if set, are an external etcd cluster's client URLs;
	// nothing is embedded then.
	EtcdEndpoints []string
	ConfigPath    string // client config to write; empty: don't write one
	Bridge        string
	Subnet        string
	// InsecureRegistries are the registries pulls may reach on loopback,
	// link-local, private or the host's own addresses (see
	// image.ParseInsecureRegistries); none by default.
	InsecureRegistries []string
	// Isolation keeps tenants apart on the network (see
	// network.Config.Isolation).
	Isolation bool
	Version   string
	// Pool sizes the warm pool of network sandboxes (see package pool);
	// Max 0 turns it off.
	Pool pool.Policy
	// Warm sizes the warm containers (see pool.Warm); Max 0 turns them off.
	Warm      pool.Policy
	WarmTotal int
	// CgroupRoot is the parent of the agent's cgroups (default /kanga).
	CgroupRoot string
	// Ports is the operator's policy for published ports (the platform's
	// own ports are added to its reserved ones); Security bounds what
	// tenants may be allowed.
	Ports    model.PortPolicy
	Security model.SecurityBounds
	// UserNS runs crun containers in a user namespace.
	UserNS bool
	// StartSlots bounds the host's concurrent instance starts (0: twice
	// its cores); see agent.Config.StartSlots.
	StartSlots int
	// RootCPUShares weights the instances against Kanga's own threads
	// (agent.Config.RootCPUShares).
	RootCPUShares int
	Logger        *slog.Logger
	// Ready, if set, is called once the API serves.
	Ready func(addr string)
	// Failure tunes the failure detector.
	Failure FailureDetection
	Defaults
}

// Defaults are what the API gives instances and tenants that ask for
// nothing (kanga up and kanga server share them).
type Defaults struct {
	// DefaultType names the instance type whose resources fill in what an
	// instance leaves empty (default model.DefaultInstanceType; "none":
	// no default).
	DefaultType string
	// DefaultQuota is the quota of new tenants in ParseQuota's notation
	// ("" or "none": none).
	DefaultQuota string
	// MaxInflightCreates bounds the creates in flight the API admits
	// (server.Options.MaxInflightCreates): negative for the ready hosts'
	// start slots, 0 for no bound.
	MaxInflightCreates int
}

// APIOptions checks d and turns it into the API's options.
func (d Defaults) APIOptions() (server.Options, error) {
	if err := model.CheckDefaultType("--default-type", d.DefaultType); err != nil {
		return server.Options{}, err
	}
	q, err := model.ParseQuota(d.DefaultQuota)
	if err != nil {
		return server.Options{}, fmt.Errorf("--default-quota: %w", err)
	}
	return server.Options{DefaultType: d.DefaultType, DefaultQuota: q, MaxInflightCreates: d.MaxInflightCreates}, nil
}

// PIDFile is where a running `kanga up` records its pid, for `kanga down`.
func PIDFile(dataDir string) string { return filepath.Join(dataDir, "kanga.pid") }

// Run serves until ctx ends, then stops the API and containerd. Instances
// keep running: the shims outlive containerd, and the next Run adopts them.
func Run(ctx context.Context, o Options) error {
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	apiOpts, err := o.APIOptions()
	if err != nil {
		return err
	}
	if err := o.Failure.Check(); err != nil {
		return err
	}
	dataDir, err := filepath.Abs(o.DataDir)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return fmt.Errorf("creating data dir: %w", err)
	}
	if _, err := image.ParseInsecureRegistries(o.InsecureRegistries); err != nil {
		return err
	}
	// Listen first: a busy port is the most likely mistake and should fail
	// before anything is started.
	ln, err := net.Listen("tcp", o.Listen)
	if err != nil {
		return fmt.Errorf("listening on %s: %w (choose another address with --listen)", o.Listen, err)
	}
	defer ln.Close()
	ports := o.Ports
	ports.ReserveAddress("the Kanga API", ln.Addr().String())
	ReserveEtcd(&ports, o.EtcdEndpoints)

	st, err := store.Open(ctx, store.Config{DataDir: dataDir, Endpoints: o.EtcdEndpoints, Logger: log})
	if err != nil {
		return fmt.Errorf("opening the store: %w", err)
	}
	defer st.Close()

	token, err := EnsureAdmin(ctx, st, dataDir)
	if err != nil {
		return err
	}

	hostName := o.HostName
	if hostName == "" {
		hostName, _ = os.Hostname()
	}
	// The network view is kept here, as `kanga server` keeps it for its
	// agents; this process's agent follows it in-process.
	nvCtx, stopNV := context.WithCancel(context.WithoutCancel(ctx))
	nv := netview.New(st, log)
	nvDone := make(chan struct{})
	go func() { defer close(nvDone); nv.Run(nvCtx) }()
	defer func() { stopNV(); <-nvDone }()
	host, err := StartHost(ctx, HostConfig{
		DataDir: dataDir, HostName: hostName, Store: st, Usage: st,
		Bridge: o.Bridge, Subnet: o.Subnet, Pool: o.Pool, Warm: o.Warm, WarmTotal: o.WarmTotal, Logger: log,
		InsecureRegistries: o.InsecureRegistries,
		CgroupRoot:         o.CgroupRoot, Ports: ports, Security: o.Security, UserNS: o.UserNS,
		Isolation: o.Isolation, NetView: nv.Subscribe, StartSlots: o.StartSlots,
		RootCPUShares: o.RootCPUShares,
	})
	if err != nil {
		return err
	}
	defer host.Close()
	ag := host.Agent
	// Purges the API recorded but could not carry out (it stopped between
	// deleting a tenant and cleaning the host) are done before the host
	// registers; a failure here is retried every minute, and re-creating
	// the tenant is refused until then.
	purges := hostPurges{st: st, host: hostName}
	if err := ag.ApplyPurges(ctx, purges); err != nil {
		log.Warn("carrying out pending purges failed; retrying in the background", "err", err)
	}
	go ag.RunPurges(host.Context(), purges, time.Minute)

	// The host registers and holds its lease before the control plane
	// starts, so that a restart after a long stop never finds its own host
	// NotReady and re-creates what still runs here.
	stopCP, err := runControlPlane(ctx, st, ag, hostName, host.Subnet(), o.Version, o.Failure, log)
	if err != nil {
		return err
	}
	defer stopCP()

	apiOpts.Logger, apiOpts.Version, apiOpts.Replica = log, o.Version, hostName
	apiOpts.Ports, apiOpts.Security = ports, o.Security
	srv := server.New(st, ag, apiOpts)
	hs := server.NewHTTPServer(srv.Handler(), server.DefaultLimits, log)
	serveErr := make(chan error, 1)
	go func() { serveErr <- hs.Serve(ln) }()

	addr := "http://" + ln.Addr().String()
	if o.ConfigPath != "" {
		if err := client.WriteConfig(o.ConfigPath, client.Config{Addr: addr, Token: token}); err != nil {
			return err
		}
	}
	if err := os.WriteFile(PIDFile(dataDir), []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		return err
	}
	defer os.Remove(PIDFile(dataDir))
	log.Info("kanga is up", "api", addr, "data_dir", dataDir, "host", hostName, "config", o.ConfigPath)
	if o.Ready != nil {
		o.Ready(addr)
	}

	select {
	case <-ctx.Done():
	case err := <-serveErr:
		if !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("API server: %w", err)
		}
	}
	log.Info("shutting down; instances keep running")
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	_ = hs.Shutdown(sctx)
	return nil
}

// hostPurges is the store's list of one host's purges, for its agent
// (agent.Purges).
type hostPurges struct {
	st   *store.Store
	host string
}

func (p hostPurges) Purges(ctx context.Context) ([]store.Purge, error) {
	return p.st.Purges(ctx, p.host)
}

func (p hostPurges) AckPurge(ctx context.Context, pu store.Purge) error {
	return p.st.AckPurge(ctx, p.host, pu)
}

// ReserveEtcd reserves etcd's ports: its well-known client and peer ports
// (2379, 2380), wherever it runs, and those of the endpoints the platform
// uses.
func ReserveEtcd(p *model.PortPolicy, endpoints []string) {
	p.Reserve("etcd", 2379, 2380)
	for _, e := range endpoints {
		p.ReserveAddress("etcd", e)
	}
}

// hostLeaseTTL is how long the host stays Ready after this process stops
// answering; the failure detector acts when it runs out.
const hostLeaseTTL = 5 * time.Second

// runControlPlane registers this machine as a host (capacity from the
// agent), keeps its lease alive and runs the scheduler loop and failure
// detector in-process. The returned function stops them; the lease is then
// left to expire, as after a crash.
func runControlPlane(ctx context.Context, st *store.Store, ag *agent.Agent, hostName, subnet, version string, fd FailureDetection, log *slog.Logger) (func(), error) {
	c := ag.Capacity()
	h := &api.Host{
		Name:           hostName,
		Subnet:         subnet,
		Capacity:       api.HostCapacity{CPUs: c.CPUs, MemoryBytes: c.Memory, StartSlots: c.StartSlots},
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

// EnsureAdmin returns the data dir's admin token (made on first use),
// registered in the store, and makes sure the default tenant exists.
// `kanga server` does the same.
func EnsureAdmin(ctx context.Context, st *store.Store, dataDir string) (string, error) {
	token, err := adminToken(dataDir)
	if err != nil {
		return "", err
	}
	if n, err := st.MigrateTokens(ctx); err != nil {
		return "", fmt.Errorf("migrating token records: %w", err)
	} else if n > 0 {
		slog.Default().Info("token records migrated to IDs and scopes", "count", n)
	}
	if err := st.PutAdminToken(ctx, token, tenant.Default); err != nil {
		return "", fmt.Errorf("registering the admin token: %w", err)
	}
	if err := st.EnsureTenant(ctx, &api.Tenant{Name: tenant.Default, DefaultRuntime: model.DefaultRuntimeClass, CreatedAt: time.Now().UTC()}); err != nil {
		return "", fmt.Errorf("creating the default tenant: %w", err)
	}
	return token, nil
}

// adminToken returns the data dir's admin token, making one on first use.
func adminToken(dataDir string) (string, error) {
	path := filepath.Join(dataDir, "admin-token")
	if b, err := os.ReadFile(path); err == nil {
		if t := strings.TrimSpace(string(b)); t != "" {
			return t, nil
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	buf := make([]byte, 32)
	if _, err := rand.Read(buf); err != nil {
		return "", err
	}
	t := hex.EncodeToString(buf)
	if err := os.WriteFile(path, []byte(t+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("writing the admin token: %w", err)
	}
	return t, nil
}
