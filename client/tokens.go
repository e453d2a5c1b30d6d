package client

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/kanga-run/kanga/api"
)

// CreateToken creates a bearer token of the tenant the client acts in and
// returns it with its secret, which is shown only this once.
func (c *Client) CreateToken(ctx context.Context, req api.CreateTokenRequest) (api.CreateTokenResponse, error) {
	var out api.CreateTokenResponse
	err := c.doJSON(ctx, http.MethodPost, "/v1/tokens", nil, req, &out)
	return out, err
}

// ListTokens lists the tenant's tokens; with all, every tenant's
// (administrators only).
func (c *Client) ListTokens(ctx context.Context, all bool) ([]api.Token, error) {
	var q url.Values
	if all {
		q = url.Values{"all": {"true"}}
	}
	var list api.TokenList
	if err := c.doJSON(ctx, http.MethodGet, "/v1/tokens", q, nil, &list); err != nil {
		return nil, err
	}
	return list.Items, nil
}

// RevokeToken revokes a token by its ID.
func (c *Client) RevokeToken(ctx context.Context, id string) (api.Token, error) {
	var t api.Token
	err := c.doJSON(ctx, http.MethodDelete, "/v1/tokens/"+url.PathEscape(id), nil, nil, &t)
	return t, err
}

// CreateJoinToken issues a join token bound to one host name
// (administrators, on kanga server).
func (c *Client) CreateJoinToken(ctx context.Context, req api.CreateJoinTokenRequest) (api.CreateJoinTokenResponse, error) {
	var out api.CreateJoinTokenResponse
	err := c.doJSON(ctx, http.MethodPost, "/v1/join-tokens", nil, req, &out)
	return out, err
}

// ListJoinTokens lists the join tokens.
func (c *Client) ListJoinTokens(ctx context.Context) ([]api.JoinToken, error) {
	var list api.JoinTokenList
	if err := c.doJSON(ctx, http.MethodGet, "/v1/join-tokens", nil, nil, &list); err != nil {
		return nil, err
	}
	return list.Items, nil
}

// RevokeJoinToken revokes a join token and the certificates issued with
// it.
func (c *Client) RevokeJoinToken(ctx context.Context, id string) (api.JoinToken, error) {
	var jt api.JoinToken
	err := c.doJSON(ctx, http.MethodDelete, "/v1/join-tokens/"+url.PathEscape(id), nil, nil, &jt)
	return jt, err
}

// RevokeHost revokes every join token and agent certificate of a host.
func (c *Client) RevokeHost(ctx context.Context, name string) (api.HostRevocation, error) {
	var rev api.HostRevocation
	err := c.doJSON(ctx, http.MethodPost, "/v1/hosts/"+url.PathEscape(name)+"/revoke", nil, nil, &rev)
	return rev, err
}

// UsageOptions select usage; zero values are the server's defaults (the
// last 24 hours, per tenant, the caller's tenant or, for an
// administrator, every tenant).
type UsageOptions struct {
	Since, Until time.Time
	// SinceAgo, if set, is used instead of Since: a duration before now
	// on the server's clock ("1h", "7d").
	SinceAgo   string
	Tenant     string
	ByInstance bool
}

// Usage returns metered usage.
func (c *Client) Usage(ctx context.Context, o UsageOptions) (api.UsageReport, error) {
	q := url.Values{}
	switch {
	case o.SinceAgo != "":
		q.Set("since", o.SinceAgo)
	case !o.Since.IsZero():
		q.Set("since", o.Since.UTC().Format(time.RFC3339))
	}
	if !o.Until.IsZero() {
		q.Set("until", o.Until.UTC().Format(time.RFC3339))
	}
	if o.Tenant != "" {
		q.Set("tenant", o.Tenant)
	}
	if o.ByInstance {
		q.Set("by", "instance")
	}
	var rep api.UsageReport
	err := c.doJSON(ctx, http.MethodGet, "/v1/usage", q, nil, &rep)
	return rep, err
}

// AuditOptions select audit records.
type AuditOptions struct {
	Since  string // RFC 3339 or a duration before now
	Tenant string
	Limit  int
	Verify bool
}

// Audit reads the audit log (administrators with audit:read).
func (c *Client) Audit(ctx context.Context, o AuditOptions) (api.AuditList, error) {
	q := url.Values{}
	if o.Since != "" {
		q.Set("since", o.Since)
	}
	if o.Tenant != "" {
		q.Set("tenant", o.Tenant)
	}
	if o.Limit > 0 {
		q.Set("limit", strconv.Itoa(o.Limit))
	}
	if o.Verify {
		q.Set("verify", "true")
	}
	var out api.AuditList
	err := c.doJSON(ctx, http.MethodGet, "/v1/audit", q, nil, &out)
	return out, err
}
