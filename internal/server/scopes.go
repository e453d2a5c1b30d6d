package server

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
	"github.com/kanga-run/kanga/internal/store"
	"github.com/kanga-run/kanga/internal/tenant"
)

// Scopes follow the route by convention: /v1/<resource>/... needs
// <resource>:read for GET and <resource>:write otherwise, so a route added
// later gets a sensible scope without an entry here. scopeOverrides lists
// the exceptions; "" admits any valid token.
var scopeOverrides = map[string]string{
	"GET /v1/version":                "",
	"GET /v1/runtimes":               "",
	"GET /v1/types":                  "",
	"POST /v1/instances/{name}/exec": api.ScopeExec,
	"GET /v1/tenants":                api.ScopeTenantsAdmin,
	"GET /v1/join-tokens":            api.ScopeHostsRead,
	"POST /v1/join-tokens":           api.ScopeHostsWrite,
	"DELETE /v1/join-tokens/{id}":    api.ScopeHostsWrite,
	// Revealing values is a scope of its own: read-only tokens list and
	// inspect secrets without it.
	"POST /v1/secrets/{name}/reveal": api.ScopeSecretsReveal,
	"POST /v1/secret-keys/rotate":    api.ScopeTenantsAdmin,
	"GET /metrics":                   api.ScopeMetricsRead,
	// Events are the instances' (their status's events).
	"GET /v1/events": api.ScopeInstancesRead,
}

// requiredScope returns the scope a route (net/http pattern with method)
// needs.
func requiredScope(pattern string) string {
	if s, ok := scopeOverrides[pattern]; ok {
		return s
	}
	method, path, _ := strings.Cut(pattern, " ")
	res, _, _ := strings.Cut(strings.TrimPrefix(path, "/v1/"), "/")
	read := method == http.MethodGet || method == http.MethodHead
	if res == "tenants" {
		// Changing tenants is the administrator's; reading one's own
		// tenant is everyone's (the handlers refuse other tenants).
		if read {
			return ""
		}
		return api.ScopeTenantsAdmin
	}
	if read {
		return res + ":read"
	}
	return res + ":write"
}

// isAdminScope reports whether only an administrator may hold scope: the
// administrator's own scopes, and any of a resource the platform owns.
func isAdminScope(scope string) bool {
	return slices.Contains(api.AdminScopes, scope) || strings.HasPrefix(scope, "hosts:") || strings.HasPrefix(scope, "tenants:") || strings.HasPrefix(scope, "audit:")
}

// holds reports whether a token with scopes may use scope.
func holds(scopes []string, scope string) bool {
	if scope == "" {
		return true
	}
	for _, s := range scopes {
		switch {
		case s == scope, s == api.ScopeEverything:
			return true
		case s == api.ScopeAll && !isAdminScope(scope):
			return true
		}
	}
	return false
}

// knownScope reports whether s may be given to a token.
func knownScope(s string) bool {
	return s == api.ScopeAll || s == api.ScopeEverything || slices.Contains(api.TenantScopes, s) || slices.Contains(api.AdminScopes, s)
}

type principalKey struct{}

// principalOf returns the principal a request authenticated as.
func principalOf(ctx context.Context) (store.Principal, bool) {
	p, ok := ctx.Value(principalKey{}).(store.Principal)
	return p, ok
}

// hasScope reports whether the request's token holds scope.
func hasScope(ctx context.Context, scope string) bool {
	p, ok := principalOf(ctx)
	return ok && holds(p.Scopes, scope)
}

// checkScope answers 403 naming the scope when the token lacks the one
// the route needs.
func checkScope(r *http.Request, p store.Principal) error {
	need := requiredScope(r.Pattern)
	if holds(p.Scopes, need) {
		return nil
	}
	fix := "create a token that has it: kanga token create --scope " + need
	if isAdminScope(need) {
		fix = "only an administrator's token (the one kanga up writes) holds it"
	}
	return fmt.Errorf("token %s lacks the scope %s that %s %s needs (it has %s): %s: %w",
		p.TokenID, need, r.Method, r.URL.Path, strings.Join(p.Scopes, ","), fix, errdefs.ErrPermissionDenied)
}

// grantableScopes resolves the scopes asked for a new token against the
// creator's: a token never gets a scope its creator lacks, and read-only
// stands for the creator's :read scopes. Empty asks for the creator's own.
func grantableScopes(creator []string, asked []string) ([]string, error) {
	if len(asked) == 0 {
		return slices.Clone(creator), nil
	}
	var out []string
	for _, s := range asked {
		s = strings.TrimSpace(s)
		if s == api.ScopeReadOnly {
			for _, c := range append(slices.Clone(api.TenantScopes), api.AdminScopes...) {
				if strings.HasSuffix(c, ":read") && holds(creator, c) {
					out = append(out, c)
				}
			}
			continue
		}
		if !knownScope(s) {
			return nil, fmt.Errorf("scopes: %q is not a scope; known: %s, %s, %s, %s and %s: %w", s,
				strings.Join(api.TenantScopes, ", "), strings.Join(api.AdminScopes, ", "), api.ScopeAll, api.ScopeReadOnly, api.ScopeEverything, errdefs.ErrInvalidArgument)
		}
		ok := holds(creator, s)
		if s == api.ScopeAll {
			ok = slices.Contains(creator, api.ScopeAll) || slices.Contains(creator, api.ScopeEverything)
		}
		if s == api.ScopeEverything {
			ok = slices.Contains(creator, api.ScopeEverything)
		}
		if !ok {
			return nil, fmt.Errorf("scopes: your token lacks %s and cannot give it to another: %w", s, errdefs.ErrPermissionDenied)
		}
		out = append(out, s)
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// admit checks an authenticated request against its token: the route's
// scope and the tenant it acts in. It returns the context the handler
// runs in, carrying the tenant and the principal.
func (s *Server) admit(r *http.Request, p store.Principal) (context.Context, error) {
	noteAuditPrincipal(r.Context(), p, p.Tenant)
	if err := p.Expired(s.now()); err != nil {
		return nil, err
	}
	if err := checkScope(r, p); err != nil {
		return nil, err
	}
	name, err := s.actingTenant(r, p.Tenant, p.Admin)
	if err != nil {
		return nil, err
	}
	noteAuditPrincipal(r.Context(), p, name)
	ctx := tenant.WithName(r.Context(), name)
	ctx = context.WithValue(ctx, principalKey{}, p)
	if p.Admin {
		ctx = context.WithValue(ctx, adminKey{}, true)
	}
	return ctx, nil
}
