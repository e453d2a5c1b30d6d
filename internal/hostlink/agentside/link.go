// Package agentside is the agent's end of the host link (agent -> control
// plane): Link registers the host, holds its lease, follows the instances
// placed on it and the network view, and writes their status back. It is
// what the agent runs against in place of the store (agent.Store,
// agent.UsageSink, agent.Purges), in the host contract's types.
package agentside

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
	"github.com/kanga-run/kanga/internal/hostcontract"
	"github.com/kanga-run/kanga/internal/hostlink"
	"github.com/kanga-run/kanga/internal/hostlink/join"
	"github.com/kanga-run/kanga/internal/tenant"
)

// Link is the agent's end: a remote implementation of the store the agent
// (internal/agent) runs against, and the registration and heartbeat of
// its host.
type Link struct {
	urls []string     // the server replicas
	cur  atomic.Int64 // index of the one in use
	host string
	hc   *http.Client
	log  *slog.Logger

	// Prepare, if set, runs before each registration; the host registers
	// (and so is offered work) only once it succeeds. Set before Run.
	Prepare func(ctx context.Context) error
	// Registered, if set, receives the server's answer to each
	// registration. Set before Run.
	Registered func(hostlink.RegisterResponse)
}

// LinkOption configures a Link.
type LinkOption func(*http.Transport)

// WithDialer makes the link dial with d (the simulated hosts of `kanga
// bench schedule` connect through in-memory pipes: ten thousand hosts
// would need more file descriptors than a process may have).
func WithDialer(d func(ctx context.Context, network, addr string) (net.Conn, error)) LinkOption {
	return func(t *http.Transport) { t.DialContext = d }
}

// NewLink returns the link of host to the server at serverURL, or to the
// first of several comma-separated replicas that answers: when one fails
// (dial error, broken stream) the link moves to the next. The link speaks
// HTTP/2 when the server does, so that its heartbeat, stream and writes
// share one connection, and pings it, so that a hung server is noticed.
func NewLink(serverURL, host string, creds *join.Credentials, log *slog.Logger, opts ...LinkOption) *Link {
	if log == nil {
		log = slog.Default()
	}
	tr := &http.Transport{TLSClientConfig: creds.ClientTLS(), MaxIdleConnsPerHost: 16, ForceAttemptHTTP2: true,
		TLSHandshakeTimeout: 5 * time.Second,
		HTTP2:               &http.HTTP2Config{SendPingTimeout: 5 * time.Second, PingTimeout: 5 * time.Second}}
	for _, o := range opts {
		o(tr)
	}
	return &Link{urls: hostlink.SplitURLs(serverURL), host: host, hc: &http.Client{Transport: tr}, log: log.With("component", "hostlink")}
}

// server returns the replica in use and its index.
func (l *Link) server() (string, int64) {
	i := l.cur.Load()
	return l.urls[int(i)%len(l.urls)], i
}

// failed moves to the next replica after the one at index i failed,
// unless another caller moved already.
func (l *Link) failed(i int64) {
	if len(l.urls) > 1 && l.cur.CompareAndSwap(i, i+1) {
		next, _ := l.server()
		l.log.Warn("control plane replica failed; trying the next", "next", next)
	}
}

func (l *Link) hostURL(base, rest string) string {
	return base + hostlink.PathHost + url.PathEscape(l.host) + rest
}

func (l *Link) do(ctx context.Context, method, rest string, in, out any) error {
	base, idx := l.server()
	u := l.hostURL(base, rest)
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return err
	}
	resp, err := l.hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		l.failed(idx)
		return fmt.Errorf("control plane %s: %v: %w", base, err, errdefs.ErrUnavailable)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return hostlink.ReadError(resp)
	}
	if out == nil {
		return nil
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// Run registers the host and holds its lease through a heartbeat request
// until ctx ends, reconnecting (and registering again) whenever it breaks.
// host is called before each registration, so that what it reports stays
// current.
func (l *Link) Run(ctx context.Context, host func() api.Host) {
	for ctx.Err() == nil {
		if err := l.heartbeatOnce(ctx, host()); err != nil && ctx.Err() == nil {
			l.log.Warn("link to the control plane broke; reconnecting", "err", err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// ReportImages replaces the images the control plane knows this host
// holds (see agent.Agent.ReportImages); the host must be registered.
func (l *Link) ReportImages(ctx context.Context, imgs []api.HostImage) error {
	if imgs == nil {
		imgs = []api.HostImage{} // an empty list, not null
	}
	return l.do(ctx, http.MethodPut, "/images", imgs, nil)
}

// Purges implements agent.Purges: the purges this host has not carried
// out yet.
func (l *Link) Purges(ctx context.Context) ([]hostcontract.Purge, error) {
	var ps []hostlink.Purge
	err := l.do(ctx, http.MethodGet, "/purges", nil, &ps)
	if errors.Is(err, errdefs.ErrNotFound) {
		// A server older than purges has no such route, and none to give:
		// an agent upgraded first still registers.
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	out := make([]hostcontract.Purge, len(ps))
	for i, p := range ps {
		out[i] = p.ForHost()
	}
	return out, nil
}

// AckPurge implements agent.Purges.
func (l *Link) AckPurge(ctx context.Context, p hostcontract.Purge) error {
	return l.do(ctx, http.MethodPut, "/purges", hostlink.PurgeFromHost(p), nil)
}

func (l *Link) heartbeatOnce(ctx context.Context, h api.Host) error {
	if l.Prepare != nil {
		if err := l.Prepare(ctx); err != nil {
			return fmt.Errorf("preparing to register: %w", err)
		}
	}
	var reg hostlink.RegisterResponse
	if err := l.do(ctx, http.MethodPost, "/register", h, &reg); err != nil {
		return fmt.Errorf("registering: %w", err)
	}
	if l.Registered != nil {
		l.Registered(reg)
	}
	base, idx := l.server()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, l.hostURL(base, "/heartbeat"), nil)
	if err != nil {
		return err
	}
	resp, err := l.hc.Do(req)
	if err != nil {
		l.failed(idx)
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return hostlink.ReadError(resp)
	}
	l.log.Info("host registered; holding its lease", "host", h.Name, "server", base)
	watchdog := time.AfterFunc(hostlink.HeartbeatIdle, cancel)
	defer watchdog.Stop()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		watchdog.Reset(hostlink.HeartbeatIdle)
	}
	// The replica ended the stream or went silent (or the agent stops).
	l.failed(idx)
	if err := sc.Err(); err != nil {
		return err
	}
	return io.ErrUnexpectedEOF
}

// ListAllInstances implements agent.Store: the instances placed on this
// host.
func (l *Link) ListAllInstances(ctx context.Context) ([]api.Instance, int64, error) {
	var out hostlink.InstanceList
	if err := l.do(ctx, http.MethodGet, "/instances", nil, &out); err != nil {
		return nil, 0, err
	}
	return out.Items, out.Revision, nil
}

// WatchAllInstances implements agent.Store. The stream is re-opened from
// the last revision seen whenever it breaks, until ctx ends.
func (l *Link) WatchAllInstances(ctx context.Context, fromRevision int64) <-chan hostcontract.InstanceEvent {
	ch := make(chan hostcontract.InstanceEvent, 64)
	go func() {
		defer close(ch)
		rev := fromRevision
		for ctx.Err() == nil {
			err := l.watchOnce(ctx, &rev, ch)
			if ctx.Err() != nil {
				return
			}
			l.log.Warn("instance stream broke; reopening", "rev", rev, "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(500 * time.Millisecond):
			}
		}
	}()
	return ch
}

func (l *Link) watchOnce(ctx context.Context, rev *int64, ch chan<- hostcontract.InstanceEvent) error {
	base, idx := l.server()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, l.hostURL(base, "/watch?rev="+strconv.FormatInt(*rev, 10)), nil)
	if err != nil {
		return err
	}
	resp, err := l.hc.Do(req)
	if err != nil {
		l.failed(idx)
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return hostlink.ReadError(resp)
	}
	dec := json.NewDecoder(resp.Body)
	for {
		var line hostlink.WatchEvent
		if err := dec.Decode(&line); err != nil {
			return err
		}
		ev := line.ForHost()
		if ev.Revision > *rev {
			*rev = ev.Revision
		}
		select {
		case ch <- ev:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (l *Link) instanceURL(ctx context.Context, name string) (string, error) {
	t, err := tenant.Name(ctx)
	if err != nil {
		return "", err
	}
	return "/instances/" + url.PathEscape(t) + "/" + url.PathEscape(name), nil
}

// GetInstance returns an instance placed on this host (NotFound for any
// other).
func (l *Link) GetInstance(ctx context.Context, name string) (*api.Instance, error) {
	u, err := l.instanceURL(ctx, name)
	if err != nil {
		return nil, err
	}
	var vi hostlink.VersionedInstance
	if err := l.do(ctx, http.MethodGet, u, nil, &vi); err != nil {
		return nil, err
	}
	return &vi.Instance, nil
}

// UpdateInstance implements agent.Store: read the current version, apply
// fn, send the resulting status with the fingerprint of the version read;
// on Conflict, again. Only the status is sent: that is all an agent may
// change.
func (l *Link) UpdateInstance(ctx context.Context, name string, fn func(*api.Instance) error) (*api.Instance, error) {
	u, err := l.instanceURL(ctx, name)
	if err != nil {
		return nil, err
	}
	for {
		var vi hostlink.VersionedInstance
		if err := l.do(ctx, http.MethodGet, u, nil, &vi); err != nil {
			return nil, err
		}
		in := vi.Instance
		if err := fn(&in); err != nil {
			return nil, err
		}
		var out hostlink.VersionedInstance
		err := l.do(ctx, http.MethodPut, u, hostlink.StatusWrite{UID: vi.Instance.UID, Fingerprint: vi.Fingerprint, Status: in.Status}, &out)
		if errors.Is(err, errdefs.ErrConflict) {
			continue
		}
		if err != nil {
			return nil, err
		}
		return &out.Instance, nil
	}
}

// DeleteInstance implements agent.Store.
func (l *Link) DeleteInstance(ctx context.Context, name string) error {
	u, err := l.instanceURL(ctx, name)
	if err != nil {
		return err
	}
	return l.do(ctx, http.MethodDelete, u, nil, nil)
}

// PutUsage sends the host's usage records (agent.UsageSink); the server
// answers which it refused for good.
func (l *Link) PutUsage(ctx context.Context, host string, recs []api.UsageRecord) ([]hostcontract.UsageRefusal, error) {
	if host != l.host {
		return nil, fmt.Errorf("usage of host %q sent over the link of %q: %w", host, l.host, errdefs.ErrInvalidArgument)
	}
	var out hostlink.PutUsageResponse
	if err := l.do(ctx, http.MethodPut, "/usage", recs, &out); err != nil {
		return nil, err
	}
	return hostlink.RefusalsForHost(out.Refused), nil
}

// TenantQuota implements agent.Store: the quota of a tenant with
// instances on this host (empty when it has none).
func (l *Link) TenantQuota(ctx context.Context, name string) (*api.Quota, error) {
	var q api.Quota
	if err := l.do(ctx, http.MethodGet, "/tenants/"+url.PathEscape(name)+"/quota", nil, &q); err != nil {
		return nil, err
	}
	if q == (api.Quota{}) {
		return nil, nil
	}
	return &q, nil
}

// InstanceFiles implements agent.FileSource: the files of the secret and
// config volumes of this host's instance name (tenant in ctx) with uid,
// and its containers' env from secrets.
func (l *Link) InstanceFiles(ctx context.Context, name, uid string) (hostcontract.InstanceFiles, error) {
	u, err := l.instanceURL(ctx, name)
	if err != nil {
		return hostcontract.InstanceFiles{}, err
	}
	var out hostlink.InstanceFiles
	if err := l.do(ctx, http.MethodGet, u+"/files?uid="+url.QueryEscape(uid), nil, &out); err != nil {
		return hostcontract.InstanceFiles{}, err
	}
	return out.ForHost(), nil
}

// VolumeKey implements hostcontract.VolumeKeySource: the control plane
// answers only for volumes on this host.
func (l *Link) VolumeKey(ctx context.Context, id string) ([]byte, error) {
	var out hostlink.VolumeKey
	if err := l.do(ctx, http.MethodGet, "/volumes/"+url.PathEscape(id)+"/key", nil, &out); err != nil {
		return nil, err
	}
	return out.Key, nil
}
