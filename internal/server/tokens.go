package server

import (
	"context"
	"fmt"
	"net/http"
	"time"
	"unicode"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
	"github.com/kanga-run/kanga/internal/store"
	"github.com/kanga-run/kanga/internal/tenant"
)

// TokenStore keeps bearer tokens (*store.Store).
type TokenStore interface {
	CreateToken(ctx context.Context, secret string, info store.NewTokenInfo) (api.Token, error)
	ListTokens(ctx context.Context, tenantName string) ([]api.Token, error)
	RevokeToken(ctx context.Context, id, tenantName string) (api.Token, error)
}

// maxTokenLifetime bounds --expires: ten years is "never" enough.
const maxTokenLifetime = 10 * 365 * 24 * time.Hour

func validTokenName(n string) error {
	if len(n) > 63 {
		return fmt.Errorf("name: at most 63 characters, not %d: %w", len(n), errdefs.ErrInvalidArgument)
	}
	for _, c := range n {
		if !unicode.IsPrint(c) {
			return fmt.Errorf("name %q: printable characters only: %w", n, errdefs.ErrInvalidArgument)
		}
	}
	return nil
}

func (s *Server) createToken(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	p, _ := principalOf(ctx)
	t, err := tenant.Name(ctx)
	if err != nil {
		return err
	}
	var req api.CreateTokenRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	if err := validTokenName(req.Name); err != nil {
		return err
	}
	scopes, err := grantableScopes(p.Scopes, req.Scopes)
	if err != nil {
		return err
	}
	now := s.now().UTC()
	var expires *time.Time
	if req.Expires != "" {
		d, err := parseLifetime(req.Expires)
		if err != nil || d <= 0 || d > maxTokenLifetime {
			return fmt.Errorf("expires %q: a lifetime such as 24h, 90m or 30d, at most 10 years: %w", req.Expires, errdefs.ErrInvalidArgument)
		}
		e := now.Add(d)
		expires = &e
	}
	// A token cannot outlive the token that made it.
	if p.ExpiresAt != nil {
		if expires == nil {
			e := *p.ExpiresAt
			expires = &e
		} else if expires.After(*p.ExpiresAt) {
			return fmt.Errorf("expires %s: your token expires at %s, and a token it creates cannot outlive it: %w",
				req.Expires, p.ExpiresAt.UTC().Format(time.RFC3339), errdefs.ErrInvalidArgument)
		}
	}
	secret, err := newToken()
	if err != nil {
		return err
	}
	tok, err := s.store.CreateToken(ctx, secret, store.NewTokenInfo{Name: req.Name, Tenant: t, Scopes: scopes,
		CreatedBy: p.TokenID, CreatedAt: now, ExpiresAt: expires})
	if err != nil {
		return err
	}
	setAuditObject(ctx, "tokens/"+tok.ID)
	writeJSON(w, http.StatusCreated, api.CreateTokenResponse{Token: tok, Secret: secret})
	return nil
}

func (s *Server) listTokens(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	t, err := tenant.Name(ctx)
	if err != nil {
		return err
	}
	all, err := boolParam(r, "all")
	if err != nil {
		return err
	}
	if all {
		if !isAdmin(ctx) {
			return fmt.Errorf("listing every tenant's tokens needs an administrator's token (scope %s): %w", api.ScopeTenantsAdmin, errdefs.ErrPermissionDenied)
		}
		t = ""
	}
	toks, err := s.store.ListTokens(ctx, t)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, api.TokenList{Items: toks})
	return nil
}

func (s *Server) revokeToken(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	t, err := tenant.Name(ctx)
	if err != nil {
		return err
	}
	if isAdmin(ctx) {
		t = "" // an administrator revokes any tenant's token
	}
	tok, err := s.store.RevokeToken(ctx, r.PathValue("id"), t)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, tok)
	return nil
}
