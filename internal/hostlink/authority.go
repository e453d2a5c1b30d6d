package hostlink

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
	"github.com/kanga-run/kanga/internal/pki"
	"github.com/kanga-run/kanga/internal/server"
	"github.com/kanga-run/kanga/internal/store"
)

// Credentials of agents: join tokens bound to one host name, and the
// record of the agent certificates each host holds (see
// store.HostOwner). A join token reads K10<CA hash>::<id>.<secret>; the
// cluster's shared token (K10<CA hash>::<secret>, in the server's data
// dir) still joins, but only under a name never used before.

// CredentialStore keeps join tokens and host owners (*store.Store).
type CredentialStore interface {
	CreateJoinToken(ctx context.Context, rec store.JoinTokenRecord) error
	GetJoinToken(ctx context.Context, id string) (store.JoinTokenRecord, error)
	ListJoinTokens(ctx context.Context) ([]store.JoinTokenRecord, error)
	RevokeJoinToken(ctx context.Context, id string) (store.JoinTokenRecord, []string, error)
	RevokeHost(ctx context.Context, host string) (tokens, serials []string, err error)
	ClaimHost(ctx context.Context, host, tokenID, serial string) error
	GetHostOwner(ctx context.Context, host string) (*store.HostOwner, error)
	AdoptHostCert(ctx context.Context, host, serial string) (bool, error)
	WatchHostOwners(ctx context.Context) <-chan store.HostOwnerEvent
}

// Authority issues and revokes join tokens for the API
// (server.JoinTokenAuthority).
type Authority struct {
	Store CredentialStore
	CA    *pki.CA
	Now   func() time.Time
}

var _ server.JoinTokenAuthority = (*Authority)(nil)

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func secretHash(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// CreateJoinToken implements server.JoinTokenAuthority.
func (a *Authority) CreateJoinToken(ctx context.Context, host string, ttl time.Duration, createdBy string) (api.JoinToken, string, error) {
	if err := validHostName(host); err != nil {
		return api.JoinToken{}, "", fmt.Errorf("host: %w", err)
	}
	now := time.Now
	if a.Now != nil {
		now = a.Now
	}
	secret := randomHex(16)
	rec := store.JoinTokenRecord{ID: randomHex(8), Host: host, SecretHash: secretHash(secret), CreatedBy: createdBy, CreatedAt: now().UTC()}
	if ttl > 0 {
		e := rec.CreatedAt.Add(ttl)
		rec.ExpiresAt = &e
	}
	if err := a.Store.CreateJoinToken(ctx, rec); err != nil {
		return api.JoinToken{}, "", err
	}
	tok := pki.Token{CAHash: a.CA.Hash(), Secret: rec.ID + "." + secret}
	return rec.API(), tok.String(), nil
}

// ListJoinTokens implements server.JoinTokenAuthority.
func (a *Authority) ListJoinTokens(ctx context.Context) ([]api.JoinToken, error) {
	recs, err := a.Store.ListJoinTokens(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]api.JoinToken, 0, len(recs))
	for _, r := range recs {
		out = append(out, r.API())
	}
	return out, nil
}

// RevokeJoinToken implements server.JoinTokenAuthority.
func (a *Authority) RevokeJoinToken(ctx context.Context, id string) (api.JoinToken, error) {
	if len(id) != 16 || strings.Trim(id, "0123456789abcdef") != "" {
		return api.JoinToken{}, fmt.Errorf("join token %q not found: an ID is 16 hex digits, as kanga host token ls shows: %w", id, errdefs.ErrNotFound)
	}
	rec, _, err := a.Store.RevokeJoinToken(ctx, id)
	return rec.API(), err
}

// RevokeHost implements server.JoinTokenAuthority.
func (a *Authority) RevokeHost(ctx context.Context, host string) (api.HostRevocation, error) {
	if err := validHostName(host); err != nil {
		return api.HostRevocation{}, err
	}
	toks, serials, err := a.Store.RevokeHost(ctx, host)
	if err != nil {
		return api.HostRevocation{}, err
	}
	return api.HostRevocation{Host: host, JoinTokens: toks, Certificates: serials}, nil
}

// checkJoinSecret finds the token a join presents: a join token
// "<id>.<secret>", or the shared secret. It returns the owner name the
// join claims the host with.
func (s *Server) checkJoinSecret(ctx context.Context, secret string) (string, error) {
	bad := fmt.Errorf("join token is not valid (unknown, revoked or mistyped): get one with kanga host token create HOST: %w", errdefs.ErrUnauthenticated)
	id, sec, ok := strings.Cut(secret, ".")
	if !ok {
		if s.Token.Secret != "" && s.Token.CheckSecret(secret) {
			return store.OwnerShared, nil
		}
		return "", bad
	}
	if s.Creds == nil {
		return "", bad
	}
	if len(id) != 16 || strings.Trim(id, "0123456789abcdef") != "" {
		return "", bad
	}
	rec, err := s.Creds.GetJoinToken(ctx, id)
	if err != nil {
		if errors.Is(err, errdefs.ErrNotFound) {
			return "", bad
		}
		return "", err
	}
	if subtle.ConstantTimeCompare([]byte(rec.SecretHash), []byte(secretHash(sec))) != 1 {
		return "", bad
	}
	if rec.ExpiresAt != nil && !time.Now().Before(*rec.ExpiresAt) {
		return "", fmt.Errorf("join token %s expired at %s: get a new one with kanga host token create %s: %w", id, rec.ExpiresAt.Format(time.RFC3339), rec.Host, errdefs.ErrUnauthenticated)
	}
	return id, nil
}

// owners is the link's view of which certificates each host may use,
// kept from the owner records' watch, with the requests open per host so
// that a revocation cuts them at once.
type owners struct {
	store CredentialStore
	log   *slog.Logger

	mu    sync.Mutex
	cache map[string]*store.HostOwner // nil value: no record
	open  map[string]map[*openReq]struct{}
}

type openReq struct {
	serial string
	cancel context.CancelFunc
}

func newOwners(st CredentialStore, log *slog.Logger) *owners {
	return &owners{store: st, log: log, cache: map[string]*store.HostOwner{}, open: map[string]map[*openReq]struct{}{}}
}

// follow applies the owner records' changes until ctx ends.
func (o *owners) follow(ctx context.Context) {
	for ev := range o.store.WatchHostOwners(ctx) {
		o.mu.Lock()
		if ev.Host == "" {
			// Changes may have been missed: forget everything and look
			// again at every open request's host.
			o.cache = map[string]*store.HostOwner{}
			hosts := make([]string, 0, len(o.open))
			for h := range o.open {
				hosts = append(hosts, h)
			}
			o.mu.Unlock()
			for _, h := range hosts {
				if own, err := o.store.GetHostOwner(ctx, h); err == nil {
					o.update(h, own)
				}
			}
			continue
		}
		o.mu.Unlock()
		o.update(ev.Host, ev.Owner)
	}
}

// update records a host's owner and cuts the requests of certificates it
// no longer names.
func (o *owners) update(host string, own *store.HostOwner) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.cache[host] = own
	for r := range o.open[host] {
		if own == nil || !slices.Contains(own.Serials, r.serial) {
			o.log.Warn("hostlink: agent certificate revoked; closing its request", "host", host, "serial", r.serial)
			r.cancel()
		}
	}
}

// admit checks that serial is a certificate host may use, and registers
// the request so that a revocation ends it: ctx is the request's, the
// returned one ends with it or with the revocation.
func (o *owners) admit(ctx context.Context, host, serial string) (context.Context, func(), error) {
	o.mu.Lock()
	own, known := o.cache[host]
	o.mu.Unlock()
	if !known || own == nil || !slices.Contains(own.Serials, serial) {
		// Not cached, or not allowed as cached: the store decides.
		var err error
		if own, err = o.store.GetHostOwner(ctx, host); err != nil {
			return nil, nil, err
		}
		if own == nil {
			// A host that joined before owners were recorded keeps its
			// certificate: the first one seen is adopted.
			if _, err := o.store.AdoptHostCert(ctx, host, serial); err != nil {
				return nil, nil, err
			}
			if own, err = o.store.GetHostOwner(ctx, host); err != nil {
				return nil, nil, err
			}
		}
		o.mu.Lock()
		o.cache[host] = own
		o.mu.Unlock()
	}
	if own == nil || !slices.Contains(own.Serials, serial) {
		return nil, nil, fmt.Errorf("the certificate of host %q (serial %s) was revoked or replaced: an administrator issues a new join token (kanga host token create %s), then join again with an empty data dir: %w",
			host, serial, host, errdefs.ErrUnauthenticated)
	}
	ctx, cancel := context.WithCancel(ctx)
	r := &openReq{serial: serial, cancel: cancel}
	o.mu.Lock()
	if o.open[host] == nil {
		o.open[host] = map[*openReq]struct{}{}
	}
	o.open[host][r] = struct{}{}
	o.mu.Unlock()
	return ctx, func() {
		cancel()
		o.mu.Lock()
		delete(o.open[host], r)
		if len(o.open[host]) == 0 {
			delete(o.open, host)
		}
		o.mu.Unlock()
	}, nil
}
