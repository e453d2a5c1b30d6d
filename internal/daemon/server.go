// Package daemon assembles the two processes of a multi-host pool:
// `kanga server` (the control plane: API, store, scheduler loop, failure
// detector, CA and the agents' link) and `kanga agent` (one per host: its
// own containerd, CNI network and instance runners, driven over the link).
// `kanga up`, both in one process, stays in package allinone.
package daemon

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
	"strconv"
	"time"

	"github.com/kanga-run/kanga/client"
	"github.com/kanga-run/kanga/internal/agent/image"
	"github.com/kanga-run/kanga/internal/allinone"
	"github.com/kanga-run/kanga/internal/controlplane"
	"github.com/kanga-run/kanga/internal/hostlink/hostclient"
	"github.com/kanga-run/kanga/internal/hostlink/join"
	"github.com/kanga-run/kanga/internal/hostlink/linkserver"
	"github.com/kanga-run/kanga/internal/model"
	"github.com/kanga-run/kanga/internal/netview"
	"github.com/kanga-run/kanga/internal/pki"
	"github.com/kanga-run/kanga/internal/server"
	"github.com/kanga-run/kanga/internal/store"
)

// ServerOptions configure `kanga server`.
type ServerOptions struct {
	DataDir string
	// Listen is the public API's address: HTTPS with the cluster CA's
	// certificate and bearer tokens, or plain HTTP (as kanga up serves
	// it) with PlainAPI.
	Listen   string
	PlainAPI bool
	// AgentListen is the agents' link: HTTPS with the cluster CA, client
	// certificates required past the join.
	AgentListen string
	// SANs are extra names and IPs for the serving certificate, besides
	// 127.0.0.1, localhost and the hostname.
	SANs          []string
	EtcdEndpoints []string
	// ReplicaName names this replica in the control plane's election
	// (default: hostname and pid).
	ReplicaName string
	ConfigPath  string // client config to write; empty: don't
	Version     string
	// InsecureRegistries are registries every agent may pull from on
	// loopback, link-local or private addresses, added to each agent's
	// own list when it registers.
	InsecureRegistries []string
	// Ports is the operator's policy for published ports (the server's
	// own ports are added to its reserved ones); Security bounds what
	// tenants may be allowed.
	Ports    model.PortPolicy
	Security model.SecurityBounds
	Logger   *slog.Logger
	// Ready, if set, is called once both listeners serve.
	Ready func(apiAddr, agentAddr string)
	// Failure tunes the failure detector.
	Failure allinone.FailureDetection
	allinone.Defaults
}

// Files a server writes to its data dir.
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

// RunServer serves until ctx ends.
func RunServer(ctx context.Context, o ServerOptions) error {
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
	ln, err := net.Listen("tcp", o.Listen)
	if err != nil {
		return fmt.Errorf("listening on %s: %w (choose another address with --listen)", o.Listen, err)
	}
	defer ln.Close()
	aln, err := net.Listen("tcp", o.AgentListen)
	if err != nil {
		return fmt.Errorf("listening on %s: %w (choose another address with --agent-listen)", o.AgentListen, err)
	}
	defer aln.Close()

	st, err := store.Open(ctx, store.Config{DataDir: dataDir, Endpoints: o.EtcdEndpoints, Logger: log})
	if err != nil {
		return fmt.Errorf("opening the store: %w", err)
	}
	defer st.Close()
	adminTok, err := allinone.EnsureAdmin(ctx, st, dataDir)
	if err != nil {
		return err
	}
	ca, joinTok, err := clusterCA(ctx, st)
	if err != nil {
		return err
	}
	hostname, _ := os.Hostname()
	sans := append([]string{"127.0.0.1", "localhost", hostname}, o.SANs...)
	for _, l := range []net.Listener{ln, aln} {
		if h, _, err := net.SplitHostPort(l.Addr().String()); err == nil {
			sans = append(sans, h)
		}
	}
	replica := o.ReplicaName
	if replica == "" {
		replica = hostname + "-" + strconv.Itoa(os.Getpid())
	}
	// One certificate serves the API and the agents' link and, as a client
	// certificate of organization Servers, calls the agents' host API.
	cert, err := ca.ServingCert(replica, pki.Servers, sans)
	if err != nil {
		return fmt.Errorf("issuing the server certificate: %w", err)
	}
	if err := pki.WriteFile(filepath.Join(dataDir, JoinTokenFile), []byte(joinTok.String()+"\n")); err != nil {
		return err
	}
	if err := pki.WriteFile(filepath.Join(dataDir, CAFile), ca.CertPEM); err != nil {
		return err
	}

	bg, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	clientTLS := &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: ca.Pool(), MinVersion: tls.VersionTLS12}
	// The agents' link: made before the control plane, whose failure
	// detector asks it whether a host without a lease is still connected
	// before it asks the host's API.
	link := &linkserver.Server{Store: st, CA: ca, Token: joinTok, Logger: log, LeaseTTL: hostLeaseTTL,
		InsecureRegistries: o.InsecureRegistries}
	cpDone := make(chan struct{})
	cpCfg := controlplane.Config{Store: st, ID: replica, Logger: log, Policy: controlplane.DefaultPolicy}
	o.Failure.Apply(&cpCfg, "", &hostclient.Prober{Link: link, TLS: clientTLS.Clone()})
	cp := controlplane.New(cpCfg)
	go func() {
		defer close(cpDone)
		_ = cp.Run(bg)
	}()
	defer func() { cancel(); <-cpDone }()

	dir := hostclient.NewDirectory(bg, st, clientTLS)
	ports := o.Ports
	ports.ReserveAddress("the Kanga API", ln.Addr().String())
	ports.ReserveAddress("the agents' link", aln.Addr().String())
	allinone.ReserveEtcd(&ports, o.EtcdEndpoints)
	apiOpts.Logger, apiOpts.Version, apiOpts.Hosts, apiOpts.Replica = log, o.Version, dir, replica
	apiOpts.JoinTokens = &join.Authority{Store: st, CA: ca}
	apiOpts.Ports, apiOpts.Security = ports, o.Security
	api := server.New(st, nil, apiOpts)
	hs := server.NewHTTPServer(api.Handler(), server.DefaultLimits, log)
	// The agents' tenant isolation follows this view of addresses,
	// subnets and policies.
	nv := netview.New(st, log)
	nvDone := make(chan struct{})
	go func() { defer close(nvDone); nv.Run(bg) }()
	defer func() { cancel(); <-nvDone }()
	link.NetView = nv
	as := server.NewHTTPServer(link.Handler(), server.DefaultLimits, log)
	as.TLSConfig = link.TLSConfig(cert)
	// The lease is held while the agent's heartbeat request is open, and a
	// hung agent, or one behind a partition that drops packets silently,
	// keeps its connection open until TCP gives up minutes later: the
	// server's writes still land in socket buffers. An HTTP/2 ping that
	// goes unanswered closes the connection, and the lease then runs out
	// as after a crash.
	as.HTTP2 = &http.HTTP2Config{SendPingTimeout: linkPingIdle, PingTimeout: linkPingTimeout}
	serveErr := make(chan error, 2)
	apiAddr := "https://" + ln.Addr().String()
	cfg := client.Config{Addr: apiAddr, Token: adminTok, CACert: string(ca.CertPEM)}
	if o.PlainAPI {
		apiAddr = "http://" + ln.Addr().String()
		cfg = client.Config{Addr: apiAddr, Token: adminTok}
		go func() { serveErr <- hs.Serve(ln) }()
	} else {
		hs.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		go func() { serveErr <- hs.ServeTLS(ln, "", "") }()
	}
	go func() { serveErr <- as.ServeTLS(aln, "", "") }()

	agentAddr := "https://" + aln.Addr().String()
	if o.ConfigPath != "" {
		if err := client.WriteConfig(o.ConfigPath, cfg); err != nil {
			return err
		}
	}
	if err := os.WriteFile(allinone.PIDFile(dataDir), []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		return err
	}
	defer os.Remove(allinone.PIDFile(dataDir))
	log.Info("kanga server is up", "api", apiAddr, "agents", agentAddr, "data_dir", dataDir, "replica", replica,
		"join_token_file", filepath.Join(dataDir, JoinTokenFile))
	if o.Ready != nil {
		o.Ready(apiAddr, agentAddr)
	}
	select {
	case <-ctx.Done():
	case err := <-serveErr:
		if !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("serving: %w", err)
		}
	}
	log.Info("shutting down; agents keep their instances running")
	sctx, scancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer scancel()
	_ = hs.Shutdown(sctx)
	// The link's requests are long-lived streams: close, not drain.
	_ = as.Close()
	return nil
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
