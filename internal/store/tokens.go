package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"

	"github.com/kanga-run/kanga/internal/errdefs"
	"github.com/kanga-run/kanga/internal/tenant"
)

const tokensPrefix = "/kanga/tokens/"

// tokenRecord is the value stored for a token.
type tokenRecord struct {
	Tenant string `json:"tenant"`
	// Admin tokens may also manage tenants.
	Admin bool `json:"admin,omitempty"`
}

// Principal is who a bearer token speaks for.
type Principal struct {
	Tenant string
	Admin  bool
}

// tokenKey stores only the token's SHA-256: a copy of the database does
// not leak usable credentials, and a lookup by hash compares no secret
// byte by byte, so it needs no constant-time comparison.
func tokenKey(token string) string {
	sum := sha256.Sum256([]byte(token))
	return tokensPrefix + hex.EncodeToString(sum[:])
}

// PutToken makes token a bearer token of tenantName, replacing any
// earlier mapping of the same token.
func (s *Store) PutToken(ctx context.Context, token, tenantName string) error {
	return s.putToken(ctx, token, tokenRecord{Tenant: tenantName})
}

// PutAdminToken makes token an administrator's token acting in tenantName.
func (s *Store) PutAdminToken(ctx context.Context, token, tenantName string) error {
	return s.putToken(ctx, token, tokenRecord{Tenant: tenantName, Admin: true})
}

func (s *Store) putToken(ctx context.Context, token string, rec tokenRecord) error {
	tenantName := rec.Tenant
	if token == "" {
		return fmt.Errorf("token must not be empty: %w", errdefs.ErrInvalidArgument)
	}
	if err := tenant.Validate(tenantName); err != nil {
		return err
	}
	val, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("store: encode token: %w", err)
	}
	if _, err := s.client.Put(ctx, tokenKey(token), string(val)); err != nil {
		return s.etcdErr(ctx, "put token", err)
	}
	return nil
}

// LookupToken returns the tenant of a bearer token. An unknown token fails
// with ErrUnauthenticated; the error never contains the token.
func (s *Store) LookupToken(ctx context.Context, token string) (string, error) {
	p, err := s.LookupPrincipal(ctx, token)
	return p.Tenant, err
}

// LookupPrincipal returns the tenant of a bearer token and whether it is
// an administrator's.
func (s *Store) LookupPrincipal(ctx context.Context, token string) (Principal, error) {
	if token == "" {
		return Principal{}, fmt.Errorf("no token given: %w", errdefs.ErrUnauthenticated)
	}
	resp, err := s.client.Get(ctx, tokenKey(token))
	if err != nil {
		return Principal{}, s.etcdErr(ctx, "look up token", err)
	}
	if len(resp.Kvs) == 0 {
		return Principal{}, fmt.Errorf("unknown token: %w", errdefs.ErrUnauthenticated)
	}
	var rec tokenRecord
	if err := json.Unmarshal(resp.Kvs[0].Value, &rec); err != nil {
		return Principal{}, fmt.Errorf("store: decode token record: %w", err)
	}
	return Principal{Tenant: rec.Tenant, Admin: rec.Admin}, nil
}

// DeleteToken revokes a bearer token. It fails with ErrNotFound when the
// token is unknown.
func (s *Store) DeleteToken(ctx context.Context, token string) error {
	resp, err := s.client.Delete(ctx, tokenKey(token))
	if err != nil {
		return s.etcdErr(ctx, "delete token", err)
	}
	if resp.Deleted == 0 {
		return fmt.Errorf("token not found: %w", errdefs.ErrNotFound)
	}
	return nil
}
