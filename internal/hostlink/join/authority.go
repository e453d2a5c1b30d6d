package join

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
	"github.com/kanga-run/kanga/internal/hostlink"
	"github.com/kanga-run/kanga/internal/pki"
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
	if err := hostlink.ValidHostName(host); err != nil {
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
	if err := hostlink.ValidHostName(host); err != nil {
		return api.HostRevocation{}, err
	}
	toks, serials, err := a.Store.RevokeHost(ctx, host)
	if err != nil {
		return api.HostRevocation{}, err
	}
	return api.HostRevocation{Host: host, JoinTokens: toks, Certificates: serials}, nil
}

// CheckSecret finds the token a join presents: a join token
// "<id>.<secret>" of creds (nil: none), or the shared secret of shared.
// It returns the owner name the join claims the host with.
func CheckSecret(ctx context.Context, shared pki.Token, creds CredentialStore, secret string) (string, error) {
	bad := fmt.Errorf("join token is not valid (unknown, revoked or mistyped): get one with kanga host token create HOST: %w", errdefs.ErrUnauthenticated)
	id, sec, ok := strings.Cut(secret, ".")
	if !ok {
		if shared.Secret != "" && shared.CheckSecret(secret) {
			return store.OwnerShared, nil
		}
		return "", bad
	}
	if creds == nil {
		return "", bad
	}
	if len(id) != 16 || strings.Trim(id, "0123456789abcdef") != "" {
		return "", bad
	}
	rec, err := creds.GetJoinToken(ctx, id)
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
