// Package client is the Go SDK of Kanga's REST API. The kanga CLI, the
// Kubernetes virtual node and the integration tests all talk to the server
// through it.
//
// Every error the server returns is an *APIError whose class is rebuilt from
// the response (its error body, or its status through errdefs/errhttp), so
// callers test it with errors.Is against the sentinels of package errdefs:
//
//	if errors.Is(err, errdefs.ErrNotFound) { ... }
package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
	"github.com/kanga-run/kanga/internal/requestid"
)

// unixHost is the placeholder host of request URLs sent over a unix socket;
// the transport ignores it, but HTTP/1.1 requires a Host header.
const unixHost = "kanga"

// Client talks to one Kanga server on behalf of one tenant token. It is safe
// for concurrent use.
type Client struct {
	addr      string   // as given, for messages
	base      *url.URL // scheme and host of every request URL
	unixPath  string   // non-empty when the server listens on a unix socket
	token     string
	hc        *http.Client
	tlsConfig *tls.Config
	userAgent string
	tenant    string // sent as the Kanga-Tenant header when set
	// busyRetry: see WithBusyRetry; nil is DefaultBusyRetry.
	busyRetry *time.Duration
}

// Option configures a Client.
type Option func(*Client)

// WithHTTPClient makes the client send its ordinary requests through hc.
// Exec does not use it: it dials its own connection, because it upgrades
// the connection to a raw stream.
func WithHTTPClient(hc *http.Client) Option {
	return func(c *Client) { c.hc = hc }
}

// WithTLSConfig sets the TLS configuration for https addresses.
func WithTLSConfig(cfg *tls.Config) Option {
	return func(c *Client) { c.tlsConfig = cfg }
}

// WithUserAgent sets the User-Agent header of every request.
func WithUserAgent(ua string) Option {
	return func(c *Client) { c.userAgent = ua }
}

// WithTenant makes every request act in the named tenant (the
// Kanga-Tenant header). Only an administrator's token may name a tenant
// other than its own.
func WithTenant(name string) Option {
	return func(c *Client) { c.tenant = name }
}

// ForTenant returns a client that shares c's connections and token and
// acts in the named tenant (see WithTenant).
func (c *Client) ForTenant(name string) *Client {
	cc := *c
	cc.tenant = name
	return &cc
}

// New returns a client of the server at addr, authenticating with token.
// addr is "http://host:port", "https://host:port", "host:port" (http) or
// "unix:///path/to/socket".
func New(addr, token string, opts ...Option) (*Client, error) {
	c := &Client{addr: addr, token: token, userAgent: "kanga-client"}
	switch {
	case addr == "":
		return nil, fmt.Errorf("server address is empty: set KANGA_ADDR or the addr of the config file: %w", errdefs.ErrInvalidArgument)
	case strings.HasPrefix(addr, "unix://"):
		c.unixPath = strings.TrimPrefix(addr, "unix://")
		if c.unixPath == "" {
			return nil, fmt.Errorf("server address %q names no socket path: %w", addr, errdefs.ErrInvalidArgument)
		}
		c.base = &url.URL{Scheme: "http", Host: unixHost}
	default:
		if !strings.Contains(addr, "://") {
			addr = "http://" + addr
		}
		u, err := url.Parse(addr)
		if err != nil {
			return nil, fmt.Errorf("server address %q: %v: %w", c.addr, err, errdefs.ErrInvalidArgument)
		}
		if u.Scheme != "http" && u.Scheme != "https" {
			return nil, fmt.Errorf("server address %q: scheme must be http, https or unix: %w", c.addr, errdefs.ErrInvalidArgument)
		}
		if u.Host == "" {
			return nil, fmt.Errorf("server address %q names no host: %w", c.addr, errdefs.ErrInvalidArgument)
		}
		c.base = &url.URL{Scheme: u.Scheme, Host: u.Host}
	}
	for _, o := range opts {
		o(c)
	}
	if c.hc == nil {
		c.hc = &http.Client{Transport: c.newTransport()}
	}
	return c, nil
}

// Addr returns the server address the client was created with.
func (c *Client) Addr() string { return c.addr }

func (c *Client) newTransport() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	// No proxy: Exec dials the server directly, and ordinary requests must
	// reach the same place.
	t.Proxy = nil
	t.TLSClientConfig = c.tlsConfig
	if c.unixPath != "" {
		path := c.unixPath
		t.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		}
	}
	return t
}

func (c *Client) url(path string, query url.Values) string {
	// path arrives escaped (see instancePath); keep it so, so that a "/"
	// in a name cannot change the route.
	u := *c.base
	u.Path, _ = url.PathUnescape(path)
	u.RawPath = path
	u.RawQuery = query.Encode()
	return u.String()
}

func (c *Client) newRequest(ctx context.Context, method, path string, query url.Values, body io.Reader) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.url(path, query), body)
	if err != nil {
		return nil, fmt.Errorf("building request %s %s: %w", method, path, err)
	}
	c.setHeaders(req)
	return req, nil
}

func (c *Client) setHeaders(req *http.Request) {
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	if c.userAgent != "" {
		req.Header.Set("User-Agent", c.userAgent)
	}
	if c.tenant != "" {
		req.Header.Set(api.HeaderTenant, c.tenant)
	}
	if id := requestid.From(req.Context()); id != "" {
		req.Header.Set(api.HeaderRequestID, id)
	}
}

// WithRequestID returns ctx carrying a request ID that the client sends
// in the Kanga-Request-Id header. The control plane uses it to tie a
// host's log lines to the API request they serve; a server takes it only
// from a caller it trusts.
func WithRequestID(ctx context.Context, id string) context.Context {
	return requestid.With(ctx, id)
}

// send performs req and returns the response if its status is 2xx; any
// other response becomes an *APIError and its body is closed.
func (c *Client) send(req *http.Request) (*http.Response, error) {
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, c.transportError(req.Context(), err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		defer resp.Body.Close()
		return nil, decodeError(resp)
	}
	return resp, nil
}

// transportError explains a failure to reach the server. A cancelled
// context is reported as such, not as an unreachable server.
func (c *Client) transportError(ctx context.Context, err error) error {
	if ctxErr := ctx.Err(); ctxErr != nil {
		return ctxErr
	}
	return withClass(fmt.Errorf("cannot reach the kanga server at %s (is it running? `kanga up` starts one): %w", c.addr, err), errdefs.ErrUnavailable)
}

// doJSON sends in (if not nil) as JSON and decodes a 2xx response into out
// (if not nil).
//
// A request the server refused for now (429) is sent again after the
// pause it asked for (retry.go).
func (c *Client) doJSON(ctx context.Context, method, path string, query url.Values, in, out any) error {
	var body []byte
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("encoding request body: %w", err)
		}
		body = b
	}
	begun := time.Now()
	var resp *http.Response
	for attempt := 0; ; attempt++ {
		var r io.Reader
		if body != nil {
			r = bytes.NewReader(body)
		}
		req, err := c.newRequest(ctx, method, path, query, r)
		if err != nil {
			return err
		}
		if in != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		req.Header.Set("Accept", "application/json")
		resp, err = c.send(req)
		if err == nil {
			break
		}
		if err := c.waitRetry(ctx, method, path, err, attempt, begun); err != nil {
			return err
		}
	}
	defer resp.Body.Close()
	if out == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("decoding the response of %s %s: %w", method, path, err)
	}
	return nil
}

// Version returns the server's version and the tenant the token belongs to.
func (c *Client) Version(ctx context.Context) (api.Version, error) {
	var v api.Version
	err := c.doJSON(ctx, http.MethodGet, "/v1/version", nil, nil, &v)
	return v, err
}

// Healthz reports whether the server answers its unauthenticated health
// check.
func (c *Client) Healthz(ctx context.Context) error {
	return c.doJSON(ctx, http.MethodGet, "/v1/healthz", nil, nil, nil)
}

// classed attaches an errdefs class to an error without changing its text.
type classed struct {
	error
	class error
}

func (e classed) Unwrap() []error { return []error{e.error, e.class} }

func withClass(err, class error) error { return classed{error: err, class: class} }

// errorsAsAPI is errors.As for *APIError, kept short for callers.
func errorsAsAPI(err error) (*APIError, bool) {
	var ae *APIError
	ok := errors.As(err, &ae)
	return ae, ok
}
