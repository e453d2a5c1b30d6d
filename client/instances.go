package client

import (
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
)

func instancePath(name string, sub ...string) string {
	p := "/v1/instances/" + url.PathEscape(name)
	for _, s := range sub {
		p += "/" + s
	}
	return p
}

// CreateInstance asks for a new instance and returns it as recorded; it does
// not wait for it to run (see WaitInstance).
func (c *Client) CreateInstance(ctx context.Context, req api.CreateInstanceRequest) (api.Instance, error) {
	var inst api.Instance
	err := c.doJSON(ctx, http.MethodPost, "/v1/instances", nil, req, &inst)
	return inst, err
}

// ListInstances returns all of the tenant's instances, in any phase,
// oldest first.
func (c *Client) ListInstances(ctx context.Context) ([]api.Instance, error) {
	return c.ListInstancesSelected(ctx, "")
}

// ListInstancesSelected returns the tenant's instances whose labels
// match a Kubernetes label selector ("app=web,tier!=db", "env in (a,b)");
// an empty selector returns them all. It reads the list in pages of
// ListPageSize, all of one snapshot.
func (c *Client) ListInstancesSelected(ctx context.Context, selector string) ([]api.Instance, error) {
	var out []api.Instance
	opts := ListOptions{LabelSelector: selector, Limit: ListPageSize}
	for {
		page, err := c.ListInstancesPage(ctx, opts)
		if err != nil {
			return nil, err
		}
		out = append(out, page.Items...)
		if page.Continue == "" {
			if out == nil {
				out = []api.Instance{}
			}
			return out, nil
		}
		opts.Continue = page.Continue
	}
}

// ListPageSize is how many instances ListInstances asks for at a time.
const ListPageSize = 500

// ListOptions page and filter a list, as Kubernetes does.
type ListOptions struct {
	// LabelSelector keeps the instances whose labels match it.
	LabelSelector string
	// Limit is the most items a page holds; 0 is all of them.
	Limit int
	// Continue is the previous page's Continue: the next page, of the
	// same snapshot. A listing whose snapshot etcd has compacted since
	// fails with errdefs.ErrConflict: list again from the start.
	Continue string
}

// ListInstancesPage returns one page of the tenant's instances, oldest
// first; its Continue, when set, fetches the next one.
func (c *Client) ListInstancesPage(ctx context.Context, opts ListOptions) (api.InstanceList, error) {
	q := url.Values{}
	if opts.LabelSelector != "" {
		q.Set("labelSelector", opts.LabelSelector)
	}
	if opts.Limit > 0 {
		q.Set("limit", strconv.Itoa(opts.Limit))
	}
	if opts.Continue != "" {
		q.Set("continue", opts.Continue)
	}
	var list api.InstanceList
	if err := c.doJSON(ctx, http.MethodGet, "/v1/instances", q, nil, &list); err != nil {
		return api.InstanceList{}, err
	}
	return list, nil
}

// GetInstance returns one instance.
func (c *Client) GetInstance(ctx context.Context, name string) (api.Instance, error) {
	var inst api.Instance
	err := c.doJSON(ctx, http.MethodGet, instancePath(name), nil, nil, &inst)
	return inst, err
}

// DeleteInstance removes an instance and returns once it is torn down (or,
// when the host does not answer in time, once the deletion is recorded: the
// server then answers 202 and finishes the teardown later).
// Without force the server refuses (errdefs.ErrConflict or
// ErrFailedPrecondition) to delete an instance that is not terminal.
func (c *Client) DeleteInstance(ctx context.Context, name string, force bool) error {
	q := url.Values{}
	if force {
		q.Set("force", "true")
	}
	return c.doJSON(ctx, http.MethodDelete, instancePath(name), q, nil, nil)
}

// StopInstance stops every container of an instance, giving each timeout to
// exit after SIGTERM before it is killed, and returns the stopped instance.
// A negative timeout leaves the grace period to the server's default.
func (c *Client) StopInstance(ctx context.Context, name string, timeout time.Duration) (api.Instance, error) {
	q := url.Values{}
	if timeout >= 0 {
		secs := int64(math.Ceil(timeout.Seconds()))
		q.Set("timeout", strconv.FormatInt(secs, 10))
	}
	var inst api.Instance
	err := c.doJSON(ctx, http.MethodPost, instancePath(name, "stop"), q, nil, &inst)
	return inst, err
}

// KillOptions says which signal KillInstance sends, and to which container.
type KillOptions struct {
	// Signal is a name ("KILL", "SIGTERM") or a number; empty is SIGKILL.
	Signal string
	// Container is one container; empty means every running one.
	Container string
}

// KillInstance sends a signal to the running containers of an instance,
// as docker kill does. It does not stop the instance: a container that
// exits is restarted if the restart policy says so.
func (c *Client) KillInstance(ctx context.Context, name string, opts KillOptions) error {
	q := url.Values{}
	if opts.Signal != "" {
		q.Set("signal", opts.Signal)
	}
	if opts.Container != "" {
		q.Set("container", opts.Container)
	}
	return c.doJSON(ctx, http.MethodPost, instancePath(name, "kill"), q, nil, nil)
}

// WaitCondition is what WaitInstance waits for.
type WaitCondition string

const (
	// WaitRunning is met when the instance is Running or terminal.
	WaitRunning WaitCondition = "running"
	// WaitTerminal is met when the instance is Succeeded or Failed.
	WaitTerminal WaitCondition = "terminal"
)

// WaitInstance blocks until the instance meets cond, or ctx ends, and
// returns the instance as it was then.
func (c *Client) WaitInstance(ctx context.Context, name string, cond WaitCondition) (api.Instance, error) {
	q := url.Values{"condition": {string(cond)}}
	for {
		start := time.Now()
		var inst api.Instance
		err := c.doJSON(ctx, http.MethodGet, instancePath(name, "wait"), q, nil, &inst)
		// The server bounds each wait and answers 504 when its own timeout
		// passes first: ask again.
		ae, ok := errorsAsAPI(err)
		if !ok || ae.StatusCode != http.StatusGatewayTimeout {
			return inst, err
		}
		// A proxy that fails fast with 504 must not make this a busy loop.
		if time.Since(start) < time.Second {
			select {
			case <-ctx.Done():
				return inst, ctx.Err()
			case <-time.After(time.Second):
			}
		}
	}
}

// LogsOptions selects the logs to read.
type LogsOptions struct {
	// Follow streams new output until the instance is terminal.
	Follow bool
	// Container names the container; empty means the server's default
	// (the only or the first container).
	Container string
	// Previous returns only the output of the container's run before its
	// latest restart (kubectl logs --previous); not found when it has not
	// restarted.
	Previous bool
}

// Logs returns the output of a container of an instance. The caller must
// close the reader; with Follow it ends when the instance is terminal or
// ctx ends.
func (c *Client) Logs(ctx context.Context, name string, opts LogsOptions) (io.ReadCloser, error) {
	q := url.Values{}
	if opts.Follow {
		q.Set("follow", "true")
	}
	if opts.Container != "" {
		q.Set("container", opts.Container)
	}
	if opts.Previous {
		q.Set("previous", "true")
	}
	req, err := c.newRequest(ctx, http.MethodGet, instancePath(name, "logs"), q, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.send(req)
	if err != nil {
		return nil, err
	}
	return resp.Body, nil
}

// errIncomplete reports a stream that ended without its final message.
func errIncomplete(what string) error {
	return fmt.Errorf("%s: the server closed the stream before reporting a result: %w", what, errdefs.ErrUnavailable)
}

// Stats returns a fresh sample of an instance's resource counters.
func (c *Client) Stats(ctx context.Context, name string) (api.InstanceStats, error) {
	var st api.InstanceStats
	err := c.doJSON(ctx, http.MethodGet, instancePath(name, "stats"), nil, nil, &st)
	return st, err
}

// Top lists the processes of an instance's containers, as docker top
// does, read by the host from /proc (the image needs no ps).
func (c *Client) Top(ctx context.Context, name string) ([]api.Process, error) {
	var list api.ProcessList
	if err := c.doJSON(ctx, http.MethodGet, instancePath(name, "top"), nil, nil, &list); err != nil {
		return nil, err
	}
	return list.Items, nil
}

// SLA returns the instance's report of promised against delivered
// resources.
func (c *Client) SLA(ctx context.Context, name string) (api.SLAReport, error) {
	var r api.SLAReport
	err := c.doJSON(ctx, http.MethodGet, instancePath(name, "sla"), nil, nil, &r)
	return r, err
}

// AttachDevice gives a running instance devices (kanga device attach):
// Count of a CDI kind, or the one named. It returns the instance with the
// devices in its spec (by name); status.devices follows when its host
// next reports.
func (c *Client) AttachDevice(ctx context.Context, name string, req api.DeviceRequest) (api.Instance, error) {
	var out api.Instance
	err := c.doJSON(ctx, http.MethodPost, instancePath(name, "devices"), nil, req, &out)
	return out, err
}

// DetachDevice takes device (a qualified CDI name) from a running
// instance.
func (c *Client) DetachDevice(ctx context.Context, name, device string) (api.Instance, error) {
	var out api.Instance
	err := c.doJSON(ctx, http.MethodDelete, instancePath(name, "devices"), url.Values{"name": {device}}, nil, &out)
	return out, err
}
