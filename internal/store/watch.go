package store

import (
	"context"
	"errors"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kanga-run/kanga/api"
)

// InstanceEvent is one change seen by WatchAllInstances.
type InstanceEvent struct {
	// Instance is the new version, or on deletion the last version known
	// to the watcher (nil if it never saw one).
	Instance *api.Instance
	Deleted  bool
	Tenant   string
	Name     string
	// ModRevision is the instance's etcd mod revision for a put (also a
	// synthesised one), 0 for a deletion. A writer that compares it
	// (PutInstanceIf) changes exactly the version it saw.
	ModRevision int64
	// Revision is the etcd revision of the change; for an event
	// synthesised by a resynchronisation it is the revision of that
	// listing. Pass the last one seen to WatchAllInstances to resume.
	Revision int64
}

// ListAllInstances returns the instances of every tenant, sorted by tenant
// and name, and the etcd revision of that snapshot. It is the host-scoped
// view of an agent, which serves all tenants; it needs no tenant in ctx.
func (s *Store) ListAllInstances(ctx context.Context) ([]api.Instance, int64, error) {
	resp, err := s.client.Get(ctx, instancesPrefix, clientv3.WithPrefix())
	if err != nil {
		return nil, 0, s.etcdErr(ctx, "list all instances", err)
	}
	out := make([]api.Instance, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		inst, err := decodeInstance(kv)
		if err != nil {
			return nil, 0, err
		}
		out = append(out, *inst)
	}
	return out, resp.Header.Revision, nil
}

// WatchAllInstances streams the changes to the instances of every tenant
// made after fromRevision, the revision returned by ListAllInstances (or
// the Revision of the last event handled). With fromRevision 0 it first
// sends every current instance as a put event, so that one call gives
// list-then-watch.
//
// The channel is closed when ctx ends or the store is closed, and only
// then: the watch survives etcd restarts, lost leaders and compaction.
// After a broken watch it resumes from the last revision it delivered;
// when that revision has been compacted away it lists all instances again
// and sends synthetic events for the difference: a put for every instance
// that is new or changed, a deletion for every instance it had seen that
// is gone. Consumers should therefore treat events as level-triggered
// ("this is now the state of tenant/name"): a put may repeat a version
// already seen, and intermediate versions may be skipped.
//
// One case cannot be repaired: when fromRevision itself is already
// compacted at the start, the watcher does not know what the caller had
// listed, so deletions between fromRevision and now are not reported.
// Compaction keeps ten minutes of history on the embedded server, so a
// revision just returned by ListAllInstances is safe.
func (s *Store) WatchAllInstances(ctx context.Context, fromRevision int64) <-chan InstanceEvent {
	ch := make(chan InstanceEvent, 64)
	w := &allWatcher{s: s, ch: ch, known: make(map[string]known)}
	go func() {
		defer close(ch)
		w.run(ctx, fromRevision)
	}()
	return ch
}

// known is the last version of an instance the watcher delivered.
type known struct {
	inst   *api.Instance
	modRev int64
}

// allWatcher is the state of one WatchAllInstances goroutine.
type allWatcher struct {
	s  *Store
	ch chan<- InstanceEvent
	// known mirrors what the consumer has been told, keyed by etcd key, so
	// that a resynchronisation can send just the difference.
	known map[string]known
}

// errStop ends the watch: ctx is done or the store is closed.
var errStop = errors.New("watch stopped")

func (w *allWatcher) run(ctx context.Context, fromRevision int64) {
	rev, err := w.start(ctx, fromRevision)
	for err == nil {
		var compacted bool
		rev, compacted = w.watch(ctx, rev)
		if ctx.Err() != nil || w.s.client.Ctx().Err() != nil {
			return
		}
		if compacted {
			rev, err = w.resync(ctx)
			continue
		}
		err = w.s.pause(ctx)
	}
}

// start loads the state the consumer has at fromRevision and returns the
// revision to watch after.
func (w *allWatcher) start(ctx context.Context, fromRevision int64) (int64, error) {
	if fromRevision <= 0 {
		return w.resync(ctx)
	}
	for {
		resp, err := w.s.client.Get(ctx, instancesPrefix, clientv3.WithPrefix(), clientv3.WithRev(fromRevision))
		if errors.Is(err, rpctypes.ErrCompacted) {
			w.s.logger.Warn("watch start revision is compacted; deletions since then are lost", "revision", fromRevision)
			return w.resync(ctx)
		}
		if err == nil {
			for _, kv := range resp.Kvs {
				if inst, err := decodeInstance(kv); err == nil {
					w.known[string(kv.Key)] = known{inst: inst, modRev: kv.ModRevision}
				}
			}
			return fromRevision, nil
		}
		w.s.logger.Warn("watch: cannot load instances; retrying", "error", err)
		if err := w.s.pause(ctx); err != nil {
			return 0, errStop
		}
	}
}

// resync lists all instances, sends the difference to what the consumer
// knows and returns the revision of the listing.
func (w *allWatcher) resync(ctx context.Context) (int64, error) {
	for {
		resp, err := w.s.client.Get(ctx, instancesPrefix, clientv3.WithPrefix())
		if err != nil {
			w.s.logger.Warn("watch: cannot list instances; retrying", "error", err)
			if err := w.s.pause(ctx); err != nil {
				return 0, errStop
			}
			continue
		}
		rev := resp.Header.Revision
		seen := make(map[string]bool, len(resp.Kvs))
		for _, kv := range resp.Kvs {
			key := string(kv.Key)
			seen[key] = true
			if k, ok := w.known[key]; ok && k.modRev == kv.ModRevision {
				continue
			}
			if !w.put(ctx, kv, rev) {
				return 0, errStop
			}
		}
		for key := range w.known {
			if !seen[key] && !w.deleted(ctx, key, rev) {
				return 0, errStop
			}
		}
		return rev, nil
	}
}

// watch delivers changes after rev until the watch breaks. It returns the
// last revision delivered and whether the watch broke on compaction.
func (w *allWatcher) watch(ctx context.Context, rev int64) (int64, bool) {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	wch := w.s.client.Watch(wctx, instancesPrefix,
		clientv3.WithPrefix(), clientv3.WithRev(rev+1), clientv3.WithPrevKV(), clientv3.WithProgressNotify())
	for wr := range wch {
		if wr.CompactRevision != 0 {
			w.s.logger.Info("watch: revision compacted; resynchronising", "revision", rev, "compacted", wr.CompactRevision)
			return rev, true
		}
		if err := wr.Err(); err != nil {
			w.s.logger.Info("watch interrupted; resuming", "revision", rev, "error", err)
			return rev, false
		}
		if wr.IsProgressNotify() {
			rev = max(rev, wr.Header.Revision)
			continue
		}
		for _, ev := range wr.Events {
			ok := true
			if ev.Type == clientv3.EventTypeDelete {
				key := string(ev.Kv.Key)
				if _, seen := w.known[key]; !seen && ev.PrevKv != nil {
					if inst, err := decodeInstance(ev.PrevKv); err == nil {
						w.known[key] = known{inst: inst, modRev: ev.PrevKv.ModRevision}
					}
				}
				ok = w.deleted(ctx, key, ev.Kv.ModRevision)
			} else {
				ok = w.put(ctx, ev.Kv, ev.Kv.ModRevision)
			}
			if !ok {
				return rev, false
			}
			rev = ev.Kv.ModRevision
		}
	}
	return rev, false
}

func (w *allWatcher) put(ctx context.Context, kv *mvccpb.KeyValue, rev int64) bool {
	key := string(kv.Key)
	t, name, ok := parseInstanceKey(key)
	if !ok {
		return true
	}
	inst, err := decodeInstance(kv)
	if err != nil {
		// A record kanga cannot read is skipped, not fatal: the watch
		// serves every other instance.
		w.s.logger.Error("watch: skipping undecodable instance", "key", key, "error", err)
		return true
	}
	w.known[key] = known{inst: inst, modRev: kv.ModRevision}
	return w.send(ctx, InstanceEvent{Instance: inst, Tenant: t, Name: name, Revision: rev, ModRevision: kv.ModRevision})
}

func (w *allWatcher) deleted(ctx context.Context, key string, rev int64) bool {
	t, name, ok := parseInstanceKey(key)
	if !ok {
		return true
	}
	last := w.known[key].inst
	delete(w.known, key)
	return w.send(ctx, InstanceEvent{Instance: last, Deleted: true, Tenant: t, Name: name, Revision: rev})
}

func (w *allWatcher) send(ctx context.Context, ev InstanceEvent) bool {
	select {
	case w.ch <- ev:
		return true
	case <-ctx.Done():
		return false
	case <-w.s.client.Ctx().Done():
		return false
	}
}
