package allinone

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
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
	"github.com/kanga-run/kanga/client"
	"github.com/kanga-run/kanga/internal/controlplane"
	"github.com/kanga-run/kanga/internal/hostlink"
	"github.com/kanga-run/kanga/internal/model"
	"github.com/kanga-run/kanga/internal/pki"
	"github.com/kanga-run/kanga/internal/server"
	"github.com/kanga-run/kanga/internal/store"
	"github.com/kanga-run/kanga/internal/tenant"
)

// ServerOptions configure `kanga server`: the control plane without a
// host of its own.
type ServerOptions struct {
	DataDir string
	Listen  string // host:port of the API (plain HTTP, bearer tokens)
	// LinkListen is host:port of the agents' endpoint (HTTPS, mTLS).
	LinkListen    string
	EtcdEndpoints []string
	ConfigPath    string
	Name          string // replica name; default hostname
	Version       string
	Logger        *slog.Logger
	// Ready, if set, is called once both listeners serve, with the API's
	// URL and the agents' join URL.
	Ready func(apiURL, joinURL string)
}

// JoinTokenFile is where `kanga server` writes the agents' join token.
func JoinTokenFile(dataDir string) string { return filepath.Join(dataDir, "join-token") }

// RunServer serves the API and the agents' link until ctx ends.
func RunServer(ctx context.Context, o ServerOptions) error {
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
	name := o.Name
	if name == "" {
		name, _ = os.Hostname()
	}
	apiLn, err := net.Listen("tcp", o.Listen)
	if err != nil {
		return fmt.Errorf("listening on %s: %w (choose another address with --listen)", o.Listen, err)
	}
	defer apiLn.Close()
	linkLn, err := net.Listen("tcp", o.LinkListen)
	if err != nil {
		return fmt.Errorf("listening on %s: %w (choose another address with --agent-listen)", o.LinkListen, err)
	}
	defer linkLn.Close()

	st, err := store.Open(ctx, store.Config{DataDir: dataDir, Endpoints: o.EtcdEndpoints, Logger: log})
	if err != nil {
		return fmt.Errorf("opening the store: %w", err)
	}
	defer st.Close()
	token, err := adminToken(dataDir)
	if err != nil {
		return err
	}
	if err := st.PutAdminToken(ctx, token, tenant.Default); err != nil {
		return fmt.Errorf("registering the admin token: %w", err)
	}
	if err := st.EnsureTenant(ctx, &api.Tenant{Name: tenant.Default, DefaultRuntime: model.DefaultRuntimeClass, CreatedAt: time.Now().UTC()}); err != nil {
		return fmt.Errorf("creating the default tenant: %w", err)
	}

	ca, joinToken, err := clusterCA(ctx, st)
	if err != nil {
		return err
	}
	if err := pki.WriteFile(JoinTokenFile(dataDir), []byte(joinToken.String()+"\n")); err != nil {
		return err
	}
	if err := pki.WriteFile(filepath.Join(dataDir, "ca.crt"), ca.CertPEM); err != nil {
		return err
	}
	sans := []string{"127.0.0.1", "localhost", name}
	if h, _, err := net.SplitHostPort(linkLn.Addr().String()); err == nil {
		sans = append(sans, h)
	}
	// One certificate serves the link and is the replica's client
	// certificate towards the agents' host APIs.
	cert, err := ca.ServingCert(name, pki.Servers, sans)
	if err != nil {
		return err
	}

	link := &hostlink.Server{Store: st, CA: ca, Token: joinToken, Logger: log, LeaseTTL: hostLeaseTTL}
	linkSrv := &http.Server{Handler: link.Handler(), TLSConfig: link.TLSConfig(cert), ReadHeaderTimeout: 10 * time.Second}
	dir := hostlink.NewDirectory(ctx, st, &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: ca.Pool(), MinVersion: tls.VersionTLS12})
	srv := server.New(st, nil, server.Options{Logger: log, Version: o.Version, Hosts: dir})
	apiSrv := &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: 10 * time.Second}

	// The default startup grace (the leader TTL): agents whose leases go
	// through a replica that just died need a moment to reconnect to
	// another before a new leader declares their hosts lost.
	cp := controlplane.New(controlplane.Config{Store: st, ID: name + "-" + strconv.Itoa(os.Getpid()), Logger: log, Policy: controlplane.DefaultPolicy})
	bg, stopBG := context.WithCancel(context.WithoutCancel(ctx))
	cpDone := make(chan struct{})
	go func() {
		defer close(cpDone)
		_ = cp.Run(bg)
	}()
	defer func() {
		stopBG()
		<-cpDone
	}()

	errc := make(chan error, 2)
	go func() { errc <- apiSrv.Serve(apiLn) }()
	go func() { errc <- linkSrv.ServeTLS(linkLn, "", "") }()

	apiURL := "http://" + apiLn.Addr().String()
	joinURL := "https://" + linkLn.Addr().String()
	if o.ConfigPath != "" {
		if err := client.WriteConfig(o.ConfigPath, client.Config{Addr: apiURL, Token: token}); err != nil {
			return err
		}
	}
	if err := os.WriteFile(PIDFile(dataDir), []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		return err
	}
	defer os.Remove(PIDFile(dataDir))
	log.Info("kanga server is up", "api", apiURL, "join", joinURL, "data_dir", dataDir)
	fmt.Fprintf(os.Stderr, "Join agents with:\n  kanga agent --join %s --token %s\n", joinURL, joinToken)
	if o.Ready != nil {
		o.Ready(apiURL, joinURL)
	}
	select {
	case <-ctx.Done():
	case err := <-errc:
		if !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("serving: %w", err)
		}
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	_ = apiSrv.Shutdown(sctx)
	_ = linkSrv.Shutdown(sctx)
	return nil
}

// clusterCA returns the cluster's CA and join token, making them if this
// is the first replica ever to start on the store.
func clusterCA(ctx context.Context, st *store.Store) (*pki.CA, pki.Token, error) {
	certPEM, keyPEM, err := pki.NewCA("kanga-ca")
	if err != nil {
		return nil, pki.Token{}, err
	}
	secret := make([]byte, 16)
	if _, err := rand.Read(secret); err != nil {
		return nil, pki.Token{}, err
	}
	got, err := st.EnsureClusterCA(ctx, store.ClusterCA{CertPEM: certPEM, KeyPEM: keyPEM, JoinSecret: hex.EncodeToString(secret)})
	if err != nil {
		return nil, pki.Token{}, err
	}
	ca, err := pki.LoadCA(got.CertPEM, got.KeyPEM)
	if err != nil {
		return nil, pki.Token{}, fmt.Errorf("the cluster CA in the store: %w", err)
	}
	return ca, pki.Token{CAHash: ca.Hash(), Secret: got.JoinSecret}, nil
}
