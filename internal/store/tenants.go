package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
	"github.com/kanga-run/kanga/internal/tenant"
)

const (
	tenantsPrefix = "/kanga/tenants/"
	// tenantTokensPrefix indexes token hashes by tenant, so that deleting
	// a tenant revokes its tokens.
	tenantTokensPrefix = "/kanga/tenant-tokens/"
)

func tenantKey(name string) string { return tenantsPrefix + name }

// CreateTenant stores a new tenant with its first bearer token.
func (s *Store) CreateTenant(ctx context.Context, t *api.Tenant, token string) error {
	if err := tenant.Validate(t.Name); err != nil {
		return err
	}
	if token == "" {
		return fmt.Errorf("token must not be empty: %w", errdefs.ErrInvalidArgument)
	}
	val, err := json.Marshal(t)
	if err != nil {
		return err
	}
	hash := tokenHash(token)
	created := time.Now().UTC()
	tok, err := json.Marshal(tokenRecord{ID: tokenIDOf(hash), Name: "initial", Tenant: t.Name,
		Scopes: []string{api.ScopeAll}, CreatedAt: &created})
	if err != nil {
		return err
	}
	resp, err := s.client.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(tenantKey(t.Name)), "=", 0)).
		Then(
			clientv3.OpPut(tenantKey(t.Name), string(val)),
			clientv3.OpPut(tokensPrefix+hash, string(tok)),
			clientv3.OpPut(tokenIDsPrefix+tokenIDOf(hash), hash),
			clientv3.OpPut(tenantTokenKey(t.Name, hash), ""),
		).Commit()
	if err != nil {
		return s.etcdErr(ctx, "create tenant", err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("tenant %q already exists: %w", t.Name, errdefs.ErrAlreadyExists)
	}
	return nil
}

// EnsureTenant stores t unless a tenant of that name exists.
func (s *Store) EnsureTenant(ctx context.Context, t *api.Tenant) error {
	val, err := json.Marshal(t)
	if err != nil {
		return err
	}
	_, err = s.client.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(tenantKey(t.Name)), "=", 0)).
		Then(clientv3.OpPut(tenantKey(t.Name), string(val))).Commit()
	if err != nil {
		return s.etcdErr(ctx, "ensure tenant", err)
	}
	return nil
}

// GetTenant returns a tenant's record.
func (s *Store) GetTenant(ctx context.Context, name string) (*api.Tenant, error) {
	resp, err := s.client.Get(ctx, tenantKey(name))
	if err != nil {
		return nil, s.etcdErr(ctx, "get tenant", err)
	}
	if len(resp.Kvs) == 0 {
		return nil, fmt.Errorf("tenant %q not found: %w", name, errdefs.ErrNotFound)
	}
	var t api.Tenant
	if err := json.Unmarshal(resp.Kvs[0].Value, &t); err != nil {
		return nil, fmt.Errorf("store: decode tenant %q: %w", name, err)
	}
	return &t, nil
}

// ListTenants returns every tenant, by name.
func (s *Store) ListTenants(ctx context.Context) ([]api.Tenant, error) {
	resp, err := s.client.Get(ctx, tenantsPrefix, clientv3.WithPrefix())
	if err != nil {
		return nil, s.etcdErr(ctx, "list tenants", err)
	}
	out := make([]api.Tenant, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		var t api.Tenant
		if err := json.Unmarshal(kv.Value, &t); err != nil {
			return nil, fmt.Errorf("store: decode tenant %s: %w", kv.Key, err)
		}
		out = append(out, t)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// DeleteTenant removes a tenant and revokes every token of it. It refuses
// while the tenant still has instances, so that nothing is orphaned. A
// token created while the tenant is being deleted either is revoked with
// it or fails to be created (CreateToken checks the tenant in its write):
// the deletion commits only if the tenant's token index did not change
// since it was read.
//
// In the same transaction it records a Purge of the tenant for every host
// (see purges.go).
func (s *Store) DeleteTenant(ctx context.Context, name string) error {
	if _, err := s.GetTenant(ctx, name); err != nil {
		return err
	}
	idxPrefix := tenantTokensPrefix + name + "/"
	for {
		insts, err := s.client.Get(ctx, tenantPrefix(name), clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			return s.etcdErr(ctx, "count instances", err)
		}
		if insts.Count > 0 {
			return fmt.Errorf("tenant %q still has %d instances: remove them first: %w", name, insts.Count, errdefs.ErrFailedPrecondition)
		}
		idx, err := s.client.Get(ctx, idxPrefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
		if err != nil {
			return s.etcdErr(ctx, "list tenant tokens", err)
		}
		purge, err := purgeOps(Purge{Tenant: name, At: time.Now().UTC()})
		if err != nil {
			return err
		}
		ops := append([]clientv3.Op{
			clientv3.OpDelete(tenantKey(name)),
			clientv3.OpDelete(idxPrefix, clientv3.WithPrefix()),
			clientv3.OpDelete(usageKey(name)),
		}, purge...)
		for _, kv := range idx.Kvs {
			hash := strings.TrimPrefix(string(kv.Key), idxPrefix)
			ops = append(ops, clientv3.OpDelete(tokensPrefix+hash))
			if len(hash) == 64 {
				ops = append(ops, clientv3.OpDelete(tokenIDsPrefix+tokenIDOf(hash)))
			}
		}
		resp, err := s.client.Txn(ctx).
			If(clientv3.Compare(clientv3.ModRevision(idxPrefix), "<", idx.Header.Revision+1).WithPrefix(),
				clientv3.Compare(clientv3.CreateRevision(tenantKey(name)), ">", 0),
				// and no instance was created meanwhile
				clientv3.Compare(clientv3.CreateRevision(tenantPrefix(name)), "=", 0).WithPrefix()).
			Then(ops...).Commit()
		if err != nil {
			return s.etcdErr(ctx, "delete tenant", err)
		}
		if resp.Succeeded {
			return nil
		}
		if _, err := s.GetTenant(ctx, name); err != nil {
			return err
		}
	}
}

// UpdateTenant applies fn to the current record of tenant name and stores
// the result if nobody changed it in between, running fn again otherwise.
// fn may not rename the tenant.
func (s *Store) UpdateTenant(ctx context.Context, name string, fn func(*api.Tenant) error) (*api.Tenant, error) {
	for {
		resp, err := s.client.Get(ctx, tenantKey(name))
		if err != nil {
			return nil, s.etcdErr(ctx, "get tenant", err)
		}
		if len(resp.Kvs) == 0 {
			return nil, fmt.Errorf("tenant %q not found: %w", name, errdefs.ErrNotFound)
		}
		kv := resp.Kvs[0]
		var t api.Tenant
		if err := json.Unmarshal(kv.Value, &t); err != nil {
			return nil, fmt.Errorf("store: decode tenant %q: %w", name, err)
		}
		if err := fn(&t); err != nil {
			return nil, err
		}
		if t.Name != name {
			return nil, fmt.Errorf("tenant %q: an update may not rename it: %w", name, errdefs.ErrInvalidArgument)
		}
		val, err := json.Marshal(&t)
		if err != nil {
			return nil, err
		}
		put, err := s.client.Txn(ctx).
			If(clientv3.Compare(clientv3.ModRevision(tenantKey(name)), "=", kv.ModRevision)).
			Then(clientv3.OpPut(tenantKey(name), string(val))).
			Commit()
		if err != nil {
			return nil, s.etcdErr(ctx, "update tenant", err)
		}
		if put.Succeeded {
			return &t, nil
		}
	}
}

// TenantQuota returns tenant name's quota: nil when it has none, or no
// record (the hosts ask only for the caps of their tenants' cgroups).
func (s *Store) TenantQuota(ctx context.Context, name string) (*api.Quota, error) {
	t, err := s.GetTenant(ctx, name)
	if errors.Is(err, errdefs.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return t.Quota, nil
}
