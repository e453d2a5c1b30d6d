// Package hostclient is the control plane's side of the calls it makes to
// hosts (control plane -> host): RemoteHost is a hostcontract.Host whose
// agent is on another machine, reached through its host API (package
// hostapi) with the control plane's client certificate; Directory keeps
// one per Ready host of the registry; Prober asks a host whose lease
// lapsed whether it still answers.
package hostclient

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/client"
	"github.com/kanga-run/kanga/errdefs"
	"github.com/kanga-run/kanga/internal/hostcontract"
	"github.com/kanga-run/kanga/internal/hostlink"
	"github.com/kanga-run/kanga/internal/requestid"
	"github.com/kanga-run/kanga/internal/tenant"
)

// RemoteHost is a hostcontract.Host whose agent is on another machine: the
// control plane calls its host API.
type RemoteHost struct {
	rec  api.Host
	tls  *tls.Config
	hc   *http.Client
	base string
	// api is the SDK on the host API, with no token: the host admits the
	// control plane's certificate, and each call names its tenant.
	api *client.Client
	// apiErr is why the SDK could not be made (an unusable address).
	apiErr error
}

var (
	_ hostcontract.Host           = (*RemoteHost)(nil)
	_ hostcontract.PreviousLogger = (*RemoteHost)(nil)
	_ hostcontract.ImagePrewarmer = (*RemoteHost)(nil)
	_ hostcontract.ImageRemover   = (*RemoteHost)(nil)
	_ hostcontract.Killer         = (*RemoteHost)(nil)
	_ hostcontract.ProcessLister  = (*RemoteHost)(nil)
	_ hostcontract.PortChecker    = (*RemoteHost)(nil)
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
	h := &RemoteHost{rec: rec, tls: tlsCfg, hc: &http.Client{Transport: tr}, base: rec.Address}
	h.api, h.apiErr = client.New(h.base, "", client.WithHTTPClient(h.hc), client.WithTLSConfig(h.tls), client.WithUserAgent("kanga-server"))
	return h
}

// client is the SDK acting for the tenant in ctx (the Kanga-Tenant
// header).
func (h *RemoteHost) client(ctx context.Context) (*client.Client, error) {
	t, err := tenant.Name(ctx)
	if err != nil {
		return nil, err
	}
	if h.apiErr != nil {
		return nil, fmt.Errorf("host %s: host API address %q: %w", h.rec.Name, h.base, h.apiErr)
	}
	return h.api.ForTenant(t), nil
}

// Name implements hostcontract.Host.
func (h *RemoteHost) Name() string { return h.rec.Name }

// RuntimeClasses implements hostcontract.Host.
func (h *RemoteHost) RuntimeClasses() []string { return h.rec.RuntimeClasses }

// Capacity implements hostcontract.Host.
func (h *RemoteHost) Capacity() hostcontract.Capacity {
	return hostcontract.Capacity{CPUs: h.rec.Capacity.CPUs, Memory: h.rec.Capacity.MemoryBytes, StartSlots: h.rec.Capacity.StartSlots, Pods: h.rec.Capacity.Pods, Disk: h.rec.Capacity.DiskBytes}
}

// ImageConfig implements hostcontract.Host.
func (h *RemoteHost) ImageConfig(ctx context.Context, ref string) (hostcontract.ImageConfig, error) {
	t, err := tenant.Name(ctx)
	if err != nil {
		return hostcontract.ImageConfig{}, err
	}
	req, err := h.newRequest(ctx, http.MethodGet, hostlink.PathImageConfig+"?ref="+url.QueryEscape(ref), t, nil)
	if err != nil {
		return hostcontract.ImageConfig{}, err
	}
	var cfg hostlink.ImageConfig
	err = doJSON(h.hc, req, &cfg)
	return cfg.ForHost(), err
}

// RemoveImage implements hostcontract.ImageRemover.
func (h *RemoteHost) RemoveImage(ctx context.Context, ref string) error {
	t, err := tenant.Name(ctx)
	if err != nil {
		return err
	}
	return h.hostCall(ctx, http.MethodDelete, hostlink.PathImage+"?ref="+url.QueryEscape(ref), t)
}

// RemoveTenant implements hostcontract.ImageRemover.
func (h *RemoteHost) RemoveTenant(ctx context.Context, name string) error {
	return h.hostCall(ctx, http.MethodDelete, hostlink.PathTenant, name)
}

// CreateVolume implements hostcontract.VolumeHost.
func (h *RemoteHost) CreateVolume(ctx context.Context, id string, size int64, encrypted bool, key []byte) error {
	b, err := json.Marshal(hostlink.VolumeCreate{ID: id, Size: size, Encrypted: encrypted, Key: key})
	if err != nil {
		return err
	}
	defer clear(b)
	req, err := h.newRequest(ctx, http.MethodPost, hostlink.PathVolumes, "", bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	return doJSON(h.hc, req, nil)
}

// RemoveVolume implements hostcontract.VolumeHost.
func (h *RemoteHost) RemoveVolume(ctx context.Context, id string) error {
	return h.hostCall(ctx, http.MethodDelete, hostlink.PathVolumes+"?id="+url.QueryEscape(id), "")
}

// hostCall sends a body-less request of the host API's own routes on
// behalf of tenant t.
func (h *RemoteHost) hostCall(ctx context.Context, method, path, t string) error {
	req, err := h.newRequest(ctx, method, path, t, nil)
	if err != nil {
		return err
	}
	return doJSON(h.hc, req, nil)
}

// newRequest is a request of the host API's own routes; t, if set, is the
// tenant it is for.
func (h *RemoteHost) newRequest(ctx context.Context, method, path, t string, body io.Reader) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, method, h.base+path, body)
	if err != nil {
		return nil, err
	}
	if t != "" {
		req.Header.Set(api.HeaderTenant, t)
	}
	if id := requestid.From(ctx); id != "" {
		req.Header.Set(api.HeaderRequestID, id)
	}
	return req, nil
}

// devicesPath is PathDevices for instance name.
func devicesPath(name string) string {
	return strings.Replace(hostlink.PathDevices, "{name}", url.PathEscape(name), 1)
}

// AttachDevice implements hostcontract.DeviceAttacher.
func (h *RemoteHost) AttachDevice(ctx context.Context, inst *api.Instance, dr api.DeviceRequest) ([]string, error) {
	b, err := json.Marshal(dr)
	if err != nil {
		return nil, err
	}
	req, err := h.newRequest(ctx, http.MethodPost, devicesPath(inst.Name), inst.Tenant, bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	var names []string
	if err := doJSON(h.hc, req, &names); err != nil {
		return nil, err
	}
	return names, nil
}

// DetachDevice implements hostcontract.DeviceAttacher.
func (h *RemoteHost) DetachDevice(ctx context.Context, inst *api.Instance, device string) error {
	return h.hostCall(ctx, http.MethodDelete, devicesPath(inst.Name)+"?name="+url.QueryEscape(device), inst.Tenant)
}

// CheckPorts implements hostcontract.PortChecker: the agent answers for its host.
func (h *RemoteHost) CheckPorts(ctx context.Context, ports []api.PortMapping) error {
	b, err := json.Marshal(ports)
	if err != nil {
		return err
	}
	req, err := h.newRequest(ctx, http.MethodPost, hostlink.PathCheckPorts, "", bytes.NewReader(b))
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
		return hostlink.ReadError(resp)
	}
	return nil
}

// ListImages implements hostcontract.Host.
func (h *RemoteHost) ListImages(ctx context.Context) ([]api.Image, error) {
	c, err := h.client(ctx)
	if err != nil {
		return nil, err
	}
	return c.ListImages(ctx)
}

// ImportImage implements hostcontract.Host.
func (h *RemoteHost) ImportImage(ctx context.Context, r io.Reader, progress func(api.Progress)) ([]api.Image, error) {
	c, err := h.client(ctx)
	if err != nil {
		return nil, err
	}
	return c.ImportImage(ctx, r, -1, progress)
}

// PullImage implements hostcontract.Host.
func (h *RemoteHost) PullImage(ctx context.Context, ref string, progress func(api.Progress)) (api.Image, error) {
	c, err := h.client(ctx)
	if err != nil {
		return api.Image{}, err
	}
	return c.PullImage(ctx, ref, progress)
}

// Logs implements hostcontract.Host.
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

// PreviousLogs implements hostcontract.PreviousLogger: the agent's host API
// serves the run before the latest restart.
func (h *RemoteHost) PreviousLogs(ctx context.Context, inst *api.Instance, container string) (io.ReadCloser, error) {
	c, err := h.client(ctx)
	if err != nil {
		return nil, err
	}
	return c.Logs(ctx, inst.Name, client.LogsOptions{Container: container, Previous: true})
}

// PrewarmImage implements hostcontract.ImagePrewarmer on the agent's own host.
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

// Exec implements hostcontract.Host.
func (h *RemoteHost) Exec(ctx context.Context, inst *api.Instance, req hostcontract.ExecRequest) (int, error) {
	c, err := h.client(ctx)
	if err != nil {
		return 0, err
	}
	return c.Exec(ctx, inst.Name, client.ExecOptions{
		Container: req.Container, Cmd: req.Cmd, Env: req.Env, WorkDir: req.WorkDir, TTY: req.TTY,
		Stdin: req.Stdin, Stdout: req.Stdout, Stderr: req.Stderr, Size: req.Size, Resize: req.Resize,
	})
}

// Stats implements hostcontract.Host.
func (h *RemoteHost) Stats(ctx context.Context, inst *api.Instance) (api.InstanceStats, error) {
	c, err := h.client(ctx)
	if err != nil {
		return api.InstanceStats{}, err
	}
	return c.Stats(ctx, inst.Name)
}

// Top implements hostcontract.ProcessLister.
func (h *RemoteHost) Top(ctx context.Context, inst *api.Instance) ([]api.Process, error) {
	c, err := h.client(ctx)
	if err != nil {
		return nil, err
	}
	return c.Top(ctx, inst.Name)
}

// Kill implements hostcontract.Killer.
func (h *RemoteHost) Kill(ctx context.Context, inst *api.Instance, container string, sig syscall.Signal) error {
	c, err := h.client(ctx)
	if err != nil {
		return err
	}
	return c.KillInstance(ctx, inst.Name, client.KillOptions{Signal: strconv.Itoa(int(sig)), Container: container})
}

// SLA implements hostcontract.Host.
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
func (d *Directory) Host(name string) (hostcontract.Host, bool) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	h, ok := d.m[name]
	if !ok {
		return nil, false
	}
	return h, true
}

// All implements server.Hosts.
func (d *Directory) All() []hostcontract.Host {
	d.mu.RLock()
	defer d.mu.RUnlock()
	out := make([]hostcontract.Host, 0, len(d.m))
	for _, h := range d.m {
		out = append(out, h)
	}
	// In name order, so that "the first host that has the image" is the
	// same on every call.
	slices.SortFunc(out, func(a, b hostcontract.Host) int { return strings.Compare(a.Name(), b.Name()) })
	return out
}

func doJSON(hc *http.Client, req *http.Request, out any) error {
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("host API: %v: %w", err, errdefs.ErrUnavailable)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return hostlink.ReadError(resp)
	}
	if out == nil {
		return nil
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// Prober tells whether a host whose lease lapsed still answers: its agent
// holds a link request open on this server, or its host API answers. It
// implements controlplane.Liveness.
type Prober struct {
	// Link is this server's end of the agents' link (hostlink.Server);
	// nil: ask the host API only (another replica may hold the link).
	Link interface{ Connected(host string) bool }
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
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(h.Address, "/")+hostlink.PathPing, nil)
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
