package store

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
	"github.com/kanga-run/kanga/internal/model"
	"github.com/kanga-run/kanga/internal/tenant"
)

// Quota accounting. Each tenant has a usage record, /kanga/usage/<tenant>,
// the sum of model.QuotaCharge over its instances. Every write that adds
// or removes an instance record changes it in the same etcd transaction,
// which also compares its mod revision: two creates that read the same
// usage cannot both commit, so racing creates never exceed a quota, and
// a crash between the two writes cannot happen. An instance counts from
// its creation until its record is removed, whatever its phase: the
// record, its logs on the host and its reservation (until the host
// releases it) stay until then, and counting only at the two ends keeps
// status writes, the busiest writes, off the tenant's usage record.
//
// A usage record that does not exist yet (a new tenant, or instances
// stored before quotas) is computed from the tenant's instances, in a
// transaction that fails if anything changed meanwhile. ReconcileUsage
// recomputes a record the same way, for records an older version or a
// hand edit left wrong.

const usagePrefix = "/kanga/usage/"

func usageKey(t string) string { return usagePrefix + t }

// CreateOption modifies CreateInstance.
type CreateOption func(*createOptions)

type createOptions struct {
	limits *api.QuotaAmounts
}

// WithQuota admits the instance only if its charge fits the tenant's
// limits (api.Unlimited where there is none) on top of what the tenant's
// instances use; otherwise CreateInstance fails with model.CheckQuota's
// PermissionDenied error and stores nothing.
func WithQuota(limits api.QuotaAmounts) CreateOption {
	return func(o *createOptions) { o.limits = &limits }
}

// usageRecord is a tenant's usage as read, with the mod revision a write
// must compare (0: the record does not exist).
type usageRecord struct {
	used   api.QuotaAmounts
	modRev int64
}

func decodeUsage(kv *mvccpb.KeyValue) (usageRecord, error) {
	var u usageRecord
	if err := json.Unmarshal(kv.Value, &u.used); err != nil {
		return u, fmt.Errorf("store: decode %s: %w", kv.Key, err)
	}
	u.modRev = kv.ModRevision
	return u, nil
}

// putUsage is the operation that stores used as tenant t's usage.
func putUsage(t string, used api.QuotaAmounts) clientv3.Op {
	// Counts never go negative, even if a record was wrong: the next
	// reconcile sets it right.
	for _, p := range []*int64{&used.Instances, &used.MilliCPU, &used.MemoryBytes, &used.Ports, &used.Volumes, &used.Devices, &used.DiskBytes} {
		*p = max(*p, 0)
	}
	b, _ := json.Marshal(used)
	return clientv3.OpPut(usageKey(t), string(b))
}

// usageOf sums the charges of instances.
func (s *Store) usageOf(kvs []*mvccpb.KeyValue) api.QuotaAmounts {
	var used api.QuotaAmounts
	for _, kv := range kvs {
		inst, err := decodeInstance(kv)
		if err != nil {
			s.logger.Error("skipping undecodable instance in the quota usage", "key", string(kv.Key), "error", err)
			continue
		}
		used = model.Add(used, model.QuotaCharge(&inst.Spec))
	}
	return used
}

// storedAndCounted reads tenant t's usage record (nil when there is none)
// and what its instances add up to, at one revision.
func (s *Store) storedAndCounted(ctx context.Context, t string) (*mvccpb.KeyValue, api.QuotaAmounts, error) {
	resp, err := s.client.Txn(ctx).Then(
		clientv3.OpGet(usageKey(t)),
		clientv3.OpGet(tenantPrefix(t), clientv3.WithPrefix()),
	).Commit()
	if err != nil {
		return nil, api.QuotaAmounts{}, s.etcdErr(ctx, "read quota usage", err)
	}
	var stored *mvccpb.KeyValue
	if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) > 0 {
		stored = kvs[0]
	}
	return stored, s.usageOf(resp.Responses[1].GetResponseRange().Kvs), nil
}

// initUsage computes tenant t's usage record from its instances and stores
// it, unless it exists by then; it returns the record as stored.
func (s *Store) initUsage(ctx context.Context, t string) (usageRecord, error) {
	for {
		stored, used, err := s.storedAndCounted(ctx, t)
		if err != nil {
			return usageRecord{}, err
		}
		if stored != nil {
			return decodeUsage(stored)
		}
		put, err := s.client.Txn(ctx).
			If(clientv3.Compare(clientv3.CreateRevision(usageKey(t)), "=", 0)).
			Then(putUsage(t, used)).
			Commit()
		if err != nil {
			return usageRecord{}, s.etcdErr(ctx, "store quota usage", err)
		}
		if put.Succeeded {
			return usageRecord{used: used, modRev: put.Header.Revision}, nil
		}
	}
}

// readWithUsage reads key and tenant t's usage at one revision; the
// usage record is created first if it does not exist.
func (s *Store) readWithUsage(ctx context.Context, t, key string, opts ...clientv3.OpOption) (*mvccpb.KeyValue, usageRecord, error) {
	for {
		resp, err := s.client.Txn(ctx).Then(
			clientv3.OpGet(key, opts...),
			clientv3.OpGet(usageKey(t)),
		).Commit()
		if err != nil {
			return nil, usageRecord{}, s.etcdErr(ctx, "read quota usage", err)
		}
		var kv *mvccpb.KeyValue
		if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) > 0 {
			kv = kvs[0]
		} else if resp.Responses[0].GetResponseRange().Count > 0 {
			kv = &mvccpb.KeyValue{Key: []byte(key)} // count only
		}
		ukvs := resp.Responses[1].GetResponseRange().Kvs
		if len(ukvs) == 0 {
			if _, err := s.initUsage(ctx, t); err != nil {
				return nil, usageRecord{}, err
			}
			continue
		}
		u, err := decodeUsage(ukvs[0])
		return kv, u, err
	}
}

// createInstance stores inst under key with its charge added to the
// tenant's usage, admitted by limits when given.
//
// The usage last written by this store is remembered per tenant, so that
// the common case (one API server making a tenant's creates) costs one
// transaction, as a create without quotas did: a stale guess fails the
// transaction's compare, whose Else branch returns the current record. A
// refusal is only ever decided on a record just read.
func (s *Store) createInstance(ctx context.Context, t, key string, inst *api.Instance, val string, limits *api.QuotaAmounts) error {
	charge := model.QuotaCharge(&inst.Spec)
	var (
		u     usageRecord
		fresh bool
	)
	// read takes the record as it is now; a taken name ends the create.
	read := func() error {
		existing, cur, err := s.readWithUsage(ctx, t, key, clientv3.WithCountOnly())
		if err != nil {
			return err
		}
		if existing != nil {
			return alreadyExists(inst.Name, t)
		}
		u, fresh = cur, true
		return nil
	}
	if v, ok := s.usage.Load(t); ok {
		u = v.(usageRecord)
	} else if err := read(); err != nil {
		return err
	}
	for {
		if limits != nil {
			if err := model.CheckQuota(t, u.used, charge, *limits); err != nil {
				if fresh {
					return err
				}
				if err := read(); err != nil {
					return err
				}
				continue
			}
		}
		next := model.Add(u.used, charge)
		resp, err := s.client.Txn(ctx).
			If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0),
				clientv3.Compare(clientv3.ModRevision(usageKey(t)), "=", u.modRev)).
			Then(clientv3.OpPut(key, val), putUsage(t, next)).
			Else(clientv3.OpGet(key, clientv3.WithCountOnly()), clientv3.OpGet(usageKey(t))).
			Commit()
		if err != nil {
			return s.etcdErr(ctx, "create instance", err)
		}
		if resp.Succeeded {
			s.usage.Store(t, usageRecord{used: next, modRev: resp.Header.Revision})
			return nil
		}
		if resp.Responses[0].GetResponseRange().Count > 0 {
			return alreadyExists(inst.Name, t)
		}
		// Another create or delete of the tenant came first (or the guess
		// was stale): go on from the record as the transaction saw it.
		if kvs := resp.Responses[1].GetResponseRange().Kvs; len(kvs) > 0 {
			if u, err = decodeUsage(kvs[0]); err != nil {
				return err
			}
		} else if u, err = s.initUsage(ctx, t); err != nil {
			return err
		}
		fresh = true
	}
}

func alreadyExists(name, t string) error {
	return fmt.Errorf("instance %q already exists in tenant %q: choose another --name or remove it with kanga rm: %w",
		name, t, errdefs.ErrAlreadyExists)
}

// deleteInstance removes the caller's instance under key and its charge
// from the tenant's usage.
func (s *Store) deleteInstance(ctx context.Context, t, key, name string) error {
	for {
		kv, u, err := s.readWithUsage(ctx, t, key)
		if err != nil {
			return err
		}
		if kv == nil {
			return notFound(name)
		}
		inst, err := decodeInstance(kv)
		if err != nil {
			return err
		}
		resp, err := s.client.Txn(ctx).
			If(clientv3.Compare(clientv3.ModRevision(key), "=", kv.ModRevision),
				clientv3.Compare(clientv3.ModRevision(usageKey(t)), "=", u.modRev)).
			Then(clientv3.OpDelete(key), putUsage(t, model.Sub(u.used, model.QuotaCharge(&inst.Spec)))).
			Commit()
		if err != nil {
			return s.etcdErr(ctx, "delete instance", err)
		}
		if resp.Succeeded {
			s.usage.Delete(t)
			return nil
		}
		// The instance or the tenant's usage changed meanwhile: read again.
	}
}

// TenantUsage returns what tenant t's instances count against its quota.
func (s *Store) TenantUsage(ctx context.Context, t string) (api.QuotaAmounts, error) {
	if err := tenant.Validate(t); err != nil {
		return api.QuotaAmounts{}, err
	}
	resp, err := s.client.Get(ctx, usageKey(t))
	if err != nil {
		return api.QuotaAmounts{}, s.etcdErr(ctx, "read quota usage", err)
	}
	if len(resp.Kvs) > 0 {
		u, err := decodeUsage(resp.Kvs[0])
		return u.used, err
	}
	u, err := s.initUsage(ctx, t)
	return u.used, err
}

// ReconcileUsage recomputes tenant t's usage from its instances and
// corrects the stored record if it differs. It returns the usage and
// whether the record was wrong.
func (s *Store) ReconcileUsage(ctx context.Context, t string) (api.QuotaAmounts, bool, error) {
	for {
		stored, want, err := s.storedAndCounted(ctx, t)
		if err != nil {
			return api.QuotaAmounts{}, false, err
		}
		cmp := clientv3.Compare(clientv3.CreateRevision(usageKey(t)), "=", 0)
		if stored != nil {
			u, err := decodeUsage(stored)
			if err == nil && u.used == want {
				return want, false, nil
			}
			cmp = clientv3.Compare(clientv3.ModRevision(usageKey(t)), "=", stored.ModRevision)
		}
		put, err := s.client.Txn(ctx).If(cmp).Then(putUsage(t, want)).Commit()
		if err != nil {
			return api.QuotaAmounts{}, false, s.etcdErr(ctx, "store quota usage", err)
		}
		if put.Succeeded {
			s.usage.Delete(t)
			return want, true, nil
		}
	}
}

// ReconcileAllUsage reconciles the usage of every tenant that has
// instances or a usage record, and returns the tenants whose record was
// wrong.
func (s *Store) ReconcileAllUsage(ctx context.Context) ([]string, error) {
	names := map[string]bool{}
	for _, prefix := range []string{instancesPrefix, usagePrefix} {
		resp, err := s.client.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
		if err != nil {
			return nil, s.etcdErr(ctx, "list quota usage", err)
		}
		for _, kv := range resp.Kvs {
			rest := strings.TrimPrefix(string(kv.Key), prefix)
			t, _, _ := strings.Cut(rest, "/")
			names[t] = true
		}
	}
	var fixed []string
	for t := range names {
		if tenant.Validate(t) != nil {
			continue
		}
		_, changed, err := s.ReconcileUsage(ctx, t)
		if err != nil {
			return fixed, err
		}
		if changed {
			fixed = append(fixed, t)
		}
	}
	return fixed, nil
}
