package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
	"github.com/kanga-run/kanga/internal/model"
)

// electionPrefix holds the candidates of the control-plane elections.
const electionPrefix = "/kanga/election/"

// ErrNotLeader is returned by a fenced write after its leadership ended.
var ErrNotLeader = fmt.Errorf("this replica is no longer the control-plane leader: %w", errdefs.ErrUnavailable)

// Leader is a won control-plane election. Its writes (PutInstanceIf,
// DeleteInstanceIf) are fenced: they succeed only while the leader key
// still exists, so a replica that lost its lease (paused, partitioned)
// can never write over a newer leader's placements.
type Leader struct {
	session  *concurrency.Session
	election *concurrency.Election
	key      string
	rev      int64
}

// Campaign blocks until this replica leads the named election, or ctx
// ends. The leadership lasts until Resign, ctx's end, or the loss of its
// session (ttl without contact with etcd); Done is closed then. The
// session's keep-alives and the campaign use the control connection
// (Store.ctl), the leader's fenced writes the ordinary one.
func (s *Store) Campaign(ctx context.Context, name, id string, ttl time.Duration) (*Leader, error) {
	secs := max(int(ttl.Seconds()), 1)
	sess, err := concurrency.NewSession(s.ctl, concurrency.WithTTL(secs), concurrency.WithContext(ctx))
	if err != nil {
		return nil, s.etcdErr(ctx, "start election session", err)
	}
	e := concurrency.NewElection(sess, electionPrefix+name)
	if err := e.Campaign(ctx, id); err != nil {
		sess.Close()
		return nil, s.etcdErr(ctx, "campaign", err)
	}
	return &Leader{session: sess, election: e, key: e.Key(), rev: e.Rev()}, nil
}

// Done is closed when the leadership may have ended.
func (l *Leader) Done() <-chan struct{} { return l.session.Done() }

// Revision is the etcd revision at which the leadership began: every write
// of an earlier leader happened before it.
func (l *Leader) Revision() int64 { return l.rev }

// Resign gives the leadership up at once, so that another replica need not
// wait for the session to expire.
func (l *Leader) Resign(ctx context.Context) {
	_ = l.election.Resign(ctx)
	_ = l.session.Close()
}

func (l *Leader) fence() clientv3.Cmp {
	return clientv3.Compare(clientv3.CreateRevision(l.key), "=", l.rev)
}

// PutInstanceIf stores inst if the instance's mod revision is still modRev
// and l still leads. It returns the new mod revision; ErrConflict when the
// instance changed or is gone (the caller re-reads it from its watch);
// ErrNotLeader when the leadership ended.
func (s *Store) PutInstanceIf(ctx context.Context, l *Leader, inst *api.Instance, modRev int64) (int64, error) {
	if err := checkName(inst.Name); err != nil {
		return 0, err
	}
	key := instanceKey(inst.Tenant, inst.Name)
	val, err := json.Marshal(inst)
	if err != nil {
		return 0, fmt.Errorf("store: encode instance %q: %w", inst.Name, err)
	}
	resp, err := s.client.Txn(ctx).
		If(l.fence(), clientv3.Compare(clientv3.ModRevision(key), "=", modRev)).
		Then(clientv3.OpPut(key, string(val))).
		Else(clientv3.OpGet(l.key, clientv3.WithCountOnly())).
		Commit()
	if err != nil {
		return 0, s.etcdErr(ctx, "put instance", err)
	}
	if !resp.Succeeded {
		return 0, s.fenceFailure(resp, inst.Tenant, inst.Name)
	}
	return resp.Header.Revision, nil
}

// DeleteInstanceIf removes an instance, and its charge from its tenant's
// quota usage, if its mod revision is still modRev and l still leads;
// errors as PutInstanceIf.
func (s *Store) DeleteInstanceIf(ctx context.Context, l *Leader, tenantName, name string, modRev int64) error {
	if err := checkName(name); err != nil {
		return err
	}
	key := instanceKey(tenantName, name)
	for {
		kv, u, err := s.readWithUsage(ctx, tenantName, key)
		if err != nil {
			return err
		}
		cmps := []clientv3.Cmp{l.fence(), clientv3.Compare(clientv3.ModRevision(key), "=", modRev)}
		ops := []clientv3.Op{clientv3.OpDelete(key)}
		if kv != nil && kv.ModRevision == modRev {
			inst, err := decodeInstance(kv)
			if err != nil {
				return err
			}
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(usageKey(tenantName)), "=", u.modRev))
			ops = append(ops, putUsage(tenantName, model.Sub(u.used, model.QuotaCharge(&inst.Spec))))
		}
		// Otherwise the transaction fails on the instance's revision (or
		// the fence), which fenceFailure reports.
		resp, err := s.client.Txn(ctx).If(cmps...).Then(ops...).
			Else(clientv3.OpGet(l.key, clientv3.WithCountOnly()), clientv3.OpGet(key, clientv3.WithKeysOnly())).
			Commit()
		if err != nil {
			return s.etcdErr(ctx, "delete instance", err)
		}
		if resp.Succeeded {
			s.usage.Delete(tenantName)
			return nil
		}
		if kvs := resp.Responses[1].GetResponseRange().Kvs; resp.Responses[0].GetResponseRange().Count > 0 &&
			len(kvs) > 0 && kvs[0].ModRevision == modRev {
			continue // only the tenant's usage moved on: read again
		}
		return s.fenceFailure(resp, tenantName, name)
	}
}

// fenceFailure tells a lost leadership from a changed instance. The leader
// key can only have been deleted (a later leader has another key), so its
// absence is the loss.
func (s *Store) fenceFailure(resp *clientv3.TxnResponse, tenantName, name string) error {
	if resp.Responses[0].GetResponseRange().Count == 0 {
		return ErrNotLeader
	}
	return fmt.Errorf("instance %s/%s changed meanwhile: %w", tenantName, name, errdefs.ErrConflict)
}

// IsNotLeader reports whether err is a fenced write refused for lost
// leadership.
func IsNotLeader(err error) bool { return errors.Is(err, ErrNotLeader) }

// ListAllInstanceVersions is ListAllInstances with each instance's mod
// revision, as put events, for a writer that compares revisions.
func (s *Store) ListAllInstanceVersions(ctx context.Context) ([]InstanceEvent, int64, error) {
	resp, err := s.client.Get(ctx, instancesPrefix, clientv3.WithPrefix())
	if err != nil {
		return nil, 0, s.etcdErr(ctx, "list all instances", err)
	}
	out := make([]InstanceEvent, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		t, name, ok := parseInstanceKey(string(kv.Key))
		if !ok {
			continue
		}
		inst, err := decodeInstance(kv)
		if err != nil {
			s.logger.Error("skipping undecodable instance", "key", string(kv.Key), "error", err)
			continue
		}
		out = append(out, InstanceEvent{Instance: inst, Tenant: t, Name: name, ModRevision: kv.ModRevision, Revision: resp.Header.Revision})
	}
	return out, resp.Header.Revision, nil
}

// InstanceWrite is one instance version for PutInstancesIf, with the mod
// revision it replaces.
type InstanceWrite struct {
	Instance *api.Instance
	ModRev   int64
	// Unleased, if set, names a host that must hold no lease for the
	// write to apply: the failure detector's fence, so that a lost host
	// that came back meanwhile keeps its instances.
	Unleased string
}

// PutInstancesIf stores every write in one transaction if each instance's
// mod revision is still the one given and l still leads: all or nothing.
// It returns the revision of the transaction (the new mod revision of
// every instance); ErrConflict when any instance changed (the caller
// retries them one by one); ErrNotLeader when the leadership ended. One
// transaction for many placements costs one etcd commit instead of many.
// A write with Unleased fails the same way (ErrConflict) when that host
// holds a lease. At most MaxBatch writes.
func (s *Store) PutInstancesIf(ctx context.Context, l *Leader, writes []InstanceWrite) (int64, error) {
	if len(writes) > MaxBatch {
		return 0, fmt.Errorf("store: %d writes in one transaction, at most %d: %w", len(writes), MaxBatch, errdefs.ErrInvalidArgument)
	}
	cmps := []clientv3.Cmp{l.fence()}
	ops := make([]clientv3.Op, 0, len(writes))
	var unleased []string
	for _, w := range writes {
		if err := checkName(w.Instance.Name); err != nil {
			return 0, err
		}
		key := instanceKey(w.Instance.Tenant, w.Instance.Name)
		val, err := json.Marshal(w.Instance)
		if err != nil {
			return 0, fmt.Errorf("store: encode instance %q: %w", w.Instance.Name, err)
		}
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(key), "=", w.ModRev))
		if w.Unleased != "" && !slices.Contains(unleased, w.Unleased) {
			unleased = append(unleased, w.Unleased)
			cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(hostLeaseKey(w.Unleased)), "=", 0))
		}
		ops = append(ops, clientv3.OpPut(key, string(val)))
	}
	if len(cmps) > etcdMaxTxnOps {
		return 0, fmt.Errorf("store: %d compares in one transaction, at most %d (fewer writes or fenced hosts per batch): %w", len(cmps), etcdMaxTxnOps, errdefs.ErrInvalidArgument)
	}
	resp, err := s.client.Txn(ctx).If(cmps...).Then(ops...).
		Else(clientv3.OpGet(l.key, clientv3.WithCountOnly())).Commit()
	if err != nil {
		return 0, s.etcdErr(ctx, "put instances", err)
	}
	if !resp.Succeeded {
		if resp.Responses[0].GetResponseRange().Count == 0 {
			return 0, ErrNotLeader
		}
		return 0, fmt.Errorf("one of %d instances changed meanwhile: %w", len(writes), errdefs.ErrConflict)
	}
	return resp.Header.Revision, nil
}

// MaxBatch bounds PutInstancesIf: etcd refuses transactions of more than
// 128 operations by default, and the fence takes one compare.
const MaxBatch = 100

// etcdMaxTxnOps is etcd's default limit (--max-txn-ops) on each of a
// transaction's compare, success and failure lists.
const etcdMaxTxnOps = 128
