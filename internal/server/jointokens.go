package server

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
)

// JoinTokenAuthority issues and revokes the agents' join tokens and
// certificates (hostlink.Authority, on kanga server).
type JoinTokenAuthority interface {
	CreateJoinToken(ctx context.Context, host string, ttl time.Duration, createdBy string) (api.JoinToken, string, error)
	ListJoinTokens(ctx context.Context) ([]api.JoinToken, error)
	RevokeJoinToken(ctx context.Context, id string) (api.JoinToken, error)
	RevokeHost(ctx context.Context, host string) (api.HostRevocation, error)
}

// defaultJoinTokenTTL is a join token's life unless asked otherwise, as
// kubeadm's bootstrap tokens.
const defaultJoinTokenTTL = 24 * time.Hour

func (s *Server) joinAuthority() (JoinTokenAuthority, error) {
	if s.joins == nil {
		return nil, fmt.Errorf("this control plane has no agent link (kanga up runs its own host): join tokens are for kanga server: %w", errdefs.ErrFailedPrecondition)
	}
	return s.joins, nil
}

func (s *Server) createJoinToken(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	if err := requireOperator(ctx); err != nil {
		return err
	}
	var req api.CreateJoinTokenRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	ttl := defaultJoinTokenTTL
	if req.Expires == "0" {
		ttl = 0
	} else if req.Expires != "" {
		d, err := parseLifetime(req.Expires)
		if err != nil || d <= 0 || d > maxTokenLifetime {
			return fmt.Errorf("expires %q: a lifetime such as 1h or 7d (at most 10 years), or 0 for none: %w", req.Expires, errdefs.ErrInvalidArgument)
		}
		ttl = d
	}
	ja, err := s.joinAuthority()
	if err != nil {
		return err
	}
	p, _ := principalOf(ctx)
	jt, tok, err := ja.CreateJoinToken(ctx, req.Host, ttl, p.TokenID)
	if err != nil {
		return err
	}
	setAuditObject(ctx, "join-tokens/"+jt.ID)
	writeJSON(w, http.StatusCreated, api.CreateJoinTokenResponse{JoinToken: jt, Token: tok})
	return nil
}

func (s *Server) listJoinTokens(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	if err := requireOperator(ctx); err != nil {
		return err
	}
	ja, err := s.joinAuthority()
	if err != nil {
		return err
	}
	jts, err := ja.ListJoinTokens(ctx)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, api.JoinTokenList{Items: jts})
	return nil
}

func (s *Server) revokeJoinToken(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	if err := requireOperator(ctx); err != nil {
		return err
	}
	ja, err := s.joinAuthority()
	if err != nil {
		return err
	}
	jt, err := ja.RevokeJoinToken(ctx, r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, jt)
	return nil
}

func (s *Server) revokeHost(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	if err := requireOperator(ctx); err != nil {
		return err
	}
	ja, err := s.joinAuthority()
	if err != nil {
		return err
	}
	rev, err := ja.RevokeHost(ctx, r.PathValue("name"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, rev)
	return nil
}
