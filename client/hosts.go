package client

import (
	"context"
	"net/http"
	"net/url"

	"github.com/kanga-run/kanga/api"
)

// ListHosts lists the hosts of the pool (administrators only).
func (c *Client) ListHosts(ctx context.Context) ([]api.Host, error) {
	var list api.HostList
	if err := c.doJSON(ctx, http.MethodGet, "/v1/hosts", nil, nil, &list); err != nil {
		return nil, err
	}
	return list.Items, nil
}

// GetHost returns one host (administrators only).
func (c *Client) GetHost(ctx context.Context, name string) (api.Host, error) {
	var h api.Host
	err := c.doJSON(ctx, http.MethodGet, "/v1/hosts/"+url.PathEscape(name), nil, nil, &h)
	return h, err
}

// CordonHost stops the scheduler from placing new instances on a host.
func (c *Client) CordonHost(ctx context.Context, name string) (api.Host, error) {
	var h api.Host
	err := c.doJSON(ctx, http.MethodPost, "/v1/hosts/"+url.PathEscape(name)+"/cordon", nil, nil, &h)
	return h, err
}

// UncordonHost lets the scheduler place instances on a host again.
func (c *Client) UncordonHost(ctx context.Context, name string) (api.Host, error) {
	var h api.Host
	err := c.doJSON(ctx, http.MethodPost, "/v1/hosts/"+url.PathEscape(name)+"/uncordon", nil, nil, &h)
	return h, err
}

// DrainHost cordons a host and re-creates its restartable instances on
// other hosts; the report says what moved and what could not.
func (c *Client) DrainHost(ctx context.Context, name string) (api.DrainReport, error) {
	var rep api.DrainReport
	err := c.doJSON(ctx, http.MethodPost, "/v1/hosts/"+url.PathEscape(name)+"/drain", nil, nil, &rep)
	return rep, err
}
