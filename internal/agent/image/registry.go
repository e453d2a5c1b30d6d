package image

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/containerd/remotes"
	"github.com/containerd/containerd/remotes/docker"

	"github.com/kanga-run/kanga/errdefs"
)

// Pulls run on a host for any tenant, so a reference is an address the
// host will call: without a guard a tenant could make it call loopback
// services, the instances' subnet, the link-local metadata range, or
// private networks behind it, and learn from the error which ports answer.
// Every connection a pull makes (the registry, its token realm, every
// redirect to blob storage) is checked when it is dialed, against each
// address the name resolved to. Registries the operator names with
// --insecure-registry are exempt, and are the only ones spoken to over
// plain HTTP (after HTTPS fails), as Docker's daemon option does.

// errBlocked is a dial refused by the guard. The tenant never sees it
// apart from other failures to reach a registry (see classifyPull).
var errBlocked = errors.New("address is not allowed for pulls")

// ParseInsecureRegistries checks the operator's --insecure-registry
// values: HOST:PORT, or HOST for its default ports (443, and 80 for plain
// HTTP); HOST is a name or an IP address ([::1] for IPv6).
func ParseInsecureRegistries(values []string) ([]string, error) {
	out := make([]string, 0, len(values))
	for _, v := range values {
		v = strings.ToLower(strings.TrimSpace(v))
		if v == "" || strings.Contains(v, "/") {
			return nil, fmt.Errorf("--insecure-registry %q: give HOST:PORT (or HOST), without a scheme or path: %w", v, errdefs.ErrInvalidArgument)
		}
		if h, p, err := net.SplitHostPort(v); err == nil {
			if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 || h == "" {
				return nil, fmt.Errorf("--insecure-registry %q: the port must be a number from 1 to 65535 after a host: %w", v, errdefs.ErrInvalidArgument)
			}
		} else if strings.Count(v, ":") > 0 && !strings.HasPrefix(v, "[") {
			return nil, fmt.Errorf("--insecure-registry %q: write an IPv6 address in brackets, [::1]:5000: %w", v, errdefs.ErrInvalidArgument)
		}
		out = append(out, v)
	}
	return out, nil
}

// registries is the pull side of the policy: the HTTP clients registry
// requests go through.
type registries struct {
	insecure map[string]bool // registry hosts as references name them
	guard    *dialGuard
	secure   *http.Client // HTTPS, guarded
	plain    *http.Client // the insecure registries: HTTPS, then HTTP
}

func newRegistries(insecure []string, log *slog.Logger) *registries {
	g := &dialGuard{allowed: map[string]bool{}, log: log}
	r := &registries{insecure: map[string]bool{}, guard: g}
	for _, h := range insecure {
		r.insecure[h] = true
		if _, _, err := net.SplitHostPort(h); err == nil {
			g.allowed[h] = true
		} else {
			g.allowed[net.JoinHostPort(strings.Trim(h, "[]"), "443")] = true
			g.allowed[net.JoinHostPort(strings.Trim(h, "[]"), "80")] = true
		}
	}
	transport := func(tlsCfg *tls.Config) *http.Transport {
		return &http.Transport{
			// No proxy from the environment: a proxy would make the
			// connections the guard cannot see.
			Proxy:                 nil,
			DialContext:           g.DialContext,
			TLSClientConfig:       tlsCfg,
			TLSHandshakeTimeout:   10 * time.Second,
			ResponseHeaderTimeout: 30 * time.Second,
			IdleConnTimeout:       30 * time.Second,
			MaxIdleConnsPerHost:   4,
		}
	}
	r.secure = &http.Client{Transport: transport(&tls.Config{MinVersion: tls.VersionTLS12})}
	r.plain = &http.Client{Transport: docker.NewHTTPFallback(transport(&tls.Config{InsecureSkipVerify: true}))}
	return r
}

// resolver returns a docker resolver whose every request goes through
// the guard.
func (r *registries) resolver() remotes.Resolver {
	return docker.NewResolver(docker.ResolverOptions{Hosts: r.hosts})
}

func (r *registries) hosts(host string) ([]docker.RegistryHost, error) {
	client := r.secure
	if r.insecure[strings.ToLower(host)] {
		client = r.plain
	}
	h := docker.RegistryHost{
		Client:       client,
		Authorizer:   docker.NewDockerAuthorizer(docker.WithAuthClient(client)),
		Host:         host,
		Scheme:       "https",
		Path:         "/v2",
		Capabilities: docker.HostCapabilityPull | docker.HostCapabilityResolve,
	}
	if host == "docker.io" {
		h.Host = "registry-1.docker.io"
	}
	return []docker.RegistryHost{h}, nil
}

// dialGuard dials what a pull connects to. An address the operator
// allowed is dialed as it is; any other is resolved and each IP checked
// just before the connect, so neither a name that resolves to a private
// address nor a redirect to one gets through.
type dialGuard struct {
	allowed map[string]bool // host:port as dialed
	log     *slog.Logger
	// ownAddrs lists the host's own addresses; a test replaces it.
	ownAddrs func() ([]net.Addr, error)
}

func (g *dialGuard) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	d := &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}
	if g.allowed[strings.ToLower(addr)] {
		return d.DialContext(ctx, network, addr)
	}
	d.Control = func(_, address string, _ syscall.RawConn) error {
		return g.check(address)
	}
	c, err := d.DialContext(ctx, network, addr)
	if err != nil && errors.Is(err, errBlocked) && g.log != nil {
		g.log.Warn("a pull tried to reach an address outside the registries it may reach; allow a registry there with --insecure-registry", "addr", addr, "err", err)
	}
	return c, err
}

// check refuses an ip:port that is not a public unicast address, or is
// one of the host's own.
func (g *dialGuard) check(address string) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("%s: %w", address, errBlocked)
	}
	ip := ap.Addr().Unmap()
	if !publicUnicast(ip) {
		return fmt.Errorf("%s: %w", address, errBlocked)
	}
	own := g.ownAddrs
	if own == nil {
		own = net.InterfaceAddrs
	}
	addrs, err := own()
	if err != nil {
		return fmt.Errorf("%s: listing the host's addresses: %v: %w", address, err, errBlocked)
	}
	for _, a := range addrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil && p.Addr().Unmap() == ip {
			return fmt.Errorf("%s is one of the host's own addresses: %w", address, errBlocked)
		}
	}
	return nil
}

// nonPublic are the ranges, beyond what netip classifies, that are not
// the public internet (RFC 6890 and its updates).
var nonPublic = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),       // "this network"
	netip.MustParsePrefix("100.64.0.0/10"),   // carrier-grade NAT, shared address space
	netip.MustParsePrefix("192.0.0.0/24"),    // IETF protocol assignments
	netip.MustParsePrefix("192.0.2.0/24"),    // documentation
	netip.MustParsePrefix("198.18.0.0/15"),   // benchmarking
	netip.MustParsePrefix("198.51.100.0/24"), // documentation
	netip.MustParsePrefix("203.0.113.0/24"),  // documentation
	netip.MustParsePrefix("240.0.0.0/4"),     // reserved, and broadcast
	netip.MustParsePrefix("100::/64"),        // discard-only
	netip.MustParsePrefix("2001:db8::/32"),   // documentation
}

// Prefixes that carry an IPv4 address inside an IPv6 one: the embedded
// address is checked as well.
var (
	nat64  = netip.MustParsePrefix("64:ff9b::/96")
	sixTo4 = netip.MustParsePrefix("2002::/16")
)

func publicUnicast(ip netip.Addr) bool {
	if !ip.IsValid() || ip.IsLoopback() || ip.IsPrivate() || ip.IsUnspecified() || ip.IsMulticast() ||
		ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() || ip.IsInterfaceLocalMulticast() {
		return false
	}
	for _, p := range nonPublic {
		if p.Contains(ip) {
			return false
		}
	}
	if ip.Is6() {
		b := ip.As16()
		switch {
		case nat64.Contains(ip):
			return publicUnicast(netip.AddrFrom4([4]byte{b[12], b[13], b[14], b[15]}))
		case sixTo4.Contains(ip):
			return publicUnicast(netip.AddrFrom4([4]byte{b[2], b[3], b[4], b[5]}))
		}
	}
	return true
}
