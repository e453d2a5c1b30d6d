package client

import (
	"context"
	"net/http"
	"net/url"

	"github.com/kanga-run/kanga/api"
)

// ListRuntimes returns the runtime classes, where they run and whether the
// caller's tenant may use them.
func (c *Client) ListRuntimes(ctx context.Context) ([]api.RuntimeClass, error) {
	var list api.RuntimeClassList
	if err := c.doJSON(ctx, http.MethodGet, "/v1/runtimes", nil, nil, &list); err != nil {
		return nil, err
	}
	return list.Items, nil
}

// CreateTenant creates a tenant and returns it with its first token
// (administrators only).
func (c *Client) CreateTenant(ctx context.Context, req api.CreateTenantRequest) (api.CreateTenantResponse, error) {
	var out api.CreateTenantResponse
	err := c.doJSON(ctx, http.MethodPost, "/v1/tenants", nil, req, &out)
	return out, err
}

// ListTenants lists tenants (administrators only).
func (c *Client) ListTenants(ctx context.Context) ([]api.Tenant, error) {
	var list api.TenantList
	if err := c.doJSON(ctx, http.MethodGet, "/v1/tenants", nil, nil, &list); err != nil {
		return nil, err
	}
	return list.Items, nil
}

// GetTenant returns a tenant's policy.
func (c *Client) GetTenant(ctx context.Context, name string) (api.Tenant, error) {
	var t api.Tenant
	err := c.doJSON(ctx, http.MethodGet, "/v1/tenants/"+url.PathEscape(name), nil, nil, &t)
	return t, err
}

// DeleteTenant deletes a tenant without instances and revokes its tokens.
func (c *Client) DeleteTenant(ctx context.Context, name string) error {
	return c.doJSON(ctx, http.MethodDelete, "/v1/tenants/"+url.PathEscape(name), nil, nil, nil)
}

// GetTenantQuota returns a tenant's quota, what it allows now and what
// the tenant's instances use (the caller's own tenant, or any for
// administrators).
func (c *Client) GetTenantQuota(ctx context.Context, name string) (api.TenantQuota, error) {
	var q api.TenantQuota
	err := c.doJSON(ctx, http.MethodGet, "/v1/tenants/"+url.PathEscape(name)+"/quota", nil, nil, &q)
	return q, err
}

// SetTenantQuota replaces a tenant's quota (administrators only) and
// returns it with the tenant's usage.
func (c *Client) SetTenantQuota(ctx context.Context, name string, q api.Quota) (api.TenantQuota, error) {
	var out api.TenantQuota
	err := c.doJSON(ctx, http.MethodPut, "/v1/tenants/"+url.PathEscape(name)+"/quota", nil, q, &out)
	return out, err
}

// SetTenantSecurity replaces a tenant's security policy (administrators
// only); an empty policy resets it to the platform's defaults.
func (c *Client) SetTenantSecurity(ctx context.Context, name string, sec api.TenantSecurity) (api.Tenant, error) {
	var t api.Tenant
	err := c.doJSON(ctx, http.MethodPut, "/v1/tenants/"+url.PathEscape(name)+"/security", nil, sec, &t)
	return t, err
}

// ListTypes returns the instance types.
func (c *Client) ListTypes(ctx context.Context) ([]api.InstanceType, error) {
	var list api.InstanceTypeList
	if err := c.doJSON(ctx, http.MethodGet, "/v1/types", nil, nil, &list); err != nil {
		return nil, err
	}
	return list.Items, nil
}

// GetTenantNetwork returns a tenant's network policy (empty for the
// default).
func (c *Client) GetTenantNetwork(ctx context.Context, name string) (api.TenantNetworkPolicy, error) {
	var p api.TenantNetworkPolicy
	err := c.doJSON(ctx, http.MethodGet, "/v1/tenants/"+url.PathEscape(name)+"/network", nil, nil, &p)
	return p, err
}

// SetTenantNetwork replaces a tenant's network policy (administrators
// only); an empty policy restores the default.
func (c *Client) SetTenantNetwork(ctx context.Context, name string, p api.TenantNetworkPolicy) (api.Tenant, error) {
	var t api.Tenant
	err := c.doJSON(ctx, http.MethodPut, "/v1/tenants/"+url.PathEscape(name)+"/network", nil, p, &t)
	return t, err
}
