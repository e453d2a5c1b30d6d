// Package cp assembles a control plane: the store (embedded etcd, or an
// external cluster), the admin token and default tenant, the network view
// the hosts' isolation follows, the control-plane loop (scheduler and
// failure detector), the public API and, for remote hosts, the cluster CA
// and the agents' link. `kanga server` is a control plane alone (Run);
// `kanga up` opens one and joins its own host to it over the link on
// loopback (package allinone).
package cp

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/client"
	"github.com/kanga-run/kanga/internal/agent/image"
	"github.com/kanga-run/kanga/internal/assembly"
	"github.com/kanga-run/kanga/internal/controlplane"
	"github.com/kanga-run/kanga/internal/hostlink/hostclient"
	"github.com/kanga-run/kanga/internal/hostlink/join"
	"github.com/kanga-run/kanga/internal/hostlink/linkserver"
	"github.com/kanga-run/kanga/internal/httpserver"
	"github.com/kanga-run/kanga/internal/model"
	"github.com/kanga-run/kanga/internal/netview"
	"github.com/kanga-run/kanga/internal/pki"
	"github.com/kanga-run/kanga/internal/server"
	"github.com/kanga-run/kanga/internal/store"
)

// Options configure a control plane: `kanga server`'s flags, and those of
// `kanga up` that are not its host's.
type Options struct {
	DataDir string
	// Listen is the public API's address: HTTPS with the cluster CA's
	// certificate and bearer tokens, or plain HTTP with PlainAPI (kanga
	// up serves it so).
	Listen   string
	PlainAPI bool
	// AgentListen is the agents' link: HTTPS with the cluster CA, client
	// certificates required past the join. kanga up's own host joins
	// through it too, on loopback.
	AgentListen string
	// SANs are extra names and IPs for the serving certificate, besides
	// 127.0.0.1, localhost and the hostname.
	SANs []string
	// EtcdEndpoints, if set, are an external etcd cluster's client URLs;
	// nothing is embedded then.
	EtcdEndpoints []string
	// ReplicaName names this replica in the control plane's election
	// (default: hostname and pid).
	ReplicaName string
	ConfigPath  string // client config to write; empty: don't
	Version     string
	// InsecureRegistries are registries every agent may pull from on
	// loopback, link-local or private addresses, added to each agent's
	// own list when it registers over the link.
	InsecureRegistries []string
	// Ports is the operator's policy for published ports (the control
	// plane's own ports are added to its reserved ones); Security bounds
	// what tenants may be allowed.
	Ports    model.PortPolicy
	Security model.SecurityBounds
	Logger   *slog.Logger
	// Ready, if set, is called once the API (and the link) serve, with
	// their URLs (agents "" without a link).
	Ready func(api, agents string)
	// Failure tunes the failure detector.
	Failure FailureDetection
	// Self names the host that runs in this process (kanga up's), which
	// the failure detector never treats as lost while the process lives.
	Self string
	// AgentListener, if set, is the agents' link's listener in place of
	// one on AgentListen; the plane closes it. `kanga bench schedule`
	// joins thousands of simulated hosts over in-memory pipes.
	AgentListener net.Listener
	// HostLeaseTTL is how long a host stays Ready after its agent's
	// heartbeat request breaks (default 5 s).
	HostLeaseTTL time.Duration
	// LeaderTTL is how long a leading replica that stopped answering
	// keeps the leadership (controlplane.Config.LeaderTTL; 0 is its
	// default).
	LeaderTTL time.Duration
	// ScheduleWait bounds how long a create waits for the scheduler's
	// placement (server.Options.ScheduleWait: 0 is its default, negative
	// not at all).
	ScheduleWait time.Duration
	// Hosts, if set, is the API's host directory in place of the link's
	// (hostclient.Directory, which calls each Ready host's host API):
	// for simulated hosts, which have none (simhost.Directory).
	Hosts server.Hosts
	Defaults
}

// Files a control plane with a CA writes to its data dir.
const (
	JoinTokenFile = "join-token"
	CAFile        = "ca.crt"
)

// hostLeaseTTL is how long a host stays Ready after its agent's
// heartbeat request breaks: the agent reconnects well within it.
const hostLeaseTTL = 5 * time.Second

// An agent link silent for linkPingIdle is pinged; without an answer
// within linkPingTimeout it is closed.
const (
	linkPingIdle    = 2 * time.Second
	linkPingTimeout = 2 * time.Second
)

// Plane is an opened control plane: listening, its store open, not yet
// serving. Close undoes Open.
type Plane struct {
	o       Options
	log     *slog.Logger
	dataDir string
	apiOpts server.Options
	replica string
	ports   model.PortPolicy

	ln, aln net.Listener
	st      *store.Store
	token   string // the admin token

	// With a link or an HTTPS API: the cluster CA and this replica's
	// certificate, which also calls the agents' host APIs.
	ca        *pki.CA
	joinTok   pki.Token
	cert      tls.Certificate
	clientTLS *tls.Config
	link      *linkserver.Server
	linkMu    sync.Mutex
	as        *http.Server // the link's, once served
	linkErr   chan error

	nv   *netview.View
	loop *controlplane.ControlPlane // once StartLoop ran

	// bg lives until Close: the loops in the background.
	bg     context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// Run runs a control plane alone, as `kanga server` does, until ctx ends.
// Its hosts join over the agents' link.
func Run(ctx context.Context, o Options) error {
	if o.AgentListen == "" {
		return errors.New("--agent-listen is required: the address agents join and connect to")
	}
	p, err := Open(ctx, o)
	if err != nil {
		return err
	}
	defer p.Close()
	p.StartLoop()
	return p.Serve(ctx)
}

// Open checks o, listens on the API's (and the link's) address, opens the
// store, makes sure of the admin token and the default tenant, and of the
// cluster CA where one is needed. On error, whatever was opened is closed
// again.
func Open(ctx context.Context, o Options) (_ *Plane, err error) {
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	apiOpts, err := o.APIOptions()
	if err != nil {
		return nil, err
	}
	if err := o.Failure.Check(); err != nil {
		return nil, err
	}
	dataDir, err := filepath.Abs(o.DataDir)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, fmt.Errorf("creating data dir: %w", err)
	}
	if _, err := image.ParseInsecureRegistries(o.InsecureRegistries); err != nil {
		return nil, err
	}
	p := &Plane{o: o, log: log, dataDir: dataDir, apiOpts: apiOpts, linkErr: make(chan error, 1)}
	p.bg, p.cancel = context.WithCancel(context.WithoutCancel(ctx))
	defer func() {
		if err != nil {
			p.Close()
		}
	}()
	// A given agents' listener is the plane's from here on, closed with
	// it even if Open fails.
	p.aln = o.AgentListener
	// Listen first: a busy port is the most likely mistake and should fail
	// before anything is started.
	if p.ln, err = net.Listen("tcp", o.Listen); err != nil {
		return nil, fmt.Errorf("listening on %s: %w (choose another address with --listen)", o.Listen, err)
	}
	if p.aln == nil && o.AgentListen != "" {
		if p.aln, err = net.Listen("tcp", o.AgentListen); err != nil {
			return nil, fmt.Errorf("listening on %s: %w (choose another address with --agent-listen)", o.AgentListen, err)
		}
	}
	p.ports = o.Ports
	p.ports.ReserveAddress("the Kanga API", p.ln.Addr().String())
	if p.aln != nil {
		p.ports.ReserveAddress("the agents' link", p.aln.Addr().String())
	}
	assembly.ReserveEtcd(&p.ports, o.EtcdEndpoints)

	if p.st, err = store.Open(ctx, store.Config{DataDir: dataDir, Endpoints: o.EtcdEndpoints, Logger: log}); err != nil {
		return nil, fmt.Errorf("opening the store: %w", err)
	}
	if p.token, err = EnsureAdmin(ctx, p.st, dataDir); err != nil {
		return nil, err
	}
	hostname, _ := os.Hostname()
	p.replica = o.ReplicaName
	if p.replica == "" {
		p.replica = hostname + "-" + strconv.Itoa(os.Getpid())
	}
	if p.aln != nil || !o.PlainAPI {
		if err := p.openCA(ctx, hostname); err != nil {
			return nil, err
		}
	}
	// The hosts' tenant isolation follows this view of addresses, subnets
	// and policies: over the link, or in-process for kanga up's host.
	p.nv = netview.New(p.st, log)
	p.goBackground(func() { p.nv.Run(p.bg) })
	if p.aln != nil {
		ttl := o.HostLeaseTTL
		if ttl <= 0 {
			ttl = hostLeaseTTL
		}
		p.link = &linkserver.Server{Store: p.st, CA: p.ca, Token: p.joinTok, Logger: log, LeaseTTL: ttl,
			InsecureRegistries: o.InsecureRegistries, NetView: p.nv}
	}
	return p, nil
}

// openCA adopts the cluster CA (made by the first replica), issues this
// replica's certificate and writes the join token and the CA's
// certificate to the data dir.
func (p *Plane) openCA(ctx context.Context, hostname string) error {
	ca, joinTok, err := clusterCA(ctx, p.st)
	if err != nil {
		return err
	}
	sans := append([]string{"127.0.0.1", "localhost", hostname}, p.o.SANs...)
	for _, l := range []net.Listener{p.ln, p.aln} {
		if l == nil {
			continue
		}
		if h, _, err := net.SplitHostPort(l.Addr().String()); err == nil {
			sans = append(sans, h)
		}
	}
	// One certificate serves the API and the agents' link and, as a client
	// certificate of organization Servers, calls the agents' host API.
	cert, err := ca.ServingCert(p.replica, pki.Servers, sans)
	if err != nil {
		return fmt.Errorf("issuing the server certificate: %w", err)
	}
	if err := pki.WriteFile(filepath.Join(p.dataDir, JoinTokenFile), []byte(joinTok.String()+"\n")); err != nil {
		return err
	}
	if err := pki.WriteFile(filepath.Join(p.dataDir, CAFile), ca.CertPEM); err != nil {
		return err
	}
	p.ca, p.joinTok, p.cert = ca, joinTok, cert
	p.clientTLS = &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: ca.Pool(), MinVersion: tls.VersionTLS12}
	return nil
}

// Store is the control plane's store.
func (p *Plane) Store() *store.Store { return p.st }

// CA is the cluster CA (nil without a link or an HTTPS API).
func (p *Plane) CA() *pki.CA { return p.ca }

// DataDir is the absolute data dir.
func (p *Plane) DataDir() string { return p.dataDir }

// Ports is the port policy with the control plane's own addresses
// reserved, for a host in the same process.
func (p *Plane) Ports() model.PortPolicy { return p.ports }

// NetView is the network view the hosts' isolation follows.
func (p *Plane) NetView() *netview.View { return p.nv }

// StartLoop runs the control-plane loop (scheduler, failure detector) in
// the background until Close. A host whose lease lapsed is asked over the
// link and its host API whether it still runs before its instances are
// re-created elsewhere.
func (p *Plane) StartLoop() {
	cfg := controlplane.Config{Store: p.st, ID: p.replica, Logger: p.log, Policy: controlplane.DefaultPolicy, LeaderTTL: p.o.LeaderTTL}
	var live controlplane.Liveness
	if p.link != nil {
		live = &hostclient.Prober{Link: p.link, TLS: p.clientTLS.Clone()}
	}
	p.o.Failure.Apply(&cfg, p.o.Self, live)
	c := controlplane.New(cfg)
	p.loop = c
	p.goBackground(func() { _ = c.Run(p.bg) })
}

// Leading reports whether this replica's loop leads the control plane
// now (false before StartLoop).
func (p *Plane) Leading() bool { return p.loop != nil && p.loop.Leading() }

// ClientConfig is what a client needs to reach the API as the admin.
func (p *Plane) ClientConfig() client.Config {
	if p.o.PlainAPI {
		return client.Config{Addr: "http://" + p.ln.Addr().String(), Token: p.token}
	}
	return client.Config{Addr: "https://" + p.ln.Addr().String(), Token: p.token, CACert: string(p.ca.CertPEM)}
}

// AgentURL is the agents' link's URL ("" without a link).
func (p *Plane) AgentURL() string {
	if p.aln == nil {
		return ""
	}
	return "https://" + p.aln.Addr().String()
}

// JoinToken is the cluster's join token ("" without a CA).
func (p *Plane) JoinToken() string {
	if p.ca == nil {
		return ""
	}
	return p.joinTok.String()
}

// WaitHost waits until host is registered at address (its host API's
// URL) and Ready: it holds its lease. The address tells this run's agent
// from a record its previous run left with a lease not yet run out.
func (p *Plane) WaitHost(ctx context.Context, host, address string) error {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for hosts := range p.st.WatchHosts(wctx) {
		if i := slices.IndexFunc(hosts, func(h api.Host) bool { return h.Name == host }); i >= 0 &&
			hosts[i].Status.Phase == api.HostReady && hosts[i].Address == address {
			return nil
		}
	}
	return fmt.Errorf("host %s did not become ready: %w", host, context.Cause(ctx))
}

func (p *Plane) goBackground(f func()) {
	p.wg.Add(1)
	go func() { defer p.wg.Done(); f() }()
}

// Serve serves the API (and the agents' link) until ctx ends. The API
// reaches the hosts through the link's directory (or Options.Hosts).
// Once serving it writes the client config and the pid file and calls
// Options.Ready.
func (p *Plane) Serve(ctx context.Context) error {
	apiOpts := p.apiOpts
	apiOpts.Logger, apiOpts.Version, apiOpts.Replica = p.log, p.o.Version, p.replica
	apiOpts.Ports, apiOpts.Security = p.ports, p.o.Security
	apiOpts.ScheduleWait = p.o.ScheduleWait
	if p.link != nil {
		apiOpts.Hosts = hostclient.NewDirectory(p.bg, p.st, p.clientTLS)
		apiOpts.JoinTokens = &join.Authority{Store: p.st, CA: p.ca}
	}
	if p.o.Hosts != nil {
		apiOpts.Hosts = p.o.Hosts
	}
	srv := server.New(p.st, apiOpts)
	hs := httpserver.New(srv.Handler(), httpserver.DefaultLimits, p.log)
	serveErr := make(chan error, 2)
	cfg := p.ClientConfig()
	apiAddr := cfg.Addr
	if p.o.PlainAPI {
		go func() { serveErr <- hs.Serve(p.ln) }()
	} else {
		hs.TLSConfig = &tls.Config{Certificates: []tls.Certificate{p.cert}, MinVersion: tls.VersionTLS12}
		go func() { serveErr <- hs.ServeTLS(p.ln, "", "") }()
	}
	p.ServeLink()
	agentAddr := p.AgentURL()

	if p.o.ConfigPath != "" {
		if err := client.WriteConfig(p.o.ConfigPath, cfg); err != nil {
			return err
		}
	}
	removePID, err := assembly.WritePIDFile(p.dataDir)
	if err != nil {
		return err
	}
	defer removePID()
	if p.link != nil && p.o.Self == "" {
		p.log.Info("kanga server is up", "api", apiAddr, "agents", agentAddr, "data_dir", p.dataDir, "replica", p.replica,
			"join_token_file", filepath.Join(p.dataDir, JoinTokenFile))
	}
	if p.o.Ready != nil {
		p.o.Ready(apiAddr, agentAddr)
	}
	select {
	case <-ctx.Done():
	case err := <-serveErr:
		if !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("serving: %w", err)
		}
	case err := <-p.linkErr:
		if !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("serving the agents' link: %w", err)
		}
	}
	p.log.Info("shutting down; instances keep running")
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	_ = hs.Shutdown(sctx)
	p.closeLink()
	return nil
}

// ServeLink serves the agents' link in the background, until Serve ends or
// Close; Serve calls it. kanga up calls it first, so that its own host
// joins and holds its lease before the API is served.
func (p *Plane) ServeLink() {
	p.linkMu.Lock()
	defer p.linkMu.Unlock()
	if p.link == nil || p.as != nil {
		return
	}
	p.as = httpserver.New(p.link.Handler(), httpserver.DefaultLimits, p.log)
	p.as.TLSConfig = p.link.TLSConfig(p.cert)
	// The lease is held while the agent's heartbeat request is open,
	// and a hung agent, or one behind a partition that drops packets
	// silently, keeps its connection open until TCP gives up minutes
	// later: the server's writes still land in socket buffers. An
	// HTTP/2 ping that goes unanswered closes the connection, and the
	// lease then runs out as after a crash.
	p.as.HTTP2 = &http.HTTP2Config{SendPingTimeout: linkPingIdle, PingTimeout: linkPingTimeout}
	as := p.as
	go func() { p.linkErr <- as.ServeTLS(p.aln, "", "") }()
}

// closeLink stops the agents' link. Its requests are long-lived streams:
// close, not drain.
func (p *Plane) closeLink() {
	p.linkMu.Lock()
	defer p.linkMu.Unlock()
	if p.as != nil {
		_ = p.as.Close()
	}
}

// Close stops the loops in the background and closes the store and the
// listeners.
func (p *Plane) Close() {
	p.closeLink()
	p.cancel()
	p.wg.Wait()
	if p.st != nil {
		_ = p.st.Close()
	}
	for _, l := range []net.Listener{p.aln, p.ln} {
		if l != nil {
			_ = l.Close()
		}
	}
}

// clusterCA returns the cluster's CA and join token: made by the first
// replica that starts, adopted by the others from the store.
func clusterCA(ctx context.Context, st *store.Store) (*pki.CA, pki.Token, error) {
	certPEM, keyPEM, err := pki.NewCA("kanga cluster CA")
	if err != nil {
		return nil, pki.Token{}, err
	}
	fresh, err := pki.LoadCA(certPEM, keyPEM)
	if err != nil {
		return nil, pki.Token{}, err
	}
	stored, err := st.EnsureClusterCA(ctx, store.ClusterCA{CertPEM: certPEM, KeyPEM: keyPEM, JoinSecret: pki.NewToken(fresh).Secret})
	if err != nil {
		return nil, pki.Token{}, err
	}
	ca, err := pki.LoadCA(stored.CertPEM, stored.KeyPEM)
	if err != nil {
		return nil, pki.Token{}, fmt.Errorf("the cluster CA in the store: %w", err)
	}
	return ca, pki.Token{CAHash: ca.Hash(), Secret: stored.JoinSecret}, nil
}
