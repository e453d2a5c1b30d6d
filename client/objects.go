package client

import (
	"context"
	"net/http"
	"net/url"

	"github.com/kanga-run/kanga/api"
)

// CreateSecret creates a secret in the tenant the client acts in. The
// answer carries its keys and sizes, not its values.
func (c *Client) CreateSecret(ctx context.Context, name string, data map[string][]byte) (api.Secret, error) {
	var out api.Secret
	err := c.doJSON(ctx, http.MethodPost, "/v1/secrets", nil, api.CreateSecretRequest{Name: name, Data: data}, &out)
	return out, err
}

// UpdateSecret replaces a secret's data as a whole.
func (c *Client) UpdateSecret(ctx context.Context, name string, data map[string][]byte) (api.Secret, error) {
	var out api.Secret
	err := c.doJSON(ctx, http.MethodPut, "/v1/secrets/"+url.PathEscape(name), nil, api.UpdateSecretRequest{Data: data}, &out)
	return out, err
}

// GetSecret returns a secret's keys and sizes, never its values.
func (c *Client) GetSecret(ctx context.Context, name string) (api.Secret, error) {
	var out api.Secret
	err := c.doJSON(ctx, http.MethodGet, "/v1/secrets/"+url.PathEscape(name), nil, nil, &out)
	return out, err
}

// RevealSecret returns a secret with its values. It needs the
// secrets:reveal scope, and the server's audit log records the call.
func (c *Client) RevealSecret(ctx context.Context, name string) (api.Secret, error) {
	var out api.Secret
	err := c.doJSON(ctx, http.MethodPost, "/v1/secrets/"+url.PathEscape(name)+"/reveal", nil, nil, &out)
	return out, err
}

// ListSecrets lists the tenant's secrets, without values.
func (c *Client) ListSecrets(ctx context.Context) ([]api.Secret, error) {
	var list api.SecretList
	if err := c.doJSON(ctx, http.MethodGet, "/v1/secrets", nil, nil, &list); err != nil {
		return nil, err
	}
	return list.Items, nil
}

// DeleteSecret removes a secret.
func (c *Client) DeleteSecret(ctx context.Context, name string) error {
	return c.doJSON(ctx, http.MethodDelete, "/v1/secrets/"+url.PathEscape(name), nil, nil, nil)
}

// RotateSecretKey makes a new secret key and re-encrypts every tenant's
// secrets with it (administrators).
func (c *Client) RotateSecretKey(ctx context.Context) (api.SecretKeyRotation, error) {
	var out api.SecretKeyRotation
	err := c.doJSON(ctx, http.MethodPost, "/v1/secret-keys/rotate", nil, nil, &out)
	return out, err
}

// CreateConfig creates a config in the tenant the client acts in.
func (c *Client) CreateConfig(ctx context.Context, name string, data map[string][]byte) (api.Config, error) {
	var out api.Config
	err := c.doJSON(ctx, http.MethodPost, "/v1/configs", nil, api.CreateConfigRequest{Name: name, Data: data}, &out)
	return out, err
}

// UpdateConfig replaces a config's data as a whole.
func (c *Client) UpdateConfig(ctx context.Context, name string, data map[string][]byte) (api.Config, error) {
	var out api.Config
	err := c.doJSON(ctx, http.MethodPut, "/v1/configs/"+url.PathEscape(name), nil, api.UpdateConfigRequest{Data: data}, &out)
	return out, err
}

// GetConfig returns a config with its data.
func (c *Client) GetConfig(ctx context.Context, name string) (api.Config, error) {
	var out api.Config
	err := c.doJSON(ctx, http.MethodGet, "/v1/configs/"+url.PathEscape(name), nil, nil, &out)
	return out, err
}

// ListConfigs lists the tenant's configs, keys and sizes without data.
func (c *Client) ListConfigs(ctx context.Context) ([]api.Config, error) {
	var list api.ConfigList
	if err := c.doJSON(ctx, http.MethodGet, "/v1/configs", nil, nil, &list); err != nil {
		return nil, err
	}
	return list.Items, nil
}

// DeleteConfig removes a config.
func (c *Client) DeleteConfig(ctx context.Context, name string) error {
	return c.doJSON(ctx, http.MethodDelete, "/v1/configs/"+url.PathEscape(name), nil, nil, nil)
}
