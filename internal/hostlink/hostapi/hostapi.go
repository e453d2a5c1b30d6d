// Package hostapi is the host's side of the calls the control plane makes
// to a host (control plane -> host): logs, exec, stats, SLA and images,
// the kubelet API model. The agent serves it on its own mTLS listener; its
// client is package hostclient.
//
// The handler is built from the host's functions (package hostcontract),
// not from the public API server. Only the control plane may call it: the
// caller must present a client certificate signed by the cluster CA with
// the control plane's role (pki.Servers); a host's certificate is refused
// with 403 and a caller without one with 401. There are no tenant tokens:
// the control plane authenticated and authorized the tenant's request
// already, and names the tenant it acts for in the Kanga-Tenant header;
// the host serves only instances of that tenant placed on itself.
//
// The instance and image routes have the public API's paths and formats
// (so the SDK is the client and exec keeps its one framing); the host's
// own routes are under /host/v1.
package hostapi

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"syscall"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
	"github.com/kanga-run/kanga/errdefs/errhttp"
	"github.com/kanga-run/kanga/internal/hostcontract"
	"github.com/kanga-run/kanga/internal/hostlink"
	"github.com/kanga-run/kanga/internal/hostlink/join"
	"github.com/kanga-run/kanga/internal/httpserver"
	"github.com/kanga-run/kanga/internal/httpstream"
	"github.com/kanga-run/kanga/internal/pki"
	"github.com/kanga-run/kanga/internal/requestid"
	"github.com/kanga-run/kanga/internal/tenant"
)

// InstanceGetter reads an instance placed on this host (the agent's link,
// hostlink.Link), for the tenant in ctx.
type InstanceGetter interface {
	GetInstance(ctx context.Context, name string) (*api.Instance, error)
}

// TLS is the host API listener's configuration: the host's certificate,
// and a required client certificate signed by the CA. Which certificates
// may call is the handler's check (the role).
func TLS(creds *join.Credentials) *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{creds.Cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    creds.Pool(),
		MinVersion:   tls.VersionTLS12,
	}
}

// maxBody bounds the JSON bodies of the host API (not image archives).
const maxBody = 1 << 20

type handler struct {
	host  hostcontract.Host
	insts InstanceGetter
	log   *slog.Logger
}

// route is one endpoint; tenant routes get the tenant in their context.
type route struct {
	method, pattern string
	tenant          bool
	serve           func(*handler, http.ResponseWriter, *http.Request) error
}

var routes = []route{
	{"GET", "/v1/instances/{name}/logs", true, (*handler).logs},
	{"POST", "/v1/instances/{name}/exec", true, (*handler).exec},
	{"GET", "/v1/instances/{name}/stats", true, (*handler).stats},
	{"POST", "/v1/instances/{name}/kill", true, (*handler).kill},
	{"GET", "/v1/instances/{name}/top", true, (*handler).top},
	{"GET", "/v1/instances/{name}/sla", true, (*handler).sla},
	{"GET", "/v1/images", true, (*handler).listImages},
	{"POST", "/v1/images/import", true, (*handler).importImage},
	{"POST", "/v1/images/pull", true, (*handler).pullImage},
	{"POST", "/v1/images/prewarm", true, (*handler).prewarmImage},
	{"GET", hostlink.PathImageConfig, true, (*handler).imageConfig},
	{"DELETE", hostlink.PathImage, true, (*handler).removeImage},
	{"DELETE", hostlink.PathTenant, true, (*handler).removeTenant},
	{"POST", hostlink.PathCheckPorts, false, (*handler).checkPorts},
	{"POST", hostlink.PathDevices, true, (*handler).attachDevice},
	{"DELETE", hostlink.PathDevices, true, (*handler).detachDevice},
	{"POST", hostlink.PathVolumes, false, (*handler).createVolume},
	{"DELETE", hostlink.PathVolumes, false, (*handler).removeVolume},
	{"GET", hostlink.PathMetrics, false, (*handler).metrics},
	{"GET", hostlink.PathPing, false, func(_ *handler, w http.ResponseWriter, _ *http.Request) error {
		w.WriteHeader(http.StatusNoContent)
		return nil
	}},
}

// Handler serves host's API to the control plane.
func Handler(host hostcontract.Host, insts InstanceGetter, log *slog.Logger) http.Handler {
	if log == nil {
		log = slog.Default()
	}
	h := &handler{host: host, insts: insts, log: log.With("component", "hostapi")}
	mux := http.NewServeMux()
	methods := httpserver.NewMethods()
	for _, rt := range routes {
		rt := rt
		mux.HandleFunc(rt.method+" "+rt.pattern, func(w http.ResponseWriter, r *http.Request) {
			if rt.tenant {
				t, err := tenantOf(r)
				if err != nil {
					httpserver.RefuseBody(r)
					hostlink.WriteError(w, err)
					return
				}
				r = r.WithContext(tenant.WithName(r.Context(), t))
			}
			if err := rt.serve(h, w, r); err != nil {
				hostlink.WriteError(w, err)
			}
		})
		methods.Add(rt.method, rt.pattern)
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		httpserver.RefuseBody(r)
		if err := methods.NotAllowed(w, r); err != nil {
			hostlink.WriteError(w, err)
			return
		}
		hostlink.WriteError(w, fmt.Errorf("the host API has no route %s %s: %w", r.Method, r.URL.Path, errdefs.ErrNotFound))
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := Authorize(r.TLS); err != nil {
			httpserver.RefuseBody(r)
			hostlink.WriteError(w, err)
			return
		}
		// The request ID is the control plane's, so that its log and the
		// host's tell the same story.
		if id := r.Header.Get(api.HeaderRequestID); requestid.Valid(id) {
			r = r.WithContext(requestid.With(r.Context(), id))
		}
		mux.ServeHTTP(w, r)
	})
}

// Authorize admits the control plane's certificate only: Unauthenticated
// without a certificate of the cluster CA, PermissionDenied for any other
// role (a host's agent).
func Authorize(cs *tls.ConnectionState) error {
	id, err := pki.PeerIdentity(cs)
	if err != nil {
		return err
	}
	if id.Org != pki.Servers {
		return fmt.Errorf("only the control plane may call the host API, not %q (%s): %w", id.Name, id.Org, errdefs.ErrPermissionDenied)
	}
	return nil
}

// tenantOf reads the tenant the control plane acts for.
func tenantOf(r *http.Request) (string, error) {
	t := r.Header.Get(api.HeaderTenant)
	if t == "" {
		return "", fmt.Errorf("header %s: the control plane names the tenant it acts for: %w", api.HeaderTenant, errdefs.ErrInvalidArgument)
	}
	if err := tenant.Validate(t); err != nil {
		return "", fmt.Errorf("header %s: %v: %w", api.HeaderTenant, err, errdefs.ErrInvalidArgument)
	}
	return t, nil
}

// instance reads the named instance of the request's tenant, which must be
// placed on this host: the host serves nothing of another tenant's, nor
// of another host's, whatever the caller asks.
func (h *handler) instance(r *http.Request) (*api.Instance, error) {
	ctx := r.Context()
	t, err := tenant.Name(ctx)
	if err != nil {
		return nil, err
	}
	name := r.PathValue("name")
	inst, err := h.insts.GetInstance(ctx, name)
	if err != nil {
		return nil, err
	}
	if inst.Tenant != t || inst.Status.Host != h.host.Name() {
		return nil, fmt.Errorf("instance %q of tenant %q is not on host %s: %w", name, t, h.host.Name(), errdefs.ErrNotFound)
	}
	return inst, nil
}

func (h *handler) logs(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	follow, err := httpstream.BoolParam(r, "follow")
	if err != nil {
		return err
	}
	previous, err := httpstream.BoolParam(r, "previous")
	if err != nil {
		return err
	}
	inst, err := h.instance(r)
	if err != nil {
		return err
	}
	container, err := httpstream.PickContainer(inst, r.URL.Query().Get("container"))
	if err != nil {
		return err
	}
	var rc io.ReadCloser
	if previous {
		pl, ok := h.host.(hostcontract.PreviousLogger)
		if !ok {
			return fmt.Errorf("logs of a previous run of instance %q: this host keeps one log per container; drop previous=true: %w", inst.Name, errdefs.ErrNotImplemented)
		}
		if rc, err = pl.PreviousLogs(ctx, inst, container); err != nil {
			return err
		}
		defer rc.Close()
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	fw := httpstream.NewFlushWriter(w)
	if rc != nil {
		_, err = io.Copy(fw, rc)
	} else {
		err = h.host.Logs(ctx, inst, container, follow, fw)
	}
	if err != nil && ctx.Err() == nil {
		// The status line is gone; the best we can do is say so in-band.
		h.log.Warn("logs ended with an error", "instance", inst.Name, "err", err)
		fmt.Fprintf(w, "\nkanga: logs ended: %v\n", err)
	}
	return nil
}

func (h *handler) exec(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	e, err := httpstream.ParseExec(r)
	if err != nil {
		return err
	}
	inst, err := h.instance(r)
	if err != nil {
		return err
	}
	container, err := httpstream.PickContainer(inst, e.Container)
	if err != nil {
		return err
	}
	if err := httpstream.CheckExec(inst, container); err != nil {
		return err
	}
	return httpstream.ServeExec(w, e, container, func(req hostcontract.ExecRequest) (int, error) {
		return h.host.Exec(ctx, inst, req)
	})
}

func (h *handler) stats(w http.ResponseWriter, r *http.Request) error {
	inst, err := h.instance(r)
	if err != nil {
		return err
	}
	st, err := h.host.Stats(r.Context(), inst)
	if err != nil {
		return err
	}
	hostlink.WriteJSON(w, http.StatusOK, st)
	return nil
}

// top lists the processes of the instance's containers.
func (h *handler) top(w http.ResponseWriter, r *http.Request) error {
	pl, ok := h.host.(hostcontract.ProcessLister)
	if !ok {
		return fmt.Errorf("this host cannot list processes: %w", errdefs.ErrNotImplemented)
	}
	inst, err := h.instance(r)
	if err != nil {
		return err
	}
	procs, err := pl.Top(r.Context(), inst)
	if err != nil {
		return err
	}
	hostlink.WriteJSON(w, http.StatusOK, api.ProcessList{Items: procs})
	return nil
}

// kill signals the instance's containers; the server has checked the
// signal and the container.
func (h *handler) kill(w http.ResponseWriter, r *http.Request) error {
	k, ok := h.host.(hostcontract.Killer)
	if !ok {
		return fmt.Errorf("this host cannot signal containers: %w", errdefs.ErrNotImplemented)
	}
	inst, err := h.instance(r)
	if err != nil {
		return err
	}
	n, err := strconv.Atoi(r.URL.Query().Get("signal"))
	if err != nil || n < 1 || n > 64 {
		return fmt.Errorf("signal: %q is not a signal number: %w", r.URL.Query().Get("signal"), errdefs.ErrInvalidArgument)
	}
	if err := k.Kill(r.Context(), inst, r.URL.Query().Get("container"), syscall.Signal(n)); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (h *handler) sla(w http.ResponseWriter, r *http.Request) error {
	inst, err := h.instance(r)
	if err != nil {
		return err
	}
	rep, err := h.host.SLA(r.Context(), inst)
	if err != nil {
		return err
	}
	hostlink.WriteJSON(w, http.StatusOK, rep)
	return nil
}

func (h *handler) listImages(w http.ResponseWriter, r *http.Request) error {
	imgs, err := h.host.ListImages(r.Context())
	if err != nil {
		return err
	}
	if imgs == nil {
		imgs = []api.Image{}
	}
	hostlink.WriteJSON(w, http.StatusOK, api.ImageList{Items: imgs})
	return nil
}

func (h *handler) importImage(w http.ResponseWriter, r *http.Request) error {
	// Progress is written while the archive is still being read; without
	// full duplex net/http discards or closes the unread body at the first
	// write.
	_ = http.NewResponseController(w).EnableFullDuplex()
	httpserver.StreamBody(r)
	ps := httpstream.NewProgress(w, httpstream.NewFlushWriter(w))
	imgs, err := h.host.ImportImage(r.Context(), r.Body, httpstream.NotDone(ps.Send))
	httpserver.FinishBody(r)
	if err != nil {
		return ps.Fail(err)
	}
	ps.Done(api.Progress{Status: "imported", Done: true, Images: imgs})
	return nil
}

func (h *handler) pullImage(w http.ResponseWriter, r *http.Request) error {
	var req api.PullRequest
	if err := hostlink.DecodeBody(w, r, maxBody, &req, "pull request"); err != nil {
		return err
	}
	if req.Ref == "" {
		return fmt.Errorf("ref is empty: name the image to pull: %w", errdefs.ErrInvalidArgument)
	}
	ps := httpstream.NewProgress(w, httpstream.NewFlushWriter(w))
	img, err := h.host.PullImage(r.Context(), req.Ref, httpstream.NotDone(ps.Send))
	if err != nil {
		return ps.Fail(err)
	}
	ps.Done(api.Progress{Status: "pulled", Done: true, Images: []api.Image{img}})
	return nil
}

// prewarmImage makes the image ready on this host; the control plane
// chose the hosts.
func (h *handler) prewarmImage(w http.ResponseWriter, r *http.Request) error {
	var req api.PrewarmRequest
	if err := hostlink.DecodeBody(w, r, maxBody, &req, "prewarm request"); err != nil {
		return err
	}
	if req.Ref == "" {
		return fmt.Errorf("ref is empty: name the image to prewarm: %w", errdefs.ErrInvalidArgument)
	}
	p, ok := h.host.(hostcontract.ImagePrewarmer)
	if !ok {
		return fmt.Errorf("host %s cannot prewarm images: %w", h.host.Name(), errdefs.ErrNotImplemented)
	}
	img, pulled, err := p.PrewarmImage(r.Context(), req.Ref)
	if err != nil {
		return err
	}
	hostlink.WriteJSON(w, http.StatusOK, api.PrewarmResult{Image: img, Hosts: []api.PrewarmedHost{{Host: h.host.Name(), Pulled: pulled}}})
	return nil
}

func (h *handler) imageConfig(w http.ResponseWriter, r *http.Request) error {
	cfg, err := h.host.ImageConfig(r.Context(), r.URL.Query().Get("ref"))
	if err != nil {
		return err
	}
	hostlink.WriteJSON(w, http.StatusOK, hostlink.WireImageConfig(cfg))
	return nil
}

func (h *handler) remover() (hostcontract.ImageRemover, error) {
	rm, ok := h.host.(hostcontract.ImageRemover)
	if !ok {
		return nil, fmt.Errorf("this host cannot remove images: %w", errdefs.ErrNotImplemented)
	}
	return rm, nil
}

// removeImage removes the tenant's image.
func (h *handler) removeImage(w http.ResponseWriter, r *http.Request) error {
	rm, err := h.remover()
	if err != nil {
		return err
	}
	if err := rm.RemoveImage(r.Context(), r.URL.Query().Get("ref")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// removeTenant removes everything the host keeps of the tenant, which was
// deleted.
func (h *handler) removeTenant(w http.ResponseWriter, r *http.Request) error {
	rm, err := h.remover()
	if err != nil {
		return err
	}
	t, err := tenant.Name(r.Context())
	if err != nil {
		return err
	}
	if err := rm.RemoveTenant(r.Context(), t); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// attachDevice answers hostcontract.DeviceAttacher's attach.
func (h *handler) attachDevice(w http.ResponseWriter, r *http.Request) error {
	da, ok := h.host.(hostcontract.DeviceAttacher)
	if !ok {
		return fmt.Errorf("this host cannot attach devices: %w", errdefs.ErrNotImplemented)
	}
	var req api.DeviceRequest
	if err := hostlink.DecodeBody(w, r, maxBody, &req, "device request"); err != nil {
		return err
	}
	inst, err := h.instance(r)
	if err != nil {
		return err
	}
	names, err := da.AttachDevice(r.Context(), inst, req)
	if err != nil {
		return err
	}
	hostlink.WriteJSON(w, http.StatusOK, names)
	return nil
}

// detachDevice answers hostcontract.DeviceAttacher's detach.
func (h *handler) detachDevice(w http.ResponseWriter, r *http.Request) error {
	da, ok := h.host.(hostcontract.DeviceAttacher)
	if !ok {
		return fmt.Errorf("this host cannot detach devices: %w", errdefs.ErrNotImplemented)
	}
	inst, err := h.instance(r)
	if err != nil {
		return err
	}
	if err := da.DetachDevice(r.Context(), inst, r.URL.Query().Get("name")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// checkPorts answers hostcontract.PortChecker for the host, so that the
// API refuses at admission what the agent would refuse at start.
func (h *handler) checkPorts(w http.ResponseWriter, r *http.Request) error {
	pc, ok := h.host.(hostcontract.PortChecker)
	if !ok {
		return fmt.Errorf("host %s cannot check ports: %w", h.host.Name(), errdefs.ErrNotImplemented)
	}
	var ports []api.PortMapping
	if err := json.NewDecoder(io.LimitReader(r.Body, maxBody)).Decode(&ports); err != nil {
		return fmt.Errorf("published ports: %v: %w", err, errdefs.ErrInvalidArgument)
	}
	if err := pc.CheckPorts(r.Context(), ports); err != nil {
		// The message without the class, which the control plane's side
		// wraps again.
		code, status := errdefs.Code(err), errhttp.ToHTTP(err)
		msg := err.Error()
		if c := errdefs.FromCode(code); c != nil {
			msg = strings.TrimSuffix(msg, ": "+c.Error())
		}
		hostlink.WriteJSON(w, status, api.Error{Code: code, Message: msg})
		return nil
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (h *handler) volumeHost() (hostcontract.VolumeHost, error) {
	vh, ok := h.host.(hostcontract.VolumeHost)
	if !ok {
		return nil, fmt.Errorf("host %s keeps no persistent volumes: %w", h.host.Name(), errdefs.ErrNotImplemented)
	}
	return vh, nil
}

// createVolume makes a persistent volume for the control plane.
func (h *handler) createVolume(w http.ResponseWriter, r *http.Request) error {
	vh, err := h.volumeHost()
	if err != nil {
		return err
	}
	var req hostlink.VolumeCreate
	if err := json.NewDecoder(io.LimitReader(r.Body, maxBody)).Decode(&req); err != nil {
		return fmt.Errorf("volume: %v: %w", err, errdefs.ErrInvalidArgument)
	}
	defer clear(req.Key)
	if err := vh.CreateVolume(r.Context(), req.ID, req.Size, req.Encrypted, req.Key); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// removeVolume deletes a persistent volume and its data.
func (h *handler) removeVolume(w http.ResponseWriter, r *http.Request) error {
	vh, err := h.volumeHost()
	if err != nil {
		return err
	}
	if err := vh.RemoveVolume(r.Context(), r.URL.Query().Get("id")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
