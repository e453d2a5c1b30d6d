package store

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
	"github.com/kanga-run/kanga/internal/tenant"
)

const instancesPrefix = "/kanga/instances/"

// tenantPrefix ends in a slash so that tenant "a" never lists tenant "ab".
func tenantPrefix(t string) string { return instancesPrefix + t + "/" }

func instanceKey(t, name string) string { return tenantPrefix(t) + name }

// parseInstanceKey splits /kanga/instances/<tenant>/<name>. Tenant names
// are DNS labels and instance names contain no slash, so the split is
// unambiguous.
func parseInstanceKey(key string) (tenantName, name string, ok bool) {
	rest, ok := strings.CutPrefix(key, instancesPrefix)
	if !ok {
		return "", "", false
	}
	return strings.Cut(rest, "/")
}

// scope returns the caller's tenant and the key of the named instance.
func scope(ctx context.Context, name string) (string, string, error) {
	t, err := tenant.Name(ctx)
	if err != nil {
		return "", "", err
	}
	if err := checkName(name); err != nil {
		return "", "", err
	}
	return t, instanceKey(t, name), nil
}

// checkName rejects only names that would break the key layout; the model
// package owns the real naming rules.
func checkName(name string) error {
	if name == "" || strings.Contains(name, "/") {
		return fmt.Errorf("instance name %q is invalid: it must be non-empty and contain no '/': %w", name, errdefs.ErrInvalidArgument)
	}
	return nil
}

func notFound(name string) error {
	return fmt.Errorf("instance %q not found: %w", name, errdefs.ErrNotFound)
}

func decodeInstance(kv *mvccpb.KeyValue) (*api.Instance, error) {
	var inst api.Instance
	if err := json.Unmarshal(kv.Value, &inst); err != nil {
		return nil, fmt.Errorf("store: decode %s: %w", kv.Key, err)
	}
	return &inst, nil
}

// CreateInstance stores a new instance in the caller's tenant and counts
// it in the tenant's quota usage (see usage.go). The instance's Tenant
// must be the caller's: nobody creates in another tenant. It fails with
// ErrAlreadyExists when the name is taken there, and with WithQuota's
// PermissionDenied when the instance does not fit the tenant's quota.
func (s *Store) CreateInstance(ctx context.Context, inst *api.Instance, opts ...CreateOption) error {
	t, key, err := scope(ctx, inst.Name)
	if err != nil {
		return err
	}
	if inst.Tenant != t {
		return fmt.Errorf("instance %q belongs to tenant %q, not to the caller's tenant %q: %w",
			inst.Name, inst.Tenant, t, errdefs.ErrPermissionDenied)
	}
	val, err := json.Marshal(inst)
	if err != nil {
		return fmt.Errorf("store: encode instance %q: %w", inst.Name, err)
	}
	var o createOptions
	for _, opt := range opts {
		opt(&o)
	}
	return s.createInstance(ctx, t, key, inst, string(val), o.limits)
}

// GetInstance returns the caller's instance name.
func (s *Store) GetInstance(ctx context.Context, name string) (*api.Instance, error) {
	_, key, err := scope(ctx, name)
	if err != nil {
		return nil, err
	}
	resp, err := s.client.Get(ctx, key)
	if err != nil {
		return nil, s.etcdErr(ctx, "get instance", err)
	}
	if len(resp.Kvs) == 0 {
		return nil, notFound(name)
	}
	return decodeInstance(resp.Kvs[0])
}

// ListInstances returns the caller's instances, oldest first (ties by
// name).
func (s *Store) ListInstances(ctx context.Context) ([]api.Instance, error) {
	t, err := tenant.Name(ctx)
	if err != nil {
		return nil, err
	}
	resp, err := s.client.Get(ctx, tenantPrefix(t), clientv3.WithPrefix())
	if err != nil {
		return nil, s.etcdErr(ctx, "list instances", err)
	}
	out := make([]api.Instance, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		inst, err := decodeInstance(kv)
		if err != nil {
			return nil, err
		}
		out = append(out, *inst)
	}
	slices.SortFunc(out, func(a, b api.Instance) int {
		if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
			return c
		}
		return cmp.Compare(a.Name, b.Name)
	})
	return out, nil
}

// UpdateInstance applies fn to the current version of the caller's
// instance and stores the result if nobody changed the instance in
// between; otherwise it runs fn again on the newer version. fn may thus
// run several times and must only modify the instance it is given. An
// error from fn aborts the update and is returned as is. fn may not change
// the instance's name or tenant.
func (s *Store) UpdateInstance(ctx context.Context, name string, fn func(*api.Instance) error) (*api.Instance, error) {
	t, key, err := scope(ctx, name)
	if err != nil {
		return nil, err
	}
	// The first read is serializable: it skips the leader's read-index
	// round (which waits for the apply loop, milliseconds under a burst of
	// writes). It is only a guess: the write below compares the mod
	// revision, and a failed compare returns the current version. What a
	// guess cannot do is end the update, so a "not found" or an error from
	// fn on a guessed version is checked again on a linearizable read.
	resp, err := s.client.Get(ctx, key, clientv3.WithSerializable())
	if err != nil {
		return nil, s.etcdErr(ctx, "get instance", err)
	}
	kvs := resp.Kvs
	guess := true
	for {
		if len(kvs) == 0 && guess {
			if kvs, err = s.readInstance(ctx, key); err != nil {
				return nil, err
			}
			guess = false
		}
		if len(kvs) == 0 {
			return nil, notFound(name)
		}
		cur := kvs[0]
		inst, err := decodeInstance(cur)
		if err != nil {
			return nil, err
		}
		if err := fn(inst); err != nil {
			if !guess {
				return nil, err
			}
			if kvs, err = s.readInstance(ctx, key); err != nil {
				return nil, err
			}
			guess = false
			continue
		}
		if inst.Name != name || inst.Tenant != t {
			return nil, fmt.Errorf("instance %q: an update may not change the name or tenant (to %q in tenant %q): %w",
				name, inst.Name, inst.Tenant, errdefs.ErrInvalidArgument)
		}
		val, err := json.Marshal(inst)
		if err != nil {
			return nil, fmt.Errorf("store: encode instance %q: %w", name, err)
		}
		// On conflict the Else branch returns the newer version, which
		// saves a round trip per retry.
		tresp, err := s.client.Txn(ctx).
			If(clientv3.Compare(clientv3.ModRevision(key), "=", cur.ModRevision)).
			Then(clientv3.OpPut(key, string(val))).
			Else(clientv3.OpGet(key)).
			Commit()
		if err != nil {
			return nil, s.etcdErr(ctx, "update instance", err)
		}
		if tresp.Succeeded {
			return inst, nil
		}
		// The Else read ran in the transaction: it is current.
		kvs = tresp.Responses[0].GetResponseRange().Kvs
		guess = false
	}
}

// readInstance is a linearizable read of an instance's key.
func (s *Store) readInstance(ctx context.Context, key string) ([]*mvccpb.KeyValue, error) {
	resp, err := s.client.Get(ctx, key)
	if err != nil {
		return nil, s.etcdErr(ctx, "get instance", err)
	}
	return resp.Kvs, nil
}

// DeleteInstance removes the caller's instance and its charge from the
// tenant's quota usage. It fails with ErrNotFound when there is none, so
// that a caller learns about a wrong name.
func (s *Store) DeleteInstance(ctx context.Context, name string) error {
	t, key, err := scope(ctx, name)
	if err != nil {
		return err
	}
	return s.deleteInstance(ctx, t, key, name)
}

// WaitInstance returns the first version of the caller's instance, the
// current one or a later one, for which cond returns true. It fails with
// ErrNotFound when the instance does not exist or is deleted while
// waiting, and with the context's error when ctx ends first. cond is
// never called with nil.
func (s *Store) WaitInstance(ctx context.Context, name string, cond func(*api.Instance) bool) (*api.Instance, error) {
	_, key, err := scope(ctx, name)
	if err != nil {
		return nil, err
	}
	var found *api.Instance
	err = s.waitKey(ctx, key, func(kv *mvccpb.KeyValue) (bool, error) {
		if kv == nil {
			return false, notFound(name)
		}
		inst, err := decodeInstance(kv)
		if err != nil {
			return false, err
		}
		if cond(inst) {
			found = inst
			return true, nil
		}
		return false, nil
	})
	return found, err
}

// WaitInstanceGone returns once the caller's instance does not exist,
// immediately if it never did.
func (s *Store) WaitInstanceGone(ctx context.Context, name string) error {
	_, key, err := scope(ctx, name)
	if err != nil {
		return err
	}
	return s.waitKey(ctx, key, func(kv *mvccpb.KeyValue) (bool, error) {
		return kv == nil, nil
	})
}

// waitKey calls check with the current value of key (nil when absent) and
// then with every later value, until check returns true or an error.
//
// It starts a watch first and reads the key once the watch exists, then
// feeds check the watch's changes made after that read, so no change is
// missed. The order matters for latency: etcd serves a watch that starts
// at the current revision at once, but one asked to start at an older
// revision (read first, then watch from the revision after the read, with
// any write to any key in between) is caught up by its background sync,
// which runs every 100 ms. Under a stream of writes that delayed almost
// every wait by up to 100 ms.
//
// When the watch is broken or compacted, it starts over with a new watch
// and a fresh read.
func (s *Store) waitKey(ctx context.Context, key string, check func(kv *mvccpb.KeyValue) (bool, error)) error {
	for {
		done, err := s.watchKey(ctx, key, check)
		if done || err != nil {
			return err
		}
		// The watch ended without an answer: resynchronise after a pause,
		// unless the caller or the store is done.
		if err := s.pause(ctx); err != nil {
			return err
		}
	}
}

// watchKey is one round of waitKey: watch, read, then follow the watch. It
// returns false, nil when the watch broke and must be restarted.
func (s *Store) watchKey(ctx context.Context, key string, check func(kv *mvccpb.KeyValue) (bool, error)) (bool, error) {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	wch := s.client.Watch(wctx, key, clientv3.WithCreatedNotify())
	// The read must not be older than the watch's start, so it waits for
	// etcd to confirm the watch.
	select {
	case wr, ok := <-wch:
		if !ok {
			return false, ctx.Err()
		}
		if err := wr.Err(); err != nil {
			s.logger.Debug("watch interrupted; resynchronising", "key", key, "error", err)
			return false, nil
		}
	case <-ctx.Done():
		return false, ctx.Err()
	}
	resp, err := s.client.Get(ctx, key)
	if err != nil {
		return false, s.etcdErr(ctx, "get", err)
	}
	var kv *mvccpb.KeyValue
	if len(resp.Kvs) > 0 {
		kv = resp.Kvs[0]
	}
	if done, err := check(kv); done || err != nil {
		return done, err
	}
	read := resp.Header.Revision
	for wr := range wch {
		if err := wr.Err(); err != nil {
			s.logger.Debug("watch interrupted; resynchronising", "key", key, "error", err)
			return false, nil
		}
		for _, ev := range wr.Events {
			if ev.Kv.ModRevision <= read {
				continue // the read saw this change already
			}
			var kv *mvccpb.KeyValue
			if ev.Type == clientv3.EventTypePut {
				kv = ev.Kv
			}
			if done, err := check(kv); done || err != nil {
				return done, err
			}
		}
	}
	if err := ctx.Err(); err != nil {
		return false, err
	}
	return false, nil
}

// WatchInstance returns the versions of the caller's instance name written
// from now on, until it is deleted or ctx ends (the channel is closed
// then). It returns once etcd has registered the watch, so a write made
// after it returns is never missed; call it before the write whose
// consequences you wait for. (A watch that starts at a past revision would
// be served by etcd's catch-up loop, up to 100 ms late.)
func (s *Store) WatchInstance(ctx context.Context, name string) (<-chan *api.Instance, error) {
	_, key, err := scope(ctx, name)
	if err != nil {
		return nil, err
	}
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	wch := s.client.Watch(wctx, key, clientv3.WithCreatedNotify())
	select {
	case wr, ok := <-wch:
		if !ok || wr.Err() != nil {
			cancel()
			if !ok {
				return nil, s.etcdErr(ctx, "watch instance", ctx.Err())
			}
			return nil, s.etcdErr(ctx, "watch instance", wr.Err())
		}
	case <-ctx.Done():
		cancel()
		return nil, ctx.Err()
	}
	out := make(chan *api.Instance, 4)
	go func() {
		defer cancel()
		defer close(out)
		for wr := range wch {
			for _, ev := range wr.Events {
				if ev.Type == clientv3.EventTypeDelete {
					return
				}
				inst, err := decodeInstance(ev.Kv)
				if err != nil {
					continue
				}
				select {
				case out <- inst:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return out, nil
}

// InstanceRecord is an instance as stored: its JSON and the revision that
// last wrote it, so that a reader can keep what it derived from the JSON
// until the revision changes.
type InstanceRecord struct {
	Name        string
	ModRevision int64
	Value       []byte
}

// ListInstanceRecords returns the caller's instances as stored at
// revision rev (0: the current one), in key order, and the revision read.
// Reading at the revision of an earlier call gives the same snapshot until
// etcd compacts it; then the error is ErrFailedPrecondition.
func (s *Store) ListInstanceRecords(ctx context.Context, rev int64) ([]InstanceRecord, int64, error) {
	t, err := tenant.Name(ctx)
	if err != nil {
		return nil, 0, err
	}
	opts := []clientv3.OpOption{clientv3.WithPrefix()}
	if rev > 0 {
		opts = append(opts, clientv3.WithRev(rev))
	}
	prefix := tenantPrefix(t)
	resp, err := s.client.Get(ctx, prefix, opts...)
	if errors.Is(err, rpctypes.ErrCompacted) || errors.Is(err, rpctypes.ErrFutureRev) {
		return nil, 0, fmt.Errorf("revision %d is no longer (or not yet) readable: %w", rev, errdefs.ErrFailedPrecondition)
	}
	if err != nil {
		return nil, 0, s.etcdErr(ctx, "list instances", err)
	}
	out := make([]InstanceRecord, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		out = append(out, InstanceRecord{Name: strings.TrimPrefix(string(kv.Key), prefix), ModRevision: kv.ModRevision, Value: kv.Value})
	}
	read := resp.Header.Revision
	if rev > 0 {
		read = rev
	}
	return out, read, nil
}
