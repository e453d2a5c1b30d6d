package store

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
)

// Agents' credentials (package hostlink): join tokens bound to one host
// name, and per host the record of who holds the name and which agent
// certificates it was issued. The agent link accepts a certificate for
// host H only if its serial number is in H's record: an allow-list, so a
// certificate the record does not name (revoked, or issued to an earlier
// holder of the name) is refused, and revoking is removing it.
const (
	joinTokensPrefix = "/kanga/pki/join-tokens/"
	hostOwnersPrefix = "/kanga/pki/owners/"
)

// Tokens that HostOwner.Token names besides a join token's ID.
const (
	// OwnerShared: the host joined with the cluster's shared join token.
	OwnerShared = "shared"
	// OwnerLegacy: the host joined before owners were recorded; its
	// certificate was adopted on its first request after the upgrade.
	OwnerLegacy = "legacy"
)

// JoinTokenRecord is a stored join token; its secret is kept as a hash.
type JoinTokenRecord struct {
	ID         string     `json:"id"`
	Host       string     `json:"host"`
	SecretHash string     `json:"secretHash"`
	CreatedBy  string     `json:"createdBy,omitempty"`
	CreatedAt  time.Time  `json:"createdAt"`
	ExpiresAt  *time.Time `json:"expiresAt,omitempty"`
	// Serials are the certificates issued with the token (hex).
	Serials []string `json:"serials,omitempty"`
}

// API returns the record as the API shows it.
func (r JoinTokenRecord) API() api.JoinToken {
	return api.JoinToken{ID: r.ID, Host: r.Host, CreatedBy: r.CreatedBy, CreatedAt: r.CreatedAt, ExpiresAt: r.ExpiresAt, Joins: len(r.Serials)}
}

// HostOwner records who holds a host name.
type HostOwner struct {
	Host string `json:"host"`
	// Token is the join token's ID, OwnerShared or OwnerLegacy.
	Token string `json:"token"`
	// Serials are the agent certificates the link accepts for the host.
	Serials []string `json:"serials,omitempty"`
	// Revoked: the host's credentials were revoked; only a new join
	// token for it may take the name again.
	Revoked   bool       `json:"revoked,omitempty"`
	RevokedAt *time.Time `json:"revokedAt,omitempty"`
}

func joinTokenKey(id string) string { return joinTokensPrefix + id }
func hostOwnerKey(h string) string  { return hostOwnersPrefix + h }

// CreateJoinToken stores a new join token.
func (s *Store) CreateJoinToken(ctx context.Context, rec JoinTokenRecord) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	resp, err := s.client.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(joinTokenKey(rec.ID)), "=", 0)).
		Then(clientv3.OpPut(joinTokenKey(rec.ID), string(b))).Commit()
	if err != nil {
		return s.etcdErr(ctx, "create join token", err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("join token %s exists already: %w", rec.ID, errdefs.ErrAlreadyExists)
	}
	return nil
}

func (s *Store) getJSON(ctx context.Context, key string, v any) (int64, error) {
	resp, err := s.client.Get(ctx, key)
	if err != nil {
		return 0, s.etcdErr(ctx, "read "+key, err)
	}
	if len(resp.Kvs) == 0 {
		return 0, nil
	}
	if err := json.Unmarshal(resp.Kvs[0].Value, v); err != nil {
		return 0, fmt.Errorf("store: decode %s: %w", key, err)
	}
	return resp.Kvs[0].ModRevision, nil
}

// GetJoinToken returns a join token by ID.
func (s *Store) GetJoinToken(ctx context.Context, id string) (JoinTokenRecord, error) {
	var rec JoinTokenRecord
	rev, err := s.getJSON(ctx, joinTokenKey(id), &rec)
	if err != nil {
		return rec, err
	}
	if rev == 0 {
		return rec, fmt.Errorf("join token %q not found: list them with kanga host token ls: %w", id, errdefs.ErrNotFound)
	}
	return rec, nil
}

// ListJoinTokens returns every join token, by host and ID.
func (s *Store) ListJoinTokens(ctx context.Context) ([]JoinTokenRecord, error) {
	resp, err := s.client.Get(ctx, joinTokensPrefix, clientv3.WithPrefix())
	if err != nil {
		return nil, s.etcdErr(ctx, "list join tokens", err)
	}
	out := []JoinTokenRecord{}
	for _, kv := range resp.Kvs {
		var rec JoinTokenRecord
		if err := json.Unmarshal(kv.Value, &rec); err != nil {
			return nil, fmt.Errorf("store: decode %s: %w", kv.Key, err)
		}
		out = append(out, rec)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Host != out[j].Host {
			return out[i].Host < out[j].Host
		}
		return out[i].ID < out[j].ID
	})
	return out, nil
}

// GetHostOwner returns the record of who holds a host name; nil if none.
func (s *Store) GetHostOwner(ctx context.Context, host string) (*HostOwner, error) {
	var o HostOwner
	rev, err := s.getJSON(ctx, hostOwnerKey(host), &o)
	if err != nil || rev == 0 {
		return nil, err
	}
	return &o, nil
}

// ClaimHost records that an agent joined as host with a certificate of
// the given serial number, if the token may claim the name. tokenID is a
// join token's ID or OwnerShared. The rules, checked in one transaction:
// no agent holds the host's lease (a connected host is never taken over);
// with the shared token, the name must be new (no host record, no owner);
// with a join token, it must still exist and be bound to host, and the
// name must be free, revoked, or held by the same token (an agent that
// lost its data dir joins again).
func (s *Store) ClaimHost(ctx context.Context, host, tokenID, serial string) error {
	for {
		var owner HostOwner
		ownerRev, err := s.getJSON(ctx, hostOwnerKey(host), &owner)
		if err != nil {
			return err
		}
		cmps := []clientv3.Cmp{
			clientv3.Compare(clientv3.ModRevision(hostOwnerKey(host)), "=", ownerRev),
			clientv3.Compare(clientv3.CreateRevision(hostLeaseKey(host)), "=", 0),
		}
		next := HostOwner{Host: host, Token: tokenID, Serials: []string{serial}}
		var ops []clientv3.Op
		if tokenID == OwnerShared {
			if ownerRev != 0 {
				return fmt.Errorf("host name %q is taken (it joined before): the shared join token only joins new names; to let another agent take it, an administrator revokes the host (kanga host revoke %s) and issues a token for it (kanga host token create %s): %w", host, host, host, errdefs.ErrAlreadyExists)
			}
			exists, err := s.client.Get(ctx, hostKey(host), clientv3.WithCountOnly())
			if err != nil {
				return s.etcdErr(ctx, "read host", err)
			}
			if exists.Count > 0 {
				return fmt.Errorf("host name %q is taken by a registered host: the shared join token only joins new names; an administrator issues a token for it with kanga host token create %s: %w", host, host, errdefs.ErrAlreadyExists)
			}
			cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(hostKey(host)), "=", 0))
		} else {
			var tok JoinTokenRecord
			tokRev, err := s.getJSON(ctx, joinTokenKey(tokenID), &tok)
			if err != nil {
				return err
			}
			if tokRev == 0 {
				return fmt.Errorf("join token %s was revoked: %w", tokenID, errdefs.ErrUnauthenticated)
			}
			if tok.Host != host {
				return fmt.Errorf("join token %s is bound to host %q, not %q: join with --host-name %s, or get a token for %s: %w", tokenID, tok.Host, host, tok.Host, host, errdefs.ErrPermissionDenied)
			}
			if ownerRev != 0 && !owner.Revoked && owner.Token != tokenID {
				return fmt.Errorf("host name %q is held by another agent (joined with token %s): revoke it first (kanga host revoke %s): %w", host, owner.Token, host, errdefs.ErrAlreadyExists)
			}
			if ownerRev != 0 && !owner.Revoked && owner.Token == tokenID {
				next.Serials = append(slices.Clone(owner.Serials), serial)
			}
			tok.Serials = append(tok.Serials, serial)
			tb, _ := json.Marshal(tok)
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(joinTokenKey(tokenID)), "=", tokRev))
			ops = append(ops, clientv3.OpPut(joinTokenKey(tokenID), string(tb)))
		}
		ob, _ := json.Marshal(next)
		ops = append(ops, clientv3.OpPut(hostOwnerKey(host), string(ob)))
		resp, err := s.client.Txn(ctx).If(cmps...).Then(ops...).Commit()
		if err != nil {
			return s.etcdErr(ctx, "claim host", err)
		}
		if resp.Succeeded {
			return nil
		}
		lease, err := s.client.Get(ctx, hostLeaseKey(host), clientv3.WithCountOnly())
		if err != nil {
			return s.etcdErr(ctx, "read host lease", err)
		}
		if lease.Count > 0 {
			return fmt.Errorf("host %q is connected (its agent holds the lease): a second agent cannot join under its name; stop the other agent, or revoke it with kanga host revoke %s: %w", host, host, errdefs.ErrAlreadyExists)
		}
		// Something else changed meanwhile: decide again.
	}
}

// AdoptHostCert records a certificate of a host that joined before
// owners were recorded, on its first request: only if the host has no
// owner record at all (a revoked host has one).
func (s *Store) AdoptHostCert(ctx context.Context, host, serial string) (bool, error) {
	b, _ := json.Marshal(HostOwner{Host: host, Token: OwnerLegacy, Serials: []string{serial}})
	resp, err := s.client.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(hostOwnerKey(host)), "=", 0)).
		Then(clientv3.OpPut(hostOwnerKey(host), string(b))).Commit()
	if err != nil {
		return false, s.etcdErr(ctx, "adopt host certificate", err)
	}
	return resp.Succeeded, nil
}

// RevokeJoinToken deletes a join token and, if the host it is bound to
// holds its name through it, revokes the host's certificates. It returns
// the token and the serial numbers revoked.
func (s *Store) RevokeJoinToken(ctx context.Context, id string) (JoinTokenRecord, []string, error) {
	for {
		var tok JoinTokenRecord
		tokRev, err := s.getJSON(ctx, joinTokenKey(id), &tok)
		if err != nil {
			return tok, nil, err
		}
		if tokRev == 0 {
			return tok, nil, fmt.Errorf("join token %q not found: list them with kanga host token ls: %w", id, errdefs.ErrNotFound)
		}
		var owner HostOwner
		ownerRev, err := s.getJSON(ctx, hostOwnerKey(tok.Host), &owner)
		if err != nil {
			return tok, nil, err
		}
		ops := []clientv3.Op{clientv3.OpDelete(joinTokenKey(id))}
		var revoked []string
		if ownerRev != 0 && owner.Token == id && !owner.Revoked {
			revoked = owner.Serials
			ops = append(ops, clientv3.OpPut(hostOwnerKey(tok.Host), tombstone(tok.Host)))
		}
		resp, err := s.client.Txn(ctx).
			If(clientv3.Compare(clientv3.ModRevision(joinTokenKey(id)), "=", tokRev),
				clientv3.Compare(clientv3.ModRevision(hostOwnerKey(tok.Host)), "=", ownerRev)).
			Then(ops...).Commit()
		if err != nil {
			return tok, nil, s.etcdErr(ctx, "revoke join token", err)
		}
		if resp.Succeeded {
			return tok, revoked, nil
		}
	}
}

func tombstone(host string) string {
	now := time.Now().UTC()
	b, _ := json.Marshal(HostOwner{Host: host, Revoked: true, RevokedAt: &now})
	return string(b)
}

// RevokeHost deletes every join token bound to host and revokes its
// certificates; the name can then be claimed only with a new join token.
// It fails with ErrNotFound when nothing is known of the host.
func (s *Store) RevokeHost(ctx context.Context, host string) (tokens, serials []string, err error) {
	for {
		toks, err := s.ListJoinTokens(ctx)
		if err != nil {
			return nil, nil, err
		}
		var owner HostOwner
		ownerRev, err := s.getJSON(ctx, hostOwnerKey(host), &owner)
		if err != nil {
			return nil, nil, err
		}
		exists, err := s.client.Get(ctx, hostKey(host), clientv3.WithCountOnly())
		if err != nil {
			return nil, nil, s.etcdErr(ctx, "read host", err)
		}
		tokens, serials = nil, owner.Serials
		cmps := []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(hostOwnerKey(host)), "=", ownerRev)}
		ops := []clientv3.Op{clientv3.OpPut(hostOwnerKey(host), tombstone(host))}
		for _, t := range toks {
			if t.Host == host {
				tokens = append(tokens, t.ID)
				ops = append(ops, clientv3.OpDelete(joinTokenKey(t.ID)))
			}
		}
		if ownerRev == 0 && exists.Count == 0 && len(tokens) == 0 {
			return nil, nil, fmt.Errorf("host %q not found: no host, join token or certificate has that name: %w", host, errdefs.ErrNotFound)
		}
		resp, err := s.client.Txn(ctx).If(cmps...).Then(ops...).Commit()
		if err != nil {
			return nil, nil, s.etcdErr(ctx, "revoke host", err)
		}
		if resp.Succeeded {
			if tokens == nil {
				tokens = []string{}
			}
			if serials == nil {
				serials = []string{}
			}
			return tokens, serials, nil
		}
	}
}

// HostOwnerEvent is a change of a host's owner record; Owner is nil when
// the record was deleted. An event without Host says the watch (re)started
// and changes before it may have been missed.
type HostOwnerEvent struct {
	Host  string
	Owner *HostOwner
}

// WatchHostOwners streams changes of owner records until ctx ends,
// resuming after breaks. A consumer that must not miss a revocation reads
// the record again when in doubt (the link does, on a cache miss).
func (s *Store) WatchHostOwners(ctx context.Context) <-chan HostOwnerEvent {
	ch := make(chan HostOwnerEvent, 16)
	go func() {
		defer close(ch)
		for ctx.Err() == nil {
			wch := s.client.Watch(clientv3.WithRequireLeader(ctx), hostOwnersPrefix, clientv3.WithPrefix())
			// Whatever changed while no watch was open is unknown: say so.
			select {
			case ch <- HostOwnerEvent{}:
			case <-ctx.Done():
				return
			}
			for wr := range wch {
				if wr.Err() != nil {
					break
				}
				for _, ev := range wr.Events {
					e := HostOwnerEvent{Host: strings.TrimPrefix(string(ev.Kv.Key), hostOwnersPrefix)}
					if ev.Type == clientv3.EventTypePut {
						var o HostOwner
						if json.Unmarshal(ev.Kv.Value, &o) == nil {
							e.Owner = &o
						}
					}
					select {
					case ch <- e:
					case <-ctx.Done():
						return
					}
				}
			}
			if s.pause(ctx) != nil {
				return
			}
		}
	}()
	return ch
}
