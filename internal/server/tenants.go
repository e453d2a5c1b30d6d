package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"slices"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
	"github.com/kanga-run/kanga/internal/model"
	"github.com/kanga-run/kanga/internal/tenant"
)

// tenantPolicy returns the runtime policy of tenant t. A tenant without a
// record (the default tenant before it was stored) has no restrictions.
func (s *Server) tenantPolicy(ctx context.Context, t string) (api.Tenant, error) {
	rec, err := s.store.GetTenant(ctx, t)
	switch {
	case errors.Is(err, errdefs.ErrNotFound):
		return api.Tenant{Name: t, DefaultRuntime: model.DefaultRuntimeClass}, nil
	case err != nil:
		return api.Tenant{}, err
	}
	if rec.DefaultRuntime == "" {
		rec.DefaultRuntime = model.DefaultRuntimeClass
	}
	return *rec, nil
}

func (s *Server) listRuntimes(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	t, err := tenant.Name(ctx)
	if err != nil {
		return err
	}
	policy, err := s.tenantPolicy(ctx, t)
	if err != nil {
		return err
	}
	// The Ready hosts of the pool that offer each class.
	offering := map[string][]string{}
	hosts, err := s.store.ListHosts(ctx)
	if err != nil {
		return err
	}
	for _, h := range hosts {
		if h.Status.Phase != api.HostReady {
			continue
		}
		for _, c := range h.RuntimeClasses {
			offering[c] = append(offering[c], h.Name)
		}
	}
	out := api.RuntimeClassList{Items: []api.RuntimeClass{}}
	for _, c := range model.RuntimeClasses {
		rc := api.RuntimeClass{
			Name: c.Name, Description: c.Description, Requires: c.Requires, Hosts: []string{},
			Allowed: len(policy.AllowedRuntimes) == 0 || slices.Contains(policy.AllowedRuntimes, c.Name),
			Default: policy.DefaultRuntime == c.Name,
		}
		rc.Hosts = append(rc.Hosts, offering[c.Name]...)
		out.Items = append(out.Items, rc)
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) createTenant(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	if err := requireAdmin(ctx); err != nil {
		return err
	}
	var req api.CreateTenantRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	setAuditObject(ctx, "tenants/"+req.Name)
	if err := tenant.Validate(req.Name); err != nil {
		return fmt.Errorf("name: %w", err)
	}
	if err := model.ValidateRuntimeClasses("allowedRuntimes", req.AllowedRuntimes); err != nil {
		return err
	}
	if req.DefaultRuntime != "" {
		if err := model.ValidateRuntimeClasses("defaultRuntime", []string{req.DefaultRuntime}); err != nil {
			return err
		}
	}
	def := req.DefaultRuntime
	if def == "" {
		def = model.DefaultRuntimeClass
		if len(req.AllowedRuntimes) > 0 {
			def = req.AllowedRuntimes[0]
		}
	}
	if len(req.AllowedRuntimes) > 0 && !slices.Contains(req.AllowedRuntimes, def) {
		return fmt.Errorf("defaultRuntime %s is not among allowedRuntimes %v: %w", def, req.AllowedRuntimes, errdefs.ErrInvalidArgument)
	}
	switch req.SchedulingPolicy {
	case "", "binpack", "spread":
	default:
		return fmt.Errorf("schedulingPolicy %q is not binpack or spread: %w", req.SchedulingPolicy, errdefs.ErrInvalidArgument)
	}
	if err := model.CheckDefaultType("defaultInstanceType", req.DefaultInstanceType); err != nil {
		return err
	}
	if err := model.ValidateQuota(req.Quota); err != nil {
		return err
	}
	if err := s.checkPurged(ctx, req.Name); err != nil {
		return err
	}
	netPolicy, err := model.NormalizeTenantNetwork("network", req.Network)
	if err != nil {
		return err
	}
	if err := model.ValidateTenantSecurity(req.Security, s.ports, s.security); err != nil {
		return err
	}
	t := &api.Tenant{Name: req.Name, DefaultRuntime: def, AllowedRuntimes: req.AllowedRuntimes,
		SchedulingPolicy: req.SchedulingPolicy, DefaultInstanceType: req.DefaultInstanceType,
		Quota: model.MergeQuota(s.defaultQuota, req.Quota), Security: req.Security, CreatedAt: s.now().UTC(), Network: netPolicy}
	token, err := newToken()
	if err != nil {
		return err
	}
	if err := s.store.CreateTenant(ctx, t, token); err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, api.CreateTenantResponse{Tenant: *t, Token: token})
	return nil
}

// setTenantSecurity replaces a tenant's security policy (an empty body
// resets it to the platform's defaults). It bounds new instances only:
// running ones keep what they were admitted with.
func (s *Server) setTenantSecurity(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	if err := requireAdmin(ctx); err != nil {
		return err
	}
	var sec api.TenantSecurity
	if err := decodeJSON(r, &sec); err != nil {
		return err
	}
	if err := model.ValidateTenantSecurity(&sec, s.ports, s.security); err != nil {
		return err
	}
	name := r.PathValue("name")
	t, err := s.store.UpdateTenant(ctx, name, func(t *api.Tenant) error {
		t.Security = &sec
		if len(sec.HostIPs) == 0 && sec.HostPorts == "" && len(sec.AllowedCapabilities) == 0 && !sec.AllowUnconfined && !sec.AllowPrivilegeEscalation {
			t.Security = nil
		}
		return nil
	})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, t)
	return nil
}

func newToken() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}

func (s *Server) listTenants(w http.ResponseWriter, r *http.Request) error {
	if err := requireAdmin(r.Context()); err != nil {
		return err
	}
	ts, err := s.store.ListTenants(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, api.TenantList{Items: ts})
	return nil
}

func (s *Server) getTenant(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	name := r.PathValue("name")
	self, err := tenant.Name(ctx)
	if err != nil {
		return err
	}
	if name != self && !isAdmin(ctx) {
		// Other tenants' names are not revealed.
		return fmt.Errorf("tenant %q not found: %w", name, errdefs.ErrNotFound)
	}
	t, err := s.tenantPolicy(ctx, name)
	if err != nil {
		return err
	}
	if _, err := s.store.GetTenant(ctx, name); errors.Is(err, errdefs.ErrNotFound) && name != self {
		return err
	}
	writeJSON(w, http.StatusOK, t)
	return nil
}

func (s *Server) deleteTenant(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	if err := requireAdmin(ctx); err != nil {
		return err
	}
	name := r.PathValue("name")
	if self, _ := tenant.Name(ctx); self == name {
		return fmt.Errorf("tenant %q is the one your token belongs to: use another administrator's token: %w", name, errdefs.ErrFailedPrecondition)
	}
	// A volume's data is the tenant's to remove: deleting the tenant
	// would leave it on its host with no record to reach it by.
	if s.volumes != nil {
		vols, err := s.volumes.ListVolumes(tenant.WithName(ctx, name))
		if err != nil && !errors.Is(err, errdefs.ErrNotFound) {
			return err
		}
		if len(vols) > 0 {
			return fmt.Errorf("tenant %q has %d persistent volumes (%s, ...): remove them first (kanga --tenant %s volume rm NAME): %w",
				name, len(vols), vols[0].Name, name, errdefs.ErrConflict)
		}
	}
	if err := s.store.DeleteTenant(ctx, name); err != nil {
		return err
	}
	s.purgeTenant(ctx, name)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) listTypes(w http.ResponseWriter, r *http.Request) error {
	writeJSON(w, http.StatusOK, api.InstanceTypeList{Items: model.InstanceTypes})
	return nil
}

// checkFits rejects a spec that no host could ever hold, however empty;
// one that does not fit now waits, Pending, on the host.
func (s *Server) checkFits(spec *api.InstanceSpec) error {
	c := s.largest()
	res := spec.Resources
	// The spec is validated: what it sets parses.
	r, _ := model.ParseResources(res)
	if c.CPUs > 0 && r.MilliCPU > int64(c.CPUs)*1000 {
		return fmt.Errorf("spec.resources.cpu %s is more than any host has (the largest has %d cores): ask for at most %d: %w",
			res.CPU, c.CPUs, c.CPUs, errdefs.ErrInvalidArgument)
	}
	if c.Memory > 0 && r.Memory > c.Memory {
		return fmt.Errorf("spec.resources.memory %s is more than any host has (the largest has %d MiB): %w",
			res.Memory, c.Memory>>20, errdefs.ErrInvalidArgument)
	}
	if c.Disk > 0 && r.Disk > c.Disk {
		return fmt.Errorf("spec.resources.disk %s is more than any host can give (the most free is %d MiB): %w",
			res.Disk, c.Disk>>20, errdefs.ErrInvalidArgument)
	}
	return nil
}

// poolCapacity is the CPU (millicores) and memory of the connected hosts,
// against which quotas given as shares of the pool are resolved.
func (s *Server) poolCapacity() (milliCPU, memory int64) {
	for _, h := range s.hosts.All() {
		c := h.Capacity()
		milliCPU += int64(c.CPUs) * 1000
		memory += c.Memory
	}
	return milliCPU, memory
}

// quotaLimits resolves a tenant's quota against the pool as it is now.
// With no host connected there is nothing to take a share of, and an
// instance would wait anyway: shares do not limit then.
func (s *Server) quotaLimits(q *api.Quota) (api.QuotaAmounts, error) {
	cpu, mem := s.poolCapacity()
	limits, err := model.ResolveQuota(q, cpu, mem)
	if err != nil {
		return limits, err
	}
	if _, share, _ := model.Share(q.CPU); share && cpu == 0 {
		limits.MilliCPU = api.Unlimited
	}
	if _, share, _ := model.Share(q.Memory); share && mem == 0 {
		limits.MemoryBytes = api.Unlimited
	}
	return limits, nil
}

// tenantForQuota returns tenant name's record for a quota request: an
// administrator may ask about any tenant, a tenant about itself.
func (s *Server) tenantForQuota(ctx context.Context, name string) (*api.Tenant, error) {
	self, err := tenant.Name(ctx)
	if err != nil {
		return nil, err
	}
	if name != self && !isAdmin(ctx) {
		// Other tenants' names are not revealed.
		return nil, fmt.Errorf("tenant %q not found: %w", name, errdefs.ErrNotFound)
	}
	t, err := s.store.GetTenant(ctx, name)
	if errors.Is(err, errdefs.ErrNotFound) && name == self {
		return &api.Tenant{Name: self}, nil // not stored yet: no quota
	}
	return t, err
}

func (s *Server) quotaStatus(ctx context.Context, t *api.Tenant) (api.TenantQuota, error) {
	out := api.TenantQuota{Tenant: t.Name}
	if t.Quota != nil {
		out.Quota = *t.Quota
	}
	limits, err := s.quotaLimits(&out.Quota)
	if err != nil {
		return out, err
	}
	out.Limits = limits
	if out.Used, err = s.store.TenantUsage(ctx, t.Name); err != nil {
		return out, err
	}
	return out, nil
}

func (s *Server) getQuota(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	t, err := s.tenantForQuota(ctx, r.PathValue("name"))
	if err != nil {
		return err
	}
	out, err := s.quotaStatus(ctx, t)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// putQuota replaces a tenant's quota (administrators only). A quota below
// what the tenant uses is accepted: what runs keeps running, and creates
// are refused until the use is below it again, as with Kubernetes'
// ResourceQuota.
func (s *Server) putQuota(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	if err := requireAdmin(ctx); err != nil {
		return err
	}
	var q api.Quota
	if err := decodeJSON(r, &q); err != nil {
		return err
	}
	if err := model.ValidateQuota(&q); err != nil {
		return err
	}
	t, err := s.store.UpdateTenant(ctx, r.PathValue("name"), func(t *api.Tenant) error {
		t.Quota = &q
		return nil
	})
	if err != nil {
		return err
	}
	out, err := s.quotaStatus(ctx, t)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}
