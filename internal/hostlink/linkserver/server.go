// Package linkserver is the control plane's end of the host link (agent
// -> control plane): it admits joins, registrations and heartbeats, streams
// each host the instances placed on it and the network view, and takes
// their status writes, checked against the host the agent's certificate
// names. The protocol is package hostlink's.
package linkserver

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
	"github.com/kanga-run/kanga/errdefs/errhttp"
	"github.com/kanga-run/kanga/internal/hostcontract"
	"github.com/kanga-run/kanga/internal/hostlink"
	"github.com/kanga-run/kanga/internal/hostlink/join"
	"github.com/kanga-run/kanga/internal/httpserver"
	"github.com/kanga-run/kanga/internal/netview"
	"github.com/kanga-run/kanga/internal/pki"
	"github.com/kanga-run/kanga/internal/requestid"
	"github.com/kanga-run/kanga/internal/store"
	"github.com/kanga-run/kanga/internal/tenant"
)

// Store is the state the server side of the link reads and writes
// (*store.Store).
type Store interface {
	RegisterHost(ctx context.Context, h *api.Host) error
	SetHostImages(ctx context.Context, name string, imgs []api.HostImage) error
	KeepHostAlive(ctx context.Context, name string, ttl time.Duration) error
	ListAllInstances(ctx context.Context) ([]api.Instance, int64, error)
	WatchAllInstances(ctx context.Context, fromRevision int64) <-chan store.InstanceEvent
	InstancesAt(ctx context.Context, rev int64) ([]api.Instance, error)
	GetInstance(ctx context.Context, name string) (*api.Instance, error)
	UpdateInstance(ctx context.Context, name string, fn func(*api.Instance) error) (*api.Instance, error)
	DeleteInstance(ctx context.Context, name string) error
	Purges(ctx context.Context, host string) ([]store.Purge, error)
	AckPurge(ctx context.Context, host string, p store.Purge) error
	PutUsage(ctx context.Context, host string, recs []api.UsageRecord) ([]store.UsageRefusal, error)
	TenantQuota(ctx context.Context, name string) (*api.Quota, error)
	InstanceFiles(ctx context.Context, host, name, uid string) (hostcontract.InstanceFiles, error)
}

// Server is the control plane's end of the link.
type Server struct {
	Store Store
	CA    *pki.CA
	// Token is the cluster's shared join token, which joins new host
	// names only; per-host join tokens are in Creds.
	Token pki.Token
	// Creds, if set (the store), holds join tokens and which agent
	// certificates each host may use; if Store implements it, it is used.
	Creds  join.CredentialStore
	Logger *slog.Logger
	// LeaseTTL is how long a host stays Ready after its heartbeat
	// request breaks.
	LeaseTTL time.Duration
	// InsecureRegistries go to every agent with its registration: the
	// registries it may pull from on private addresses besides its own.
	InsecureRegistries []string
	// NetView, if set, is streamed to agents for tenant isolation; its Run
	// is the caller's to start.
	NetView *netview.View

	hub    *hub
	owners *owners

	// links counts each host's open long-lived requests (heartbeat,
	// watch): a host with one is connected (Connected).
	linksMu sync.Mutex
	links   map[string]int
	// leaseLosses counts, per host, the leases this server held for it
	// and lost (etcd unreachable past the TTL): 0 on a healthy platform,
	// however loaded (issue 22). Under linksMu.
	leaseLosses map[string]int
}

// countLeaseLoss counts a lost lease of host and returns its count.
func (s *Server) countLeaseLoss(host string) int {
	s.linksMu.Lock()
	defer s.linksMu.Unlock()
	if s.leaseLosses == nil {
		s.leaseLosses = map[string]int{}
	}
	s.leaseLosses[host]++
	return s.leaseLosses[host]
}

// linked counts one open long-lived request of host; the returned
// function ends it.
func (s *Server) linked(host string) func() {
	s.linksMu.Lock()
	defer s.linksMu.Unlock()
	if s.links == nil {
		s.links = map[string]int{}
	}
	s.links[host]++
	return func() {
		s.linksMu.Lock()
		defer s.linksMu.Unlock()
		if s.links[host]--; s.links[host] <= 0 {
			delete(s.links, host)
		}
	}
}

// Connected reports whether host's agent holds a heartbeat or watch
// request open on this server. Such a request outlives the host's lease
// when etcd is slow, and an agent that stops answering loses it within
// the HTTP/2 ping timeout of the listener, so it tells a slow host from a
// dead one.
func (s *Server) Connected(host string) bool {
	s.linksMu.Lock()
	defer s.linksMu.Unlock()
	return s.links[host] > 0
}

// TLSConfig is the listener's configuration: the serving certificate, and
// client certificates verified against the CA when given (the join
// request has none; every other endpoint requires one).
func (s *Server) TLSConfig(serving tls.Certificate) *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{serving},
		ClientAuth:   tls.VerifyClientCertIfGiven,
		ClientCAs:    s.CA.Pool(),
		MinVersion:   tls.VersionTLS12,
	}
}

// Handler serves the link.
func (s *Server) Handler() http.Handler {
	if s.Logger == nil {
		s.Logger = slog.Default()
	}
	if s.LeaseTTL == 0 {
		s.LeaseTTL = 5 * time.Second
	}
	// The hub lives as long as the store's watch: until the store closes.
	s.hub = newHub(s.Store, s.Logger)
	go s.hub.run(context.Background())
	if s.Creds == nil {
		s.Creds, _ = s.Store.(join.CredentialStore)
	}
	if s.Creds != nil {
		s.owners = newOwners(s.Creds, s.Logger)
		go s.owners.follow(context.Background())
	}
	mux := http.NewServeMux()
	methods := httpserver.NewMethods()
	handle := func(pattern string, h http.Handler) {
		mux.Handle(pattern, h)
		method, path, _ := strings.Cut(pattern, " ")
		methods.Add(method, path)
	}
	handle("POST "+hostlink.PathJoin, http.HandlerFunc(s.join))
	handle("POST "+hostlink.PathHost+"{host}/register", s.agentOnly(s.register))
	handle("GET "+hostlink.PathHost+"{host}/heartbeat", s.agentOnly(s.heartbeat))
	handle("PUT "+hostlink.PathHost+"{host}/images", s.agentOnly(s.putImages))
	handle("PUT "+hostlink.PathHost+"{host}/usage", s.agentOnly(s.putUsage))
	handle("GET "+hostlink.PathHost+"{host}/purges", s.agentOnly(s.purges))
	handle("PUT "+hostlink.PathHost+"{host}/purges", s.agentOnly(s.ackPurge))
	handle("GET "+hostlink.PathHost+"{host}/instances", s.agentOnly(s.list))
	handle("GET "+hostlink.PathHost+"{host}/watch", s.agentOnly(s.watch))
	handle("GET "+hostlink.PathHost+"{host}/netview", s.agentOnly(s.netView))
	handle("GET "+hostlink.PathHost+"{host}/instances/{tenant}/{name}", s.agentOnly(s.get))
	handle("PUT "+hostlink.PathHost+"{host}/instances/{tenant}/{name}", s.agentOnly(s.putStatus))
	handle("DELETE "+hostlink.PathHost+"{host}/instances/{tenant}/{name}", s.agentOnly(s.delete))
	handle("GET "+hostlink.PathHost+"{host}/instances/{tenant}/{name}/files", s.agentOnly(s.files))
	handle("GET "+hostlink.PathHost+"{host}/tenants/{tenant}/quota", s.agentOnly(s.tenantQuota))
	handle("GET "+hostlink.PathHost+"{host}/volumes/{id}/key", s.agentOnly(s.volumeKey))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		httpserver.RefuseBody(r)
		if err := methods.NotAllowed(w, r); err != nil {
			hostlink.WriteError(w, err)
			return
		}
		hostlink.WriteError(w, fmt.Errorf("no route %s %s: %w", r.Method, r.URL.Path, errdefs.ErrNotFound))
	})
	return mux
}

// agentOnly admits a request only with an agent certificate signed by the
// CA whose common name is the host the request acts for.
func (s *Server) agentOnly(h func(http.ResponseWriter, *http.Request, string) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host := r.PathValue("host")
		id, err := pki.PeerIdentity(r.TLS)
		if err == nil && id.Org != pki.Agents {
			err = fmt.Errorf("certificate of %q is not an agent's (organization %q): %w", id.Name, id.Org, errdefs.ErrPermissionDenied)
		}
		if err == nil && id.Name != host {
			err = fmt.Errorf("certificate is host %q's, not %q's: an agent acts only for its own host: %w", id.Name, host, errdefs.ErrPermissionDenied)
		}
		if err == nil && s.owners != nil {
			var ctx context.Context
			var done func()
			if ctx, done, err = s.owners.admit(r.Context(), host, id.Serial); err == nil {
				defer done()
				r = r.WithContext(ctx)
			}
		}
		if err != nil {
			s.Logger.Warn("hostlink: refused", "path", r.URL.Path, "remote", r.RemoteAddr, "err", err)
			httpserver.RefuseBody(r)
			hostlink.WriteError(w, err)
			return
		}
		if err := h(w, r, host); err != nil {
			hostlink.WriteError(w, err)
		}
	})
}

func (s *Server) join(w http.ResponseWriter, r *http.Request) {
	var req hostlink.JoinRequest
	if err := hostlink.DecodeBody(w, r, 64<<10, &req, "join request"); err != nil {
		hostlink.WriteError(w, err)
		return
	}
	owner, err := join.CheckSecret(r.Context(), s.Token, s.Creds, req.Secret)
	if err != nil {
		// Not audited: anyone can send a wrong token, and a flood of
		// them must not grow the audit log.
		s.Logger.Warn("hostlink: join refused", "name", req.Name, "remote", r.RemoteAddr, "err", err)
		hostlink.WriteError(w, err)
		return
	}
	cert, err := s.admitJoin(r, req, owner)
	s.auditJoin(r, req.Name, owner, err)
	if err != nil {
		s.Logger.Warn("hostlink: join refused", "name", req.Name, "remote", r.RemoteAddr, "token", owner, "err", err)
		hostlink.WriteError(w, err)
		return
	}
	s.Logger.Info("hostlink: agent joined", "host", req.Name, "remote", r.RemoteAddr, "token", owner)
	hostlink.WriteJSON(w, http.StatusOK, hostlink.JoinResponse{Cert: cert, CA: s.CA.CertPEM})
}

// admitJoin signs the agent's certificate for a token that may claim the
// name, and records its serial for the host.
func (s *Server) admitJoin(r *http.Request, req hostlink.JoinRequest, owner string) ([]byte, error) {
	if err := hostlink.ValidHostName(req.Name); err != nil {
		return nil, err
	}
	cert, err := s.CA.SignAgentCSR(req.CSR, req.Name)
	if err != nil {
		return nil, err
	}
	if s.Creds != nil {
		c, err := pki.ParseCert(cert)
		if err != nil {
			return nil, err
		}
		if err := s.Creds.ClaimHost(r.Context(), req.Name, owner, c.SerialNumber.Text(16)); err != nil {
			return nil, err
		}
	}
	return cert, nil
}

// AuditLog is where joins are recorded (*store.Store), beside the API's
// calls.
type AuditLog interface {
	AppendAudit(ctx context.Context, recs []api.AuditRecord) ([]api.AuditRecord, error)
}

// auditJoin records a join that presented a valid token, admitted or not.
func (s *Server) auditJoin(r *http.Request, host, owner string, err error) {
	al, ok := s.Store.(AuditLog)
	if !ok {
		return
	}
	status := http.StatusOK
	if err != nil {
		status = errhttp.ToHTTP(err)
	}
	remote, _, _ := net.SplitHostPort(r.RemoteAddr)
	rec := api.AuditRecord{Time: time.Now().UTC(), RequestID: requestid.New(), Principal: owner, PrincipalName: "join token",
		Verb: "hosts.join", Object: "hosts/" + host, Method: r.Method, Path: r.URL.Path, Status: status, Remote: remote}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 10*time.Second)
	defer cancel()
	if _, err := al.AppendAudit(ctx, []api.AuditRecord{rec}); err != nil {
		b, _ := json.Marshal(rec)
		s.Logger.Error("writing the audit record of a join failed; the record follows", "err", err, "record", string(b))
	}
}

func (s *Server) register(w http.ResponseWriter, r *http.Request, host string) error {
	var h api.Host
	if err := hostlink.DecodeBody(w, r, 4<<20, &h, "host"); err != nil {
		return err
	}
	if h.Name != host {
		return fmt.Errorf("host record names %q, not %q: %w", h.Name, host, errdefs.ErrInvalidArgument)
	}
	if h.Subnet != "" {
		if p, err := netip.ParsePrefix(h.Subnet); err != nil || !p.Addr().Is4() || p.Bits() < 8 {
			return fmt.Errorf("host %q: subnet %q is not an IPv4 CIDR of /8 or narrower: %w", host, h.Subnet, errdefs.ErrInvalidArgument)
		}
	}
	h.Cordoned = false // RegisterHost keeps the stored value; an agent does not set it
	if err := s.Store.RegisterHost(r.Context(), &h); err != nil {
		return err
	}
	hostlink.WriteJSON(w, http.StatusOK, hostlink.RegisterResponse{Host: h, InsecureRegistries: s.InsecureRegistries})
	return nil
}

// purges lists the purges the host has not carried out yet.
func (s *Server) purges(w http.ResponseWriter, r *http.Request, host string) error {
	ps, err := s.Store.Purges(r.Context(), host)
	if err != nil {
		return err
	}
	out := make([]hostlink.Purge, len(ps))
	for i, p := range ps {
		out[i] = wirePurge(p)
	}
	hostlink.WriteJSON(w, http.StatusOK, out)
	return nil
}

// ackPurge records that the host carried out a purge.
func (s *Server) ackPurge(w http.ResponseWriter, r *http.Request, host string) error {
	var p hostlink.Purge
	if err := hostlink.DecodeBody(w, r, 64<<10, &p, "purge"); err != nil {
		return err
	}
	if err := s.Store.AckPurge(r.Context(), host, storedPurge(p)); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// putImages replaces the images the host reports holding, for the
// scheduler's image locality (the registration carries them too).
func (s *Server) putImages(w http.ResponseWriter, r *http.Request, host string) error {
	var imgs []api.HostImage
	if err := hostlink.DecodeBody(w, r, 4<<20, &imgs, "host images"); err != nil {
		return err
	}
	if err := s.Store.SetHostImages(r.Context(), host, imgs); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// heartbeat holds the host's lease while the request is open; it writes a
// line now and then so that either side notices a dead peer.
func (s *Server) heartbeat(w http.ResponseWriter, r *http.Request, host string) error {
	defer s.linked(host)()
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	lost := make(chan error, 1)
	go func() { lost <- s.Store.KeepHostAlive(ctx, host, s.LeaseTTL) }()
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	// Often enough for the agent's watchdog (hostlink.HeartbeatIdle), whatever the TTL.
	t := time.NewTicker(min(s.LeaseTTL/3, hostlink.HeartbeatIdle/3))
	defer t.Stop()
	for {
		if _, err := fmt.Fprintf(w, "{\"time\":%q}\n", time.Now().UTC().Format(time.RFC3339Nano)); err != nil {
			return nil
		}
		if rc.Flush() != nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case err := <-lost:
			// The agent reconnects, which re-registers and takes a new lease.
			if ctx.Err() != nil {
				return nil // the request ended first
			}
			s.Logger.Warn("hostlink: host lease ended", "host", host, "err", err, "lease_losses", s.countLeaseLoss(host))
			return nil
		case <-t.C:
		}
	}
}

// list reads the store, not the hub: an agent's list must be exact (it
// decides which containers are orphans), and the hub may lag by a few
// events; the stream then continues from the list's revision.
func (s *Server) list(w http.ResponseWriter, r *http.Request, host string) error {
	insts, rev, err := s.Store.ListAllInstances(r.Context())
	if err != nil {
		return err
	}
	out := hostlink.InstanceList{Items: []api.Instance{}, Revision: rev}
	for _, in := range insts {
		if in.Status.Host == host {
			out.Items = append(out.Items, in)
		}
	}
	hostlink.WriteJSON(w, http.StatusOK, out)
	return nil
}

// stream sends host's events from the hub; it ends when the hub drops
// the stream, and the agent resumes from its last revision.
func (s *Server) stream(w http.ResponseWriter, r *http.Request, sb *sub) error {
	defer s.hub.unsubscribe(sb)
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	enc := json.NewEncoder(w)
	for {
		select {
		case <-r.Context().Done():
			return nil
		case ev, ok := <-sb.ch:
			if !ok {
				return nil
			}
			if enc.Encode(wireEvent(ev)) != nil {
				return nil
			}
			// Flush once the burst is written, not per event.
			if len(sb.ch) == 0 && rc.Flush() != nil {
				return nil
			}
		}
	}
}

// watch streams the instance events the host must see: every event of an
// instance placed on it, and the event that moves an instance away from it
// (the agent then stops its copy). Which instances were on the host when
// the stream resumes is read at the agent's revision; if that revision was
// compacted away, the first event of every instance is forwarded too, as
// nothing else tells whether it was here before. The agent ignores what is
// not its own, as it does with a local store.
func (s *Server) watch(w http.ResponseWriter, r *http.Request, host string) error {
	rev, err := strconv.ParseInt(r.URL.Query().Get("rev"), 10, 64)
	if err != nil || rev <= 0 {
		return fmt.Errorf("rev must be the revision of the agent's list: %w", errdefs.ErrInvalidArgument)
	}
	defer s.linked(host)()
	ctx := r.Context()
	if sb, err := s.hub.subscribe(ctx, host, rev); err == nil {
		return s.stream(w, r, sb)
	} else if !errors.Is(err, errTooOld) {
		return err
	}
	// Older than the hub's history: a watch of the stream's own.
	// on: tenant/name -> placed on this host (false: seen, elsewhere).
	on := map[string]bool{}
	exact := true
	insts, err := s.Store.InstancesAt(ctx, rev)
	if err != nil {
		s.Logger.Warn("hostlink: cannot read the host's instances at the stream's revision; forwarding more", "host", host, "rev", rev, "err", err)
		exact = false
	}
	for _, in := range insts {
		if in.Status.Host == host {
			on[in.Tenant+"/"+in.Name] = true
		}
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	enc := json.NewEncoder(w)
	for ev := range s.Store.WatchAllInstances(ctx, rev) {
		key := ev.Tenant + "/" + ev.Name
		nowOn := !ev.Deleted && ev.Instance != nil && ev.Instance.Status.Host == host
		wasOn, seen := on[key]
		switch {
		case nowOn:
			on[key] = true
		case exact:
			delete(on, key)
		default:
			on[key] = false
		}
		if !nowOn && !wasOn && (exact || seen) {
			continue
		}
		if enc.Encode(wireEvent(ev)) != nil || rc.Flush() != nil {
			return nil
		}
	}
	return nil
}

func fingerprint(in *api.Instance) string {
	b, _ := json.Marshal(in)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:12])
}

// onHost reads an instance and checks it is placed on host. An instance
// of another host is reported as not found: an agent learns nothing about
// the rest of the pool.
func (s *Server) onHost(r *http.Request, host string) (context.Context, *api.Instance, error) {
	ctx := tenant.WithName(r.Context(), r.PathValue("tenant"))
	in, err := s.Store.GetInstance(ctx, r.PathValue("name"))
	if err != nil {
		return ctx, nil, err
	}
	if in.Status.Host != host {
		return ctx, nil, fmt.Errorf("instance %q is not placed on host %q: %w", in.Name, host, errdefs.ErrNotFound)
	}
	return ctx, in, nil
}

func (s *Server) get(w http.ResponseWriter, r *http.Request, host string) error {
	_, in, err := s.onHost(r, host)
	if err != nil {
		return err
	}
	hostlink.WriteJSON(w, http.StatusOK, hostlink.VersionedInstance{Instance: *in, Fingerprint: fingerprint(in)})
	return nil
}

var errStale = errors.New("stale")

// putStatus applies an agent's status to an instance placed on its host,
// if the instance is still the version the agent read; otherwise Conflict
// and the agent reads again.
func (s *Server) putStatus(w http.ResponseWriter, r *http.Request, host string) error {
	var sw hostlink.StatusWrite
	if err := hostlink.DecodeBody(w, r, 4<<20, &sw, "status"); err != nil {
		return err
	}
	ctx := tenant.WithName(r.Context(), r.PathValue("tenant"))
	name := r.PathValue("name")
	out, err := s.Store.UpdateInstance(ctx, name, func(in *api.Instance) error {
		if in.Status.Host != host || in.UID != sw.UID {
			return fmt.Errorf("instance %q (uid %s) is not placed on host %q: %w", name, sw.UID, host, errdefs.ErrNotFound)
		}
		if fingerprint(in) != sw.Fingerprint {
			return errStale
		}
		sw.Status.Host = host // the agent cannot move an instance
		in.Status = sw.Status
		return nil
	})
	if errors.Is(err, errStale) {
		return fmt.Errorf("instance %q changed since it was read: read it again: %w", name, errdefs.ErrConflict)
	}
	if err != nil {
		return err
	}
	hostlink.WriteJSON(w, http.StatusOK, hostlink.VersionedInstance{Instance: *out, Fingerprint: fingerprint(out)})
	return nil
}

func (s *Server) delete(w http.ResponseWriter, r *http.Request, host string) error {
	ctx, in, err := s.onHost(r, host)
	if err != nil {
		return err
	}
	// The agent removes only records whose deletion was asked for, after
	// it tore the instance down: by a DELETE, or by the tenant's
	// spec.autoRemove once the instance ended (docker run --rm).
	if !in.DeletionRequested && !(in.Spec.AutoRemove && in.Status.Phase.Terminal()) {
		return fmt.Errorf("instance %q: deletion was not requested: %w", in.Name, errdefs.ErrFailedPrecondition)
	}
	if err := s.Store.DeleteInstance(ctx, in.Name); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// putUsage stores the host's usage records; a record of an instance never
// placed on the host is refused.
func (s *Server) putUsage(w http.ResponseWriter, r *http.Request, host string) error {
	var recs []api.UsageRecord
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 16<<20)).Decode(&recs); err != nil {
		return fmt.Errorf("usage records: %v: %w", err, errdefs.ErrInvalidArgument)
	}
	refused, err := s.Store.PutUsage(r.Context(), host, recs)
	if err != nil {
		return err
	}
	hostlink.WriteJSON(w, http.StatusOK, hostlink.PutUsageResponse{Refused: wireRefusals(refused)})
	return nil
}

// tenantQuota answers a tenant's quota, which the agent turns into the cap
// of the tenant's parent cgroup on its host. Only the quota: the agent has
// no use for the rest of the record. A tenant without one (or unknown)
// gets an empty quota, so the answer tells nothing about which tenants
// exist.
func (s *Server) tenantQuota(w http.ResponseWriter, r *http.Request, host string) error {
	q, err := s.Store.TenantQuota(r.Context(), r.PathValue("tenant"))
	if err != nil {
		return err
	}
	if q == nil {
		q = &api.Quota{}
	}
	hostlink.WriteJSON(w, http.StatusOK, q)
	return nil
}

// files answers an agent the files of its instance's secret and config
// volumes and its containers' env from secrets. The store answers only
// for an instance placed on the host the certificate names (agentOnly)
// and with the uid asked for; any other is a 404, whatever its tenant: an
// agent gets the secrets of the instances it runs, and learns nothing of
// the others'. The values are in this answer only, never in a log line.
func (s *Server) files(w http.ResponseWriter, r *http.Request, host string) error {
	httpserver.RefuseBody(r)
	uid := r.URL.Query().Get("uid")
	if uid == "" {
		return fmt.Errorf("uid: give the uid of the instance: %w", errdefs.ErrInvalidArgument)
	}
	ctx := tenant.WithName(r.Context(), r.PathValue("tenant"))
	f, err := s.Store.InstanceFiles(ctx, host, r.PathValue("name"), uid)
	if err != nil {
		return err
	}
	w.Header().Set("Cache-Control", "no-store")
	hostlink.WriteJSON(w, http.StatusOK, hostlink.WireInstanceFiles(f))
	return nil
}

// VolumeKeys is a store that releases encrypted volumes' keys to their
// hosts (*store.Store): an error for a volume not on host.
type VolumeKeys interface {
	VolumeKeyFor(ctx context.Context, host, id string) ([]byte, error)
}

// volumeKey hands an encrypted volume's key to the host the certificate
// names, and only if the volume lives there (store.HostView.VolumeKey).
func (s *Server) volumeKey(w http.ResponseWriter, r *http.Request, host string) error {
	vk, ok := s.Store.(VolumeKeys)
	if !ok {
		return fmt.Errorf("this control plane keeps no volume keys: %w", errdefs.ErrNotImplemented)
	}
	key, err := vk.VolumeKeyFor(r.Context(), host, r.PathValue("id"))
	if err != nil {
		return err
	}
	defer clear(key)
	hostlink.WriteJSON(w, http.StatusOK, hostlink.VolumeKey{Key: key})
	return nil
}
