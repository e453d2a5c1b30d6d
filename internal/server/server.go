// Package server is Kanga's control plane API: REST/JSON handlers,
// authentication, and the mapping of the error taxonomy to HTTP.
package server

import (
	"context"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/internal/httpserver"
	"github.com/kanga-run/kanga/internal/model"
	"github.com/kanga-run/kanga/internal/store"
	"github.com/prometheus/client_golang/prometheus"
)

// Store is the state the API reads and writes. Every method takes the
// tenant from the context.
type Store interface {
	// CreateInstance stores a new instance; store.WithQuota admits it
	// under the tenant's quota in the same transaction.
	CreateInstance(ctx context.Context, inst *api.Instance, opts ...store.CreateOption) error
	GetInstance(ctx context.Context, name string) (*api.Instance, error)
	ListInstances(ctx context.Context) ([]api.Instance, error)
	// ListInstanceRecords is the tenant's instances as stored at a
	// revision (0: the current one), and the revision read.
	ListInstanceRecords(ctx context.Context, rev int64) ([]store.InstanceRecord, int64, error)
	UpdateInstance(ctx context.Context, name string, fn func(*api.Instance) error) (*api.Instance, error)
	WaitInstance(ctx context.Context, name string, cond func(*api.Instance) bool) (*api.Instance, error)
	WaitInstanceGone(ctx context.Context, name string) error
	// WatchInstance streams the versions written after it returns.
	WatchInstance(ctx context.Context, name string) (<-chan *api.Instance, error)
	DeleteInstance(ctx context.Context, name string) error
	LookupPrincipal(ctx context.Context, token string) (store.Principal, error)

	CreateTenant(ctx context.Context, t *api.Tenant, token string) error
	GetTenant(ctx context.Context, name string) (*api.Tenant, error)
	ListTenants(ctx context.Context) ([]api.Tenant, error)
	// DeleteTenant also records a purge of the tenant for every host.
	DeleteTenant(ctx context.Context, name string) error
	UpdateTenant(ctx context.Context, name string, fn func(*api.Tenant) error) (*api.Tenant, error)
	// TenantUsage is what the tenant's instances count against its quota.
	TenantUsage(ctx context.Context, name string) (api.QuotaAmounts, error)

	PurgeStore
	TokenStore
	HostStore
	ObjectStore
}

// Server serves the public API.
type Server struct {
	store   Store
	hosts   Hosts // where instances run
	log     *slog.Logger
	now     func() time.Time
	version string
	// waitTimeout bounds how long a request blocks on a state change before
	// answering; clients retry.
	waitTimeout time.Duration
	// scheduleWait bounds how long a create waits for the scheduler's
	// decision before it answers with the instance as stored.
	scheduleWait time.Duration
	replica      string
	audit        AuditLog // nil: no audit log (a store without one)
	auditor      *auditor
	lists        listCache
	listReads    coalescer[listRead]
	principals   coalescer[store.Principal]
	usage        UsageStore         // nil: no metering
	volumes      VolumeStore        // nil: no persistent volumes
	joins        JoinTokenAuthority // nil: no agent link (kanga up)
	// defaultType fills in the resources instances leave empty, unless
	// their tenant has its own; "none" is no default.
	defaultType string
	// defaultQuota is the quota of new tenants; nil is none.
	defaultQuota *api.Quota
	// ports and security are the operator's policy for published ports
	// and the bounds of what tenants may be allowed (see Options).
	ports    model.PortPolicy
	security model.SecurityBounds
	// portsMu serializes the port check and the store write of creates
	// that publish ports (admitPorts).
	portsMu sync.Mutex
	// admission bounds the creates in flight (admission.go).
	admission *admission
	// gatherer is what GET /metrics serves.
	gatherer prometheus.Gatherer
}

// Options configure a Server.
type Options struct {
	Logger  *slog.Logger
	Version string
	Now     func() time.Time
	// ScheduleWait bounds how long POST /v1/instances waits for the
	// scheduler to place the new instance (default 2 s; negative: not at
	// all).
	ScheduleWait time.Duration
	// Hosts finds the hosts instances run on (hostclient.Directory over
	// the agents' link); nil reaches none.
	Hosts Hosts
	// Replica names this control-plane replica in the audit log.
	Replica string
	// JoinTokens, if set, issues the agents' join tokens (kanga server).
	JoinTokens JoinTokenAuthority
	// DefaultType is the instance type whose resources fill in what an
	// instance leaves empty when its tenant has no default type of its
	// own (default model.DefaultInstanceType; "none" for no default).
	DefaultType string
	// DefaultQuota is the quota of tenants created without one; nil
	// gives them none.
	DefaultQuota *api.Quota
	// Ports is where tenants may publish ports, with the platform's own
	// ports reserved; the zero value is model.DefaultPortPolicy.
	Ports model.PortPolicy
	// Security bounds what an administrator may allow a tenant; the zero
	// value allows nothing beyond the defaults.
	Security model.SecurityBounds
	// MaxInflightCreates bounds the creates in flight (recorded, not yet
	// Running, terminal or waiting for resources) this server admits;
	// past it a create is refused with 429 and Retry-After (admission.go).
	// Negative: the ready hosts' start slots; 0: no bound.
	MaxInflightCreates int
	// Metrics is what GET /metrics serves; nil is the process's default
	// registry, where every package registers its metrics.
	Metrics prometheus.Gatherer
}

// New returns a Server.
func New(store Store, opts Options) *Server {
	s := &Server{store: store, log: opts.Logger, now: opts.Now, version: opts.Version,
		waitTimeout: 60 * time.Second, scheduleWait: opts.ScheduleWait, hosts: opts.Hosts,
		defaultType: opts.DefaultType, defaultQuota: opts.DefaultQuota,
		ports: opts.Ports, security: opts.Security}
	if s.defaultType == "" {
		s.defaultType = model.DefaultInstanceType
	}
	if s.ports.Range == (model.PortRange{}) {
		s.ports.Range = model.DefaultPortRange
	}
	if s.hosts == nil {
		s.hosts = noHosts{}
	}
	s.replica, s.joins = opts.Replica, opts.JoinTokens
	if al, ok := store.(AuditLog); ok {
		s.audit = al
		s.auditor = &auditor{log: al}
	}
	if us, ok := store.(UsageStore); ok {
		s.usage = us
	}
	if vs, ok := store.(VolumeStore); ok {
		s.volumes = vs
	}
	if s.scheduleWait == 0 {
		s.scheduleWait = 2 * time.Second
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.now == nil {
		s.now = time.Now
	}
	s.gatherer = newGatherer(opts.Metrics, store)
	s.admission = &admission{max: opts.MaxInflightCreates, hosts: store, now: s.now}
	return s
}

// Route is one endpoint of the API. Patterns use net/http's syntax, which
// for the paths used here is also OpenAPI's path template syntax.
type Route struct {
	Method  string
	Pattern string
	Public  bool // served without a token
	handler func(*Server, http.ResponseWriter, *http.Request) error
}

// Routes is the API. internal/server's OpenAPI test checks it against
// api/openapi.yaml.
var Routes = []Route{
	{"GET", "/v1/healthz", true, (*Server).healthz},
	{"GET", "/v1/openapi.yaml", true, (*Server).openapi},
	{"GET", "/v1/version", false, (*Server).getVersion},
	{"POST", "/v1/instances", false, (*Server).createInstance},
	{"GET", "/v1/instances", false, (*Server).listInstances},
	{"GET", "/v1/instances/{name}", false, (*Server).getInstance},
	{"DELETE", "/v1/instances/{name}", false, (*Server).deleteInstance},
	{"POST", "/v1/instances/{name}/stop", false, (*Server).stopInstance},
	{"POST", "/v1/instances/{name}/kill", false, (*Server).kill},
	{"POST", "/v1/instances/{name}/devices", false, (*Server).attachDevice},
	{"DELETE", "/v1/instances/{name}/devices", false, (*Server).detachDevice},
	{"GET", "/v1/instances/{name}/wait", false, (*Server).waitInstance},
	{"GET", "/v1/instances/{name}/logs", false, (*Server).logs},
	{"POST", "/v1/instances/{name}/exec", false, (*Server).exec},
	{"GET", "/v1/instances/{name}/stats", false, (*Server).stats},
	{"GET", "/v1/instances/{name}/top", false, (*Server).top},
	{"GET", "/v1/instances/{name}/sla", false, (*Server).sla},
	{"GET", "/v1/runtimes", false, (*Server).listRuntimes},
	{"GET", "/v1/types", false, (*Server).listTypes},
	{"POST", "/v1/tenants", false, (*Server).createTenant},
	{"GET", "/v1/tenants", false, (*Server).listTenants},
	{"GET", "/v1/tenants/{name}", false, (*Server).getTenant},
	{"DELETE", "/v1/tenants/{name}", false, (*Server).deleteTenant},
	{"GET", "/v1/tenants/{name}/quota", false, (*Server).getQuota},
	{"PUT", "/v1/tenants/{name}/quota", false, (*Server).putQuota},
	{"GET", "/v1/tenants/{name}/network", false, (*Server).getTenantNetwork},
	{"PUT", "/v1/tenants/{name}/network", false, (*Server).putTenantNetwork},
	{"PUT", "/v1/tenants/{name}/security", false, (*Server).setTenantSecurity},
	{"GET", "/v1/images", false, (*Server).listImages},
	{"GET", "/v1/images/{ref}", false, (*Server).getImage},
	{"DELETE", "/v1/images/{ref}", false, (*Server).removeImage},
	{"POST", "/v1/images/import", false, (*Server).importImage},
	{"POST", "/v1/images/pull", false, (*Server).pullImage},
	{"POST", "/v1/images/prewarm", false, (*Server).prewarmImage},
	{"GET", "/v1/hosts", false, (*Server).listHosts},
	{"GET", "/v1/hosts/{name}", false, (*Server).getHost},
	{"POST", "/v1/hosts/{name}/cordon", false, (*Server).cordonHost},
	{"POST", "/v1/hosts/{name}/uncordon", false, (*Server).uncordonHost},
	{"POST", "/v1/hosts/{name}/drain", false, (*Server).drainHost},
	{"POST", "/v1/hosts/{name}/revoke", false, (*Server).revokeHost},
	{"POST", "/v1/tokens", false, (*Server).createToken},
	{"GET", "/v1/tokens", false, (*Server).listTokens},
	{"DELETE", "/v1/tokens/{id}", false, (*Server).revokeToken},
	{"POST", "/v1/join-tokens", false, (*Server).createJoinToken},
	{"GET", "/v1/join-tokens", false, (*Server).listJoinTokens},
	{"DELETE", "/v1/join-tokens/{id}", false, (*Server).revokeJoinToken},
	{"POST", "/v1/secrets", false, (*Server).createSecret},
	{"GET", "/v1/secrets", false, (*Server).listSecrets},
	{"GET", "/v1/secrets/{name}", false, (*Server).getSecret},
	{"PUT", "/v1/secrets/{name}", false, (*Server).updateSecret},
	{"DELETE", "/v1/secrets/{name}", false, (*Server).deleteSecret},
	{"POST", "/v1/secrets/{name}/reveal", false, (*Server).revealSecret},
	{"POST", "/v1/secret-keys/rotate", false, (*Server).rotateSecretKey},
	{"POST", "/v1/configs", false, (*Server).createConfig},
	{"GET", "/v1/configs", false, (*Server).listConfigs},
	{"GET", "/v1/configs/{name}", false, (*Server).getConfig},
	{"PUT", "/v1/configs/{name}", false, (*Server).updateConfig},
	{"DELETE", "/v1/configs/{name}", false, (*Server).deleteConfig},
	{"POST", "/v1/volumes", false, (*Server).createVolume},
	{"GET", "/v1/volumes", false, (*Server).listVolumes},
	{"GET", "/v1/volumes/{name}", false, (*Server).getVolume},
	{"DELETE", "/v1/volumes/{name}", false, (*Server).deleteVolume},
	{"GET", "/v1/usage", false, (*Server).getUsage},
	{"GET", "/v1/audit", false, (*Server).listAudit},
	{"GET", "/v1/events", false, (*Server).events},
	{"GET", "/metrics", false, (*Server).metrics},
}

// streamedBodies are the routes whose body is a stream (an image
// archive) rather than a JSON document of at most maxBody.
var streamedBodies = map[string]bool{"POST /v1/images/import": true}

// largeBodies are the routes whose JSON body may be larger than maxBody,
// with their bound: a secret or config's data, base64-encoded.
var largeBodies = map[string]int64{
	"POST /v1/secrets": maxObjectBody, "PUT /v1/secrets/{name}": maxObjectBody,
	"POST /v1/configs": maxObjectBody, "PUT /v1/configs/{name}": maxObjectBody,
}

// Handler returns the HTTP handler for the API.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	methods := httpserver.NewMethods()
	for _, r := range Routes {
		h := r.handler
		limit := int64(maxBody)
		if streamedBodies[r.Method+" "+r.Pattern] {
			limit = 0
		} else if l, ok := largeBodies[r.Method+" "+r.Pattern]; ok {
			limit = l
		}
		// An instance's routes take its UID or a unique prefix of it too.
		instanceRef := strings.HasPrefix(r.Pattern, "/v1/instances/{name}")
		var hf http.Handler = http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			if limit > 0 {
				// On a copy: net/http looks at the original's body.
				req = req.WithContext(req.Context())
				req.Body = http.MaxBytesReader(w, req.Body, limit)
			}
			if instanceRef {
				if err := s.resolveInstanceRef(req); err != nil {
					s.writeError(w, req, err)
					return
				}
			}
			if err := h(s, w, req); err != nil {
				s.writeError(w, req, err)
			}
		})
		if !r.Public {
			hf = s.authenticate(hf)
		}
		mux.Handle(r.Method+" "+r.Pattern, hf)
		methods.Add(r.Method, r.Pattern)
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, req *http.Request) {
		httpserver.RefuseBody(req)
		if err := methods.NotAllowed(w, req); err != nil {
			s.writeError(w, req, err)
			return
		}
		s.writeError(w, req, errNoRoute(req))
	})
	return s.traced(s.logRequests(instrumented(mux)))
}
