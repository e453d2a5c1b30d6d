package hostlink

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/client"
	"github.com/kanga-run/kanga/errdefs"
	"github.com/kanga-run/kanga/errdefs/errhttp"
	"github.com/kanga-run/kanga/internal/pki"
	"github.com/kanga-run/kanga/internal/server"
	"github.com/kanga-run/kanga/internal/store"
	"github.com/kanga-run/kanga/internal/tenant"
)

// The host API is the agent's side of logs, exec, stats, SLA and images.
// It speaks the public API's routes for these (so the SDK is its client
// and exec keeps its one framing) with two differences: only a server's
// certificate signed by the cluster CA gets in, and the bearer token is
// the tenant the server acts for, which the server authenticated already.

const (
	pathImageConfig = "/host/v1/imageconfig"
	// pathImage (DELETE ?ref=) removes the bearer tenant's image;
	// pathTenant (DELETE) everything the host keeps of the bearer tenant,
	// which was deleted.
	pathImage  = "/host/v1/image"
	pathTenant = "/host/v1/tenant"
	// pathCheckPorts answers server.PortChecker for the host: whether
	// ports can be published on it (its addresses, reserved ports and
	// listeners), so that the API refuses at admission what the agent
	// would refuse at start.
	pathCheckPorts = "/host/v1/checkports"
	// pathPing answers 204: the control plane asks whether a host whose
	// lease lapsed still answers (Prober).
	pathPing = "/host/v1/ping"
)

// hostRoutes are the public API routes the host API serves.
var hostRoutes = map[string]bool{
	"GET /v1/instances/{name}/logs":  true,
	"POST /v1/instances/{name}/exec": true,
	"GET /v1/instances/{name}/stats": true,
	"GET /v1/instances/{name}/sla":   true,
	"GET /v1/images":                 true,
	"POST /v1/images/import":         true,
	"POST /v1/images/pull":           true,
	"POST /v1/images/prewarm":        true,
}

// InstanceGetter reads an instance placed on this host (the Link).
type InstanceGetter interface {
	GetInstance(ctx context.Context, name string) (*api.Instance, error)
}

// hostAPIStore is the little of server.Store the host routes use: they
// read the instance, and authentication trusts the tenant the server names.
type hostAPIStore struct {
	server.Store // nil: the host routes call nothing else
	get          InstanceGetter
}

func (s hostAPIStore) GetInstance(ctx context.Context, name string) (*api.Instance, error) {
	return s.get.GetInstance(ctx, name)
}

// Purges: the control plane carries out a host's purges before it sends
// it an image (server.settle), so the host's own routes have none to do.
func (s hostAPIStore) Purges(context.Context, string) ([]store.Purge, error) { return nil, nil }

func (s hostAPIStore) LookupPrincipal(_ context.Context, token string) (store.Principal, error) {
	if err := tenant.Validate(token); err != nil {
		return store.Principal{}, fmt.Errorf("tenant %q: %w", token, errdefs.ErrUnauthenticated)
	}
	return store.Principal{Tenant: token, Scopes: []string{api.ScopeAll}}, nil
}

// HostAPITLS is the agent's host API listener configuration: its own
// certificate, and a required client certificate signed by the CA.
func HostAPITLS(creds *Credentials) *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{creds.Cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    creds.Pool(),
		MinVersion:   tls.VersionTLS12,
	}
}

// HostAPIHandler serves host's API to the control plane.
func HostAPIHandler(host server.Host, get InstanceGetter, log *slog.Logger) http.Handler {
	srv := server.New(hostAPIStore{get: get}, host, server.Options{Logger: log, HostAPI: true})
	inner := srv.Handler()
	mux := http.NewServeMux()
	methods := server.NewMethods()
	for _, r := range server.Routes {
		if hostRoutes[r.Method+" "+r.Pattern] {
			mux.Handle(r.Method+" "+r.Pattern, inner)
			methods.Add(r.Method, r.Pattern)
		}
	}
	methods.Add(http.MethodGet, pathImageConfig)
	methods.Add(http.MethodDelete, pathImage)
	methods.Add(http.MethodDelete, pathTenant)
	methods.Add(http.MethodGet, pathPing)
	mux.HandleFunc("GET "+pathPing, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("GET "+pathImageConfig, func(w http.ResponseWriter, r *http.Request) {
		t := strings.TrimSpace(strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "))
		if err := tenant.Validate(t); err != nil {
			writeError(w, fmt.Errorf("tenant: %v: %w", err, errdefs.ErrUnauthenticated))
			return
		}
		cfg, err := host.ImageConfig(tenant.WithName(r.Context(), t), r.URL.Query().Get("ref"))
		if err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, cfg)
	})
	remover := func(do func(ctx context.Context, rm server.ImageRemover, t string, r *http.Request) error) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			t := strings.TrimSpace(strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "))
			if err := tenant.Validate(t); err != nil {
				writeError(w, fmt.Errorf("tenant: %v: %w", err, errdefs.ErrUnauthenticated))
				return
			}
			rm, ok := host.(server.ImageRemover)
			if !ok {
				writeError(w, fmt.Errorf("this host cannot remove images: %w", errdefs.ErrNotImplemented))
				return
			}
			if err := do(tenant.WithName(r.Context(), t), rm, t, r); err != nil {
				writeError(w, err)
				return
			}
			w.WriteHeader(http.StatusNoContent)
		}
	}
	mux.HandleFunc("DELETE "+pathImage, remover(func(ctx context.Context, rm server.ImageRemover, _ string, r *http.Request) error {
		return rm.RemoveImage(ctx, r.URL.Query().Get("ref"))
	}))
	mux.HandleFunc("DELETE "+pathTenant, remover(func(ctx context.Context, rm server.ImageRemover, t string, _ *http.Request) error {
		return rm.RemoveTenant(ctx, t)
	}))
	if pc, ok := host.(server.PortChecker); ok {
		mux.HandleFunc("POST "+pathCheckPorts, func(w http.ResponseWriter, r *http.Request) {
			var ports []api.PortMapping
			if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&ports); err != nil {
				writeError(w, fmt.Errorf("published ports: %v: %w", err, errdefs.ErrInvalidArgument))
				return
			}
			if err := pc.CheckPorts(r.Context(), ports); err != nil {
				// The message without the class, which the server's side
				// wraps again.
				code, status := errdefs.Code(err), errhttp.ToHTTP(err)
				msg := err.Error()
				if c := errdefs.FromCode(code); c != nil {
					msg = strings.TrimSuffix(msg, ": "+c.Error())
				}
				writeJSON(w, status, api.Error{Code: code, Message: msg})
				return
			}
			w.WriteHeader(http.StatusNoContent)
		})
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		server.RefuseBody(r)
		if err := methods.NotAllowed(w, r); err != nil {
			writeError(w, err)
			return
		}
		writeError(w, fmt.Errorf("the host API has no route %s %s: %w", r.Method, r.URL.Path, errdefs.ErrNotFound))
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, err := pki.PeerIdentity(r.TLS)
		if err == nil && id.Org != pki.Servers {
			err = fmt.Errorf("only the control plane may call the host API, not %q (%s): %w", id.Name, id.Org, errdefs.ErrPermissionDenied)
		}
		if err != nil {
			server.RefuseBody(r)
			writeError(w, err)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// RemoteHost is a server.Host whose agent is on another machine: the
// control plane calls its host API.
type RemoteHost struct {
	rec  api.Host
	tls  *tls.Config
	hc   *http.Client
	base string
}

var (
	_ server.Host           = (*RemoteHost)(nil)
	_ server.PreviousLogger = (*RemoteHost)(nil)
	_ server.ImagePrewarmer = (*RemoteHost)(nil)
	_ server.ImageRemover   = (*RemoteHost)(nil)
	_ server.PortChecker    = (*RemoteHost)(nil)
)

// NewRemoteHost returns the client of host's API at rec.Address, with the
// server's client certificate in tlsCfg.
func NewRemoteHost(rec api.Host, tlsCfg *tls.Config) *RemoteHost {
	// Timeouts for a host that hangs (a frozen agent, a silent
	// partition): the handshake, the response headers (every host route
	// answers its headers at once, also logs --follow and pulls) and
	// HTTP/2 pings. Exec dials its own connection and ends with ctx.
	tr := &http.Transport{TLSClientConfig: tlsCfg, MaxIdleConnsPerHost: 8, ForceAttemptHTTP2: true,
		TLSHandshakeTimeout:   5 * time.Second,
		ResponseHeaderTimeout: 15 * time.Second,
		HTTP2:                 &http.HTTP2Config{SendPingTimeout: 5 * time.Second, PingTimeout: 5 * time.Second}}
	return &RemoteHost{rec: rec, tls: tlsCfg, hc: &http.Client{Transport: tr}, base: rec.Address}
}

func (h *RemoteHost) client(ctx context.Context) (*client.Client, error) {
	t, err := tenant.Name(ctx)
	if err != nil {
		return nil, err
	}
	return client.New(h.base, t, client.WithHTTPClient(h.hc), client.WithTLSConfig(h.tls), client.WithUserAgent("kanga-server"))
}

// Name implements server.Host.
func (h *RemoteHost) Name() string { return h.rec.Name }

// RuntimeClasses implements server.Host.
func (h *RemoteHost) RuntimeClasses() []string { return h.rec.RuntimeClasses }

// Capacity implements server.Host.
func (h *RemoteHost) Capacity() server.Capacity {
	return server.Capacity{CPUs: h.rec.Capacity.CPUs, Memory: h.rec.Capacity.MemoryBytes}
}

// ImageConfig implements server.Host.
func (h *RemoteHost) ImageConfig(ctx context.Context, ref string) (server.ImageConfig, error) {
	t, err := tenant.Name(ctx)
	if err != nil {
		return server.ImageConfig{}, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, h.base+pathImageConfig+"?ref="+url.QueryEscape(ref), nil)
	if err != nil {
		return server.ImageConfig{}, err
	}
	req.Header.Set("Authorization", "Bearer "+t)
	var cfg server.ImageConfig
	err = doJSON(h.hc, req, &cfg)
	return cfg, err
}

// RemoveImage implements server.ImageRemover.
func (h *RemoteHost) RemoveImage(ctx context.Context, ref string) error {
	t, err := tenant.Name(ctx)
	if err != nil {
		return err
	}
	return h.hostCall(ctx, http.MethodDelete, pathImage+"?ref="+url.QueryEscape(ref), t)
}

// RemoveTenant implements server.ImageRemover.
func (h *RemoteHost) RemoveTenant(ctx context.Context, name string) error {
	return h.hostCall(ctx, http.MethodDelete, pathTenant, name)
}

// hostCall sends a body-less request of the host API's own routes on
// behalf of tenant t.
func (h *RemoteHost) hostCall(ctx context.Context, method, path, t string) error {
	req, err := http.NewRequestWithContext(ctx, method, h.base+path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+t)
	return doJSON(h.hc, req, nil)
}

// CheckPorts implements server.PortChecker: the agent answers for its host.
func (h *RemoteHost) CheckPorts(ctx context.Context, ports []api.PortMapping) error {
	b, err := json.Marshal(ports)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.base+pathCheckPorts, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := h.hc.Do(req)
	if err != nil {
		return fmt.Errorf("host %s: %v: %w", h.rec.Name, err, errdefs.ErrUnavailable)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return readError(resp)
	}
	return nil
}

// ListImages implements server.Host.
func (h *RemoteHost) ListImages(ctx context.Context) ([]api.Image, error) {
	c, err := h.client(ctx)
	if err != nil {
		return nil, err
	}
	return c.ListImages(ctx)
}

// ImportImage implements server.Host.
func (h *RemoteHost) ImportImage(ctx context.Context, r io.Reader, progress func(api.Progress)) ([]api.Image, error) {
	c, err := h.client(ctx)
	if err != nil {
		return nil, err
	}
	return c.ImportImage(ctx, r, -1, progress)
}

// PullImage implements server.Host.
func (h *RemoteHost) PullImage(ctx context.Context, ref string, progress func(api.Progress)) (api.Image, error) {
	c, err := h.client(ctx)
	if err != nil {
		return api.Image{}, err
	}
	return c.PullImage(ctx, ref, progress)
}

// Logs implements server.Host.
func (h *RemoteHost) Logs(ctx context.Context, inst *api.Instance, container string, follow bool, w io.Writer) error {
	c, err := h.client(ctx)
	if err != nil {
		return err
	}
	rc, err := c.Logs(ctx, inst.Name, client.LogsOptions{Follow: follow, Container: container})
	if err != nil {
		return err
	}
	defer rc.Close()
	_, err = io.Copy(w, rc)
	return err
}

// PreviousLogs implements server.PreviousLogger: the agent's host API
// serves the run before the latest restart.
func (h *RemoteHost) PreviousLogs(ctx context.Context, inst *api.Instance, container string) (io.ReadCloser, error) {
	c, err := h.client(ctx)
	if err != nil {
		return nil, err
	}
	return c.Logs(ctx, inst.Name, client.LogsOptions{Container: container, Previous: true})
}

// PrewarmImage implements server.ImagePrewarmer on the agent's own host.
func (h *RemoteHost) PrewarmImage(ctx context.Context, ref string) (api.Image, bool, error) {
	c, err := h.client(ctx)
	if err != nil {
		return api.Image{}, false, err
	}
	res, err := c.PrewarmImage(ctx, ref, 1)
	if err != nil {
		return api.Image{}, false, err
	}
	pulled := len(res.Hosts) > 0 && res.Hosts[0].Pulled
	return res.Image, pulled, nil
}

// Exec implements server.Host.
func (h *RemoteHost) Exec(ctx context.Context, inst *api.Instance, req server.ExecRequest) (int, error) {
	c, err := h.client(ctx)
	if err != nil {
		return 0, err
	}
	return c.Exec(ctx, inst.Name, client.ExecOptions{
		Container: req.Container, Cmd: req.Cmd, Env: req.Env, WorkDir: req.WorkDir, TTY: req.TTY,
		Stdin: req.Stdin, Stdout: req.Stdout, Stderr: req.Stderr, Size: req.Size, Resize: req.Resize,
	})
}

// Stats implements server.Host.
func (h *RemoteHost) Stats(ctx context.Context, inst *api.Instance) (api.InstanceStats, error) {
	c, err := h.client(ctx)
	if err != nil {
		return api.InstanceStats{}, err
	}
	return c.Stats(ctx, inst.Name)
}

// SLA implements server.Host.
func (h *RemoteHost) SLA(ctx context.Context, inst *api.Instance) (api.SLAReport, error) {
	c, err := h.client(ctx)
	if err != nil {
		return api.SLAReport{}, err
	}
	return c.SLA(ctx, inst.Name)
}

// Directory is the server's server.Hosts: a RemoteHost per Ready host of
// the registry that has a host API address, kept current from the
// registry's watch.
type Directory struct {
	tls *tls.Config
	mu  sync.RWMutex
	m   map[string]*RemoteHost
}

var _ server.Hosts = (*Directory)(nil)

// HostWatcher is the registry's watch (*store.Store).
type HostWatcher interface {
	WatchHosts(ctx context.Context) <-chan []api.Host
}

// NewDirectory follows the registry until ctx ends. tlsCfg carries the
// server's client certificate and the CA.
func NewDirectory(ctx context.Context, w HostWatcher, tlsCfg *tls.Config) *Directory {
	d := &Directory{tls: tlsCfg, m: map[string]*RemoteHost{}}
	ch := w.WatchHosts(ctx)
	go func() {
		for hosts := range ch {
			d.update(hosts)
		}
	}()
	return d
}

func (d *Directory) update(hosts []api.Host) {
	d.mu.Lock()
	defer d.mu.Unlock()
	next := map[string]*RemoteHost{}
	for _, h := range hosts {
		if h.Status.Phase != api.HostReady || h.Address == "" {
			continue
		}
		if old, ok := d.m[h.Name]; ok && old.rec.Address == h.Address {
			old.rec = h // the transport, with its connections, is kept
			next[h.Name] = old
			continue
		}
		next[h.Name] = NewRemoteHost(h, d.tls)
	}
	d.m = next
}

// Host implements server.Hosts.
func (d *Directory) Host(name string) (server.Host, bool) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	h, ok := d.m[name]
	if !ok {
		return nil, false
	}
	return h, true
}

// All implements server.Hosts.
func (d *Directory) All() []server.Host {
	d.mu.RLock()
	defer d.mu.RUnlock()
	out := make([]server.Host, 0, len(d.m))
	for _, h := range d.m {
		out = append(out, h)
	}
	// In name order, so that "the first host that has the image" is the
	// same on every call.
	slices.SortFunc(out, func(a, b server.Host) int { return strings.Compare(a.Name(), b.Name()) })
	return out
}

func doJSON(hc *http.Client, req *http.Request, out any) error {
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("host API: %v: %w", err, errdefs.ErrUnavailable)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return readError(resp)
	}
	if out == nil {
		return nil
	}
	return jsonDecode(resp.Body, out)
}

// Prober tells whether a host whose lease lapsed still answers: its agent
// holds a link request open on this server, or its host API answers. It
// implements controlplane.Liveness.
type Prober struct {
	// Link is this server's end of the agents' link; nil: ask the host
	// API only (another replica may hold the link).
	Link *Server
	// TLS carries the server's client certificate and the CA, as for the
	// host API's other calls.
	TLS *tls.Config

	once sync.Once
	hc   *http.Client
}

// Alive returns how h answers, or why it does not. Any HTTP answer of the
// host API counts: the TLS handshake proved it is the host's agent (its
// certificate is the CA's), and an agent of another version may not know
// the ping route.
func (p *Prober) Alive(ctx context.Context, h *api.Host) (string, error) {
	if p.Link != nil && p.Link.Connected(h.Name) {
		return "its agent's link is connected", nil
	}
	if h.Address == "" {
		return "", fmt.Errorf("host %s has no link to this server and no host API: %w", h.Name, errdefs.ErrUnavailable)
	}
	p.once.Do(func() {
		// A connection of its own per probe: a pooled one that hangs
		// would answer for a host that no longer does.
		p.hc = &http.Client{Transport: &http.Transport{TLSClientConfig: p.TLS, DisableKeepAlives: true, ForceAttemptHTTP2: true}}
	})
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(h.Address, "/")+pathPing, nil)
	if err != nil {
		return "", fmt.Errorf("host %s: host API address %q: %v: %w", h.Name, h.Address, err, errdefs.ErrInvalidArgument)
	}
	resp, err := p.hc.Do(req)
	if err != nil {
		return "", fmt.Errorf("host %s: host API: %v: %w", h.Name, err, errdefs.ErrUnavailable)
	}
	resp.Body.Close()
	return "its host API answers", nil
}
