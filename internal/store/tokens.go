package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
	"github.com/kanga-run/kanga/internal/tenant"
)

// Tokens are stored by the SHA-256 of their secret only: a copy of the
// database does not leak usable credentials, and a lookup by hash compares
// no secret byte by byte, so it needs no constant-time comparison. Two
// indexes lead to the record: by ID (for listing and revoking) and by
// tenant (so that deleting a tenant revokes every token of it).
const (
	tokensPrefix   = "/kanga/tokens/"
	tokenIDsPrefix = "/kanga/token-ids/"
)

// tokenRecord is the value stored for a token.
type tokenRecord struct {
	// ID is the first 16 hex digits of the hash: a name for the token
	// that is no credential, and one that records written before IDs
	// existed get deterministically when they are migrated.
	ID     string `json:"id,omitempty"`
	Name   string `json:"name,omitempty"`
	Tenant string `json:"tenant"`
	// Admin marks an administrator's token of the time before scopes; a
	// migrated record has Scopes ["*"] instead.
	Admin     bool       `json:"admin,omitempty"`
	Scopes    []string   `json:"scopes,omitempty"`
	CreatedBy string     `json:"createdBy,omitempty"`
	CreatedAt *time.Time `json:"createdAt,omitempty"`
	ExpiresAt *time.Time `json:"expiresAt,omitempty"`
}

// ErrUnknownToken is the error of a token that is not stored: never
// issued, revoked, or deleted with its tenant.
var ErrUnknownToken = fmt.Errorf("unknown token: %w", errdefs.ErrUnauthenticated)

// Principal is who a bearer token speaks for.
type Principal struct {
	// TokenID names the token (no credential); empty for principals that
	// are no stored token (the host API's).
	TokenID   string
	TokenName string
	Tenant    string
	// Scopes are as stored: api.ScopeEverything, api.ScopeAll and single
	// scopes (see package api).
	Scopes    []string
	ExpiresAt *time.Time
	// Admin is set for a token that holds tenants:admin.
	Admin bool
}

// Expired reports whether the token has expired at now, and the error
// that says so.
func (p Principal) Expired(now time.Time) error {
	if p.ExpiresAt != nil && !now.Before(*p.ExpiresAt) {
		return fmt.Errorf("token %s expired at %s: create a new one with kanga token create: %w",
			p.TokenID, p.ExpiresAt.UTC().Format(time.RFC3339), errdefs.ErrUnauthenticated)
	}
	return nil
}

// NewTokenInfo describes a token to create.
type NewTokenInfo struct {
	Name      string
	Tenant    string
	Scopes    []string
	CreatedBy string
	CreatedAt time.Time
	ExpiresAt *time.Time
}

func tokenHash(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

func tokenKey(token string) string { return tokensPrefix + tokenHash(token) }

func tokenIDOf(hash string) string { return hash[:16] }

func tenantTokenKey(tenantName, hash string) string {
	return tenantTokensPrefix + tenantName + "/" + hash
}

func (r tokenRecord) scopes() []string {
	switch {
	case len(r.Scopes) > 0:
		return r.Scopes
	case r.Admin:
		return []string{api.ScopeEverything}
	default:
		return []string{api.ScopeAll}
	}
}

func (r tokenRecord) principal() Principal {
	sc := r.scopes()
	return Principal{TokenID: r.ID, TokenName: r.Name, Tenant: r.Tenant, Scopes: sc, ExpiresAt: r.ExpiresAt,
		Admin: slices.Contains(sc, api.ScopeEverything) || slices.Contains(sc, api.ScopeTenantsAdmin)}
}

func (r tokenRecord) api() api.Token {
	return api.Token{ID: r.ID, Name: r.Name, Tenant: r.Tenant, Scopes: r.scopes(), CreatedBy: r.CreatedBy,
		CreatedAt: r.CreatedAt, ExpiresAt: r.ExpiresAt}
}

// PutToken makes token a bearer token of tenantName with every tenant
// scope, replacing any earlier mapping of the same token. Unlike
// CreateToken it does not require the tenant to exist (the default
// tenant's administrator token is put before the tenant is).
func (s *Store) PutToken(ctx context.Context, token, tenantName string) error {
	return s.putToken(ctx, token, tokenRecord{Tenant: tenantName, Scopes: []string{api.ScopeAll}})
}

// PutAdminToken makes token an administrator's token, holding every
// scope, acting in tenantName.
func (s *Store) PutAdminToken(ctx context.Context, token, tenantName string) error {
	return s.putToken(ctx, token, tokenRecord{Tenant: tenantName, Name: "admin", Scopes: []string{api.ScopeEverything}})
}

func (s *Store) putToken(ctx context.Context, token string, rec tokenRecord) error {
	if token == "" {
		return fmt.Errorf("token must not be empty: %w", errdefs.ErrInvalidArgument)
	}
	if err := tenant.Validate(rec.Tenant); err != nil {
		return err
	}
	hash := tokenHash(token)
	rec.ID = tokenIDOf(hash)
	for {
		old, rev, err := s.getTokenRecord(ctx, hash)
		if err != nil {
			return err
		}
		if old != nil && old.CreatedAt != nil {
			rec.CreatedAt = old.CreatedAt
		}
		if rec.CreatedAt == nil {
			now := time.Now().UTC()
			rec.CreatedAt = &now
		}
		val, err := json.Marshal(rec)
		if err != nil {
			return fmt.Errorf("store: encode token: %w", err)
		}
		ops := []clientv3.Op{
			clientv3.OpPut(tokensPrefix+hash, string(val)),
			clientv3.OpPut(tokenIDsPrefix+rec.ID, hash),
			clientv3.OpPut(tenantTokenKey(rec.Tenant, hash), ""),
		}
		if old != nil && old.Tenant != rec.Tenant {
			ops = append(ops, clientv3.OpDelete(tenantTokenKey(old.Tenant, hash)))
		}
		resp, err := s.client.Txn(ctx).
			If(clientv3.Compare(clientv3.ModRevision(tokensPrefix+hash), "=", rev)).
			Then(ops...).Commit()
		if err != nil {
			return s.etcdErr(ctx, "put token", err)
		}
		if resp.Succeeded {
			return nil
		}
	}
}

// getTokenRecord reads a token's record by hash; nil and revision 0 if
// there is none.
func (s *Store) getTokenRecord(ctx context.Context, hash string) (*tokenRecord, int64, error) {
	resp, err := s.client.Get(ctx, tokensPrefix+hash)
	if err != nil {
		return nil, 0, s.etcdErr(ctx, "look up token", err)
	}
	if len(resp.Kvs) == 0 {
		return nil, 0, nil
	}
	var rec tokenRecord
	if err := json.Unmarshal(resp.Kvs[0].Value, &rec); err != nil {
		return nil, 0, fmt.Errorf("store: decode token record: %w", err)
	}
	if rec.ID == "" {
		rec.ID = tokenIDOf(hash)
	}
	return &rec, resp.Kvs[0].ModRevision, nil
}

// CreateToken stores a new token of an existing tenant; the secret is
// kept only as its hash. It fails with ErrNotFound if the tenant does not
// exist (or is deleted meanwhile: the check is part of the write).
func (s *Store) CreateToken(ctx context.Context, secret string, info NewTokenInfo) (api.Token, error) {
	if secret == "" {
		return api.Token{}, fmt.Errorf("token must not be empty: %w", errdefs.ErrInvalidArgument)
	}
	if err := tenant.Validate(info.Tenant); err != nil {
		return api.Token{}, err
	}
	hash := tokenHash(secret)
	created := info.CreatedAt.UTC()
	rec := tokenRecord{ID: tokenIDOf(hash), Name: info.Name, Tenant: info.Tenant, Scopes: info.Scopes,
		CreatedBy: info.CreatedBy, CreatedAt: &created, ExpiresAt: info.ExpiresAt}
	val, err := json.Marshal(rec)
	if err != nil {
		return api.Token{}, err
	}
	resp, err := s.client.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(tenantKey(info.Tenant)), ">", 0),
			clientv3.Compare(clientv3.CreateRevision(tokensPrefix+hash), "=", 0)).
		Then(
			clientv3.OpPut(tokensPrefix+hash, string(val)),
			clientv3.OpPut(tokenIDsPrefix+rec.ID, hash),
			clientv3.OpPut(tenantTokenKey(info.Tenant, hash), ""),
		).Commit()
	if err != nil {
		return api.Token{}, s.etcdErr(ctx, "create token", err)
	}
	if !resp.Succeeded {
		if _, err := s.GetTenant(ctx, info.Tenant); errors.Is(err, errdefs.ErrNotFound) {
			return api.Token{}, fmt.Errorf("tenant %q does not exist (deleted?): a token needs its tenant: %w", info.Tenant, errdefs.ErrNotFound)
		} else if err != nil {
			return api.Token{}, err
		}
		return api.Token{}, fmt.Errorf("a token with this secret exists already: %w", errdefs.ErrAlreadyExists)
	}
	return rec.api(), nil
}

// LookupToken returns the tenant of a bearer token. An unknown token fails
// with ErrUnauthenticated; the error never contains the token.
func (s *Store) LookupToken(ctx context.Context, token string) (string, error) {
	p, err := s.LookupPrincipal(ctx, token)
	return p.Tenant, err
}

// LookupPrincipal returns who a bearer token speaks for. An unknown or
// revoked token fails with ErrUnknownToken; the error never contains the
// token. Expiry is the caller's to check (Principal.Expired), on its clock.
func (s *Store) LookupPrincipal(ctx context.Context, token string) (Principal, error) {
	if token == "" {
		return Principal{}, fmt.Errorf("no token given: %w", errdefs.ErrUnauthenticated)
	}
	rec, _, err := s.getTokenRecord(ctx, tokenHash(token))
	if err != nil {
		return Principal{}, err
	}
	if rec == nil {
		return Principal{}, ErrUnknownToken
	}
	return rec.principal(), nil
}

// ListTokens returns the tokens of a tenant, or of every tenant when
// tenantName is empty, by tenant and ID.
func (s *Store) ListTokens(ctx context.Context, tenantName string) ([]api.Token, error) {
	resp, err := s.client.Get(ctx, tokensPrefix, clientv3.WithPrefix())
	if err != nil {
		return nil, s.etcdErr(ctx, "list tokens", err)
	}
	out := []api.Token{}
	for _, kv := range resp.Kvs {
		var rec tokenRecord
		if err := json.Unmarshal(kv.Value, &rec); err != nil {
			return nil, fmt.Errorf("store: decode token record %s: %w", kv.Key, err)
		}
		if rec.ID == "" {
			rec.ID = tokenIDOf(strings.TrimPrefix(string(kv.Key), tokensPrefix))
		}
		if tenantName == "" || rec.Tenant == tenantName {
			out = append(out, rec.api())
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Tenant != out[j].Tenant {
			return out[i].Tenant < out[j].Tenant
		}
		return out[i].ID < out[j].ID
	})
	return out, nil
}

// RevokeToken deletes the token with the given ID. With tenantName set,
// only a token of that tenant is found: another tenant's is ErrNotFound,
// as if it did not exist.
func (s *Store) RevokeToken(ctx context.Context, id, tenantName string) (api.Token, error) {
	notFound := fmt.Errorf("token %q not found: list tokens with kanga token ls: %w", id, errdefs.ErrNotFound)
	if len(id) != 16 || strings.Trim(id, "0123456789abcdef") != "" {
		return api.Token{}, notFound
	}
	resp, err := s.client.Get(ctx, tokenIDsPrefix+id)
	if err != nil {
		return api.Token{}, s.etcdErr(ctx, "find token", err)
	}
	if len(resp.Kvs) == 0 {
		return api.Token{}, notFound
	}
	hash := string(resp.Kvs[0].Value)
	rec, rev, err := s.getTokenRecord(ctx, hash)
	if err != nil {
		return api.Token{}, err
	}
	if rec == nil || (tenantName != "" && rec.Tenant != tenantName) {
		return api.Token{}, notFound
	}
	txn, err := s.client.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(tokensPrefix+hash), "=", rev)).
		Then(
			clientv3.OpDelete(tokensPrefix+hash),
			clientv3.OpDelete(tokenIDsPrefix+id),
			clientv3.OpDelete(tenantTokenKey(rec.Tenant, hash)),
		).Commit()
	if err != nil {
		return api.Token{}, s.etcdErr(ctx, "revoke token", err)
	}
	if !txn.Succeeded {
		return s.RevokeToken(ctx, id, tenantName) // changed meanwhile: again
	}
	return rec.api(), nil
}

// DeleteToken revokes a bearer token by its secret. It fails with
// ErrNotFound when the token is unknown.
func (s *Store) DeleteToken(ctx context.Context, token string) error {
	hash := tokenHash(token)
	rec, _, err := s.getTokenRecord(ctx, hash)
	if err != nil {
		return err
	}
	if rec == nil {
		return fmt.Errorf("token not found: %w", errdefs.ErrNotFound)
	}
	_, err = s.RevokeToken(ctx, rec.ID, "")
	return err
}

// MigrateTokens brings token records written by earlier versions up to
// date: each gets its ID, explicit scopes (an old administrator's token
// every scope, any other every tenant scope) and both index entries (old
// versions indexed by tenant only the tenant's first token, so deleting a
// tenant left its other tokens working). It is idempotent, and safe while
// other replicas serve. It returns how many records it changed.
func (s *Store) MigrateTokens(ctx context.Context) (int, error) {
	resp, err := s.client.Get(ctx, tokensPrefix, clientv3.WithPrefix())
	if err != nil {
		return 0, s.etcdErr(ctx, "list tokens", err)
	}
	n := 0
	for _, kv := range resp.Kvs {
		hash := strings.TrimPrefix(string(kv.Key), tokensPrefix)
		var rec tokenRecord
		if err := json.Unmarshal(kv.Value, &rec); err != nil || len(hash) != 64 {
			s.logger.Warn("store: skipping an unreadable token record", "key", string(kv.Key), "err", err)
			continue
		}
		if rec.ID != "" && len(rec.Scopes) > 0 && !rec.Admin {
			continue
		}
		rec.Scopes = rec.scopes()
		rec.Admin = false
		rec.ID = tokenIDOf(hash)
		val, err := json.Marshal(rec)
		if err != nil {
			return n, err
		}
		txn, err := s.client.Txn(ctx).
			If(clientv3.Compare(clientv3.ModRevision(string(kv.Key)), "=", kv.ModRevision)).
			Then(
				clientv3.OpPut(string(kv.Key), string(val)),
				clientv3.OpPut(tokenIDsPrefix+rec.ID, hash),
				clientv3.OpPut(tenantTokenKey(rec.Tenant, hash), ""),
			).Commit()
		if err != nil {
			return n, s.etcdErr(ctx, "migrate token", err)
		}
		if txn.Succeeded {
			n++
		}
	}
	return n, nil
}
