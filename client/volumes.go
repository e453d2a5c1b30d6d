package client

import (
	"context"
	"net/http"
	"net/url"

	"github.com/kanga-run/kanga/api"
)

// CreateVolume makes a persistent volume in the tenant the client acts
// in, on the host the request names or one the platform chooses.
func (c *Client) CreateVolume(ctx context.Context, req api.CreateVolumeRequest) (api.PersistentVolume, error) {
	var out api.PersistentVolume
	err := c.doJSON(ctx, http.MethodPost, "/v1/volumes", nil, req, &out)
	return out, err
}

// GetVolume returns a persistent volume.
func (c *Client) GetVolume(ctx context.Context, name string) (api.PersistentVolume, error) {
	var out api.PersistentVolume
	err := c.doJSON(ctx, http.MethodGet, "/v1/volumes/"+url.PathEscape(name), nil, nil, &out)
	return out, err
}

// ListVolumes lists the tenant's persistent volumes by name.
func (c *Client) ListVolumes(ctx context.Context) ([]api.PersistentVolume, error) {
	var list api.PersistentVolumeList
	if err := c.doJSON(ctx, http.MethodGet, "/v1/volumes", nil, nil, &list); err != nil {
		return nil, err
	}
	return list.Items, nil
}

// DeleteVolume removes a persistent volume and its data; a volume an
// instance holds is a conflict naming the instance.
func (c *Client) DeleteVolume(ctx context.Context, name string) error {
	return c.doJSON(ctx, http.MethodDelete, "/v1/volumes/"+url.PathEscape(name), nil, nil, nil)
}
