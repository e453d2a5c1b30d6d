package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
)

// ListImages returns the images known to the platform.
func (c *Client) ListImages(ctx context.Context) ([]api.Image, error) {
	var list api.ImageList
	if err := c.doJSON(ctx, http.MethodGet, "/v1/images", nil, nil, &list); err != nil {
		return nil, err
	}
	return list.Items, nil
}

// GetImage returns one of the tenant's images: its default command and
// the hosts that hold it. It fails with errdefs.ErrNotFound when no host
// holds it; it never pulls.
func (c *Client) GetImage(ctx context.Context, ref string) (api.ImageDetail, error) {
	var d api.ImageDetail
	err := c.doJSON(ctx, http.MethodGet, "/v1/images/"+url.PathEscape(ref), nil, nil, &d)
	return d, err
}

// RemoveImage takes ref away from the tenant on every host. Without
// force it fails with errdefs.ErrConflict while an instance of the
// tenant that is not terminal uses the image.
func (c *Client) RemoveImage(ctx context.Context, ref string, force bool) error {
	var q url.Values
	if force {
		q = url.Values{"force": {"true"}}
	}
	return c.doJSON(ctx, http.MethodDelete, "/v1/images/"+url.PathEscape(ref), q, nil, nil)
}

// ImportImage uploads an image archive (docker save or OCI layout tar) and
// returns the images it held. size is the archive's length in bytes, or -1
// if unknown. progress, if not nil, sees every progress message of the
// server, including the last.
func (c *Client) ImportImage(ctx context.Context, r io.Reader, size int64, progress func(api.Progress)) ([]api.Image, error) {
	// NopCloser: the caller owns r, and the transport would close it.
	req, err := c.newRequest(ctx, http.MethodPost, "/v1/images/import", nil, io.NopCloser(r))
	if err != nil {
		return nil, err
	}
	req.ContentLength = size
	if size < 0 {
		req.ContentLength = -1
	}
	req.Header.Set("Content-Type", "application/x-tar")
	return c.progressStream(req, "image import", progress)
}

// PullImage pulls ref from its registry and returns the image.
func (c *Client) PullImage(ctx context.Context, ref string, progress func(api.Progress)) (api.Image, error) {
	b, err := json.Marshal(api.PullRequest{Ref: ref})
	if err != nil {
		return api.Image{}, err
	}
	req, err := c.newRequest(ctx, http.MethodPost, "/v1/images/pull", nil, bytes.NewReader(b))
	if err != nil {
		return api.Image{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	images, err := c.progressStream(req, "pull "+ref, progress)
	if err != nil {
		return api.Image{}, err
	}
	if len(images) == 0 {
		return api.Image{}, fmt.Errorf("pull %s: the server reported success but no image: %w", ref, errdefs.ErrUnavailable)
	}
	return images[0], nil
}

// progressStream sends req and reads its newline-delimited api.Progress
// answer up to the Done or Error line.
func (c *Client) progressStream(req *http.Request, what string, progress func(api.Progress)) ([]api.Image, error) {
	resp, err := c.send(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	dec := json.NewDecoder(resp.Body)
	for {
		var p api.Progress
		if err := dec.Decode(&p); err != nil {
			if ctxErr := req.Context().Err(); ctxErr != nil {
				return nil, ctxErr
			}
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return nil, errIncomplete(what)
			}
			return nil, fmt.Errorf("%s: reading progress: %w", what, err)
		}
		if progress != nil {
			progress(p)
		}
		if p.Error != nil {
			return nil, fromAPI(*p.Error)
		}
		if p.Done {
			return p.Images, nil
		}
	}
}

// PrewarmImage makes ref ready to start on hosts hosts (0: every host)
// ahead of a burst: pulled where missing, unpacked, resolved. The result
// lists the hosts that have it ready.
func (c *Client) PrewarmImage(ctx context.Context, ref string, hosts int) (api.PrewarmResult, error) {
	var res api.PrewarmResult
	err := c.doJSON(ctx, http.MethodPost, "/v1/images/prewarm", nil, api.PrewarmRequest{Ref: ref, Hosts: hosts}, &res)
	return res, err
}
