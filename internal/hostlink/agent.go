package hostlink

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
	"github.com/kanga-run/kanga/internal/pki"
	"github.com/kanga-run/kanga/internal/store"
	"github.com/kanga-run/kanga/internal/tenant"
)

// Credentials are an agent's certificate and the cluster CA.
type Credentials struct {
	Cert tls.Certificate
	CA   *x509.Certificate
}

// Pool returns a cert pool with the cluster CA.
func (c *Credentials) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(c.CA)
	return p
}

// ClientTLS is the agent's configuration for calling the server.
func (c *Credentials) ClientTLS() *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{c.Cert}, RootCAs: c.Pool(), MinVersion: tls.VersionTLS12}
}

// Files of an agent's data dir.
const (
	certFile = "agent.crt"
	keyFile  = "agent.key"
	caFile   = "ca.crt"
)

// Join returns the agent's credentials from dataDir, or, on first start,
// gets them from the server at serverURL with the join token: the server's
// certificate chain must contain the CA whose hash the token carries
// (nothing is trusted before that), then the token's secret buys a
// certificate for name, signed from a CSR whose key never leaves dataDir.
// sans are the names and IPs of the agent's host API. serverURL may list
// several replicas, comma-separated; they are tried in turn.
func Join(ctx context.Context, serverURL, token, dataDir, name string, sans []string) (*Credentials, error) {
	var err error
	for _, u := range splitURLs(serverURL) {
		var c *Credentials
		if c, err = join(ctx, u, token, dataDir, name, sans); err == nil || !errors.Is(err, errdefs.ErrUnavailable) {
			return c, err
		}
	}
	return nil, err
}

// splitURLs splits a comma-separated list of server URLs.
func splitURLs(s string) []string {
	var out []string
	for _, u := range strings.Split(s, ",") {
		if u = strings.TrimRight(strings.TrimSpace(u), "/"); u != "" {
			out = append(out, u)
		}
	}
	return out
}

func join(ctx context.Context, serverURL, token, dataDir, name string, sans []string) (*Credentials, error) {
	if c, err := loadCredentials(dataDir, name); err == nil {
		return c, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	tok, err := pki.ParseToken(token)
	if err != nil {
		return nil, err
	}
	csr, keyPEM, err := pki.NewCSR(name, sans)
	if err != nil {
		return nil, err
	}
	var pinned *x509.Certificate
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS12,
		// The CA is not known yet: the connection is verified against the
		// CA the token pins, below, instead of the system roots.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			for _, c := range cs.PeerCertificates {
				if c.IsCA && pki.CertHash(c) == tok.CAHash {
					pinned = c
				}
			}
			if pinned == nil || len(cs.PeerCertificates) == 0 {
				return fmt.Errorf("the server's certificates do not include the CA the join token names (sha256 %s): wrong server or wrong token", tok.CAHash)
			}
			roots := x509.NewCertPool()
			roots.AddCert(pinned)
			_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: roots})
			return err
		},
	}
	body, _ := json.Marshal(JoinRequest{Name: name, Secret: tok.Secret, CSR: csr})
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: 30 * time.Second}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, serverURL+pathJoin, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("joining %s: %v: %w", serverURL, err, errdefs.ErrUnavailable)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("joining %s: %w", serverURL, readError(resp))
	}
	var jr JoinResponse
	if err := json.NewDecoder(resp.Body).Decode(&jr); err != nil {
		return nil, fmt.Errorf("joining %s: %w", serverURL, err)
	}
	if ca, err := pki.ParseCert(jr.CA); err != nil || pki.CertHash(ca) != tok.CAHash {
		return nil, fmt.Errorf("joining %s: the server answered with another CA than the token names", serverURL)
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, err
	}
	for f, b := range map[string][]byte{keyFile: keyPEM, certFile: jr.Cert, caFile: jr.CA} {
		if err := pki.WriteFile(filepath.Join(dataDir, f), b); err != nil {
			return nil, err
		}
	}
	return loadCredentials(dataDir, name)
}

func loadCredentials(dataDir, name string) (*Credentials, error) {
	caPEM, err := os.ReadFile(filepath.Join(dataDir, caFile))
	if err != nil {
		return nil, err
	}
	ca, err := pki.ParseCert(caPEM)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", caFile, err)
	}
	cert, err := tls.LoadX509KeyPair(filepath.Join(dataDir, certFile), filepath.Join(dataDir, keyFile))
	if err != nil {
		return nil, err
	}
	if cert.Leaf.Subject.CommonName != name {
		return nil, fmt.Errorf("%s is host %q's certificate, not %q's: use another --data-dir or the same --host-name: %w",
			filepath.Join(dataDir, certFile), cert.Leaf.Subject.CommonName, name, errdefs.ErrInvalidArgument)
	}
	return &Credentials{Cert: cert, CA: ca}, nil
}

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
	Registered func(RegisterResponse)
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
func NewLink(serverURL, host string, creds *Credentials, log *slog.Logger, opts ...LinkOption) *Link {
	if log == nil {
		log = slog.Default()
	}
	tr := &http.Transport{TLSClientConfig: creds.ClientTLS(), MaxIdleConnsPerHost: 16, ForceAttemptHTTP2: true,
		TLSHandshakeTimeout: 5 * time.Second,
		HTTP2:               &http.HTTP2Config{SendPingTimeout: 5 * time.Second, PingTimeout: 5 * time.Second}}
	for _, o := range opts {
		o(tr)
	}
	return &Link{urls: splitURLs(serverURL), host: host, hc: &http.Client{Transport: tr}, log: log.With("component", "hostlink")}
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
	return base + pathHost + url.PathEscape(l.host) + rest
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
		return readError(resp)
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
func (l *Link) Purges(ctx context.Context) ([]store.Purge, error) {
	var ps []store.Purge
	err := l.do(ctx, http.MethodGet, "/purges", nil, &ps)
	if errors.Is(err, errdefs.ErrNotFound) {
		// A server older than purges has no such route, and none to give:
		// an agent upgraded first still registers.
		return nil, nil
	}
	return ps, err
}

// AckPurge implements agent.Purges.
func (l *Link) AckPurge(ctx context.Context, p store.Purge) error {
	return l.do(ctx, http.MethodPut, "/purges", p, nil)
}

// heartbeatIdle is how long a silent heartbeat stream is trusted; the
// server writes more often.
const heartbeatIdle = 10 * time.Second

func (l *Link) heartbeatOnce(ctx context.Context, h api.Host) error {
	if l.Prepare != nil {
		if err := l.Prepare(ctx); err != nil {
			return fmt.Errorf("preparing to register: %w", err)
		}
	}
	var reg RegisterResponse
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
		return readError(resp)
	}
	l.log.Info("host registered; holding its lease", "host", h.Name, "server", base)
	watchdog := time.AfterFunc(heartbeatIdle, cancel)
	defer watchdog.Stop()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		watchdog.Reset(heartbeatIdle)
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
	var out InstanceList
	if err := l.do(ctx, http.MethodGet, "/instances", nil, &out); err != nil {
		return nil, 0, err
	}
	return out.Items, out.Revision, nil
}

// WatchAllInstances implements agent.Store. The stream is re-opened from
// the last revision seen whenever it breaks, until ctx ends.
func (l *Link) WatchAllInstances(ctx context.Context, fromRevision int64) <-chan store.InstanceEvent {
	ch := make(chan store.InstanceEvent, 64)
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

func (l *Link) watchOnce(ctx context.Context, rev *int64, ch chan<- store.InstanceEvent) error {
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
		return readError(resp)
	}
	dec := json.NewDecoder(resp.Body)
	for {
		var ev store.InstanceEvent
		if err := dec.Decode(&ev); err != nil {
			return err
		}
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
	var vi VersionedInstance
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
		var vi VersionedInstance
		if err := l.do(ctx, http.MethodGet, u, nil, &vi); err != nil {
			return nil, err
		}
		in := vi.Instance
		if err := fn(&in); err != nil {
			return nil, err
		}
		var out VersionedInstance
		err := l.do(ctx, http.MethodPut, u, StatusWrite{UID: vi.Instance.UID, Fingerprint: vi.Fingerprint, Status: in.Status}, &out)
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
func (l *Link) PutUsage(ctx context.Context, host string, recs []api.UsageRecord) ([]store.UsageRefusal, error) {
	if host != l.host {
		return nil, fmt.Errorf("usage of host %q sent over the link of %q: %w", host, l.host, errdefs.ErrInvalidArgument)
	}
	var out putUsageResponse
	if err := l.do(ctx, http.MethodPut, "/usage", recs, &out); err != nil {
		return nil, err
	}
	return out.Refused, nil
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
