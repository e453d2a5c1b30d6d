package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
)

// Host records live under hostsPrefix; a host is Ready exactly while its
// key under hostLeasesPrefix exists. That key is bound to an etcd lease
// the host's connection keeps alive, so etcd itself expires a silent host:
// no clock of any replica decides it, and a new leader sees the same
// answer as the old one.
const (
	hostsPrefix      = "/kanga/hosts/"
	hostLeasesPrefix = "/kanga/hostleases/"
	// hostWatchPrefix covers both prefixes above in one watch.
	hostWatchPrefix = "/kanga/host"
	// hostsEpochKey is rewritten, in the same transaction, by every write
	// of a host record or lease key, so that HostsChangedSince reads one
	// key rather than ranging over every host (etcd filters a range by
	// revision only after reading all of it).
	hostsEpochKey = "/kanga/registry/epoch"
)

// epochPut is the companion put of hostsEpochKey in a host write.
func epochPut() clientv3.Op { return clientv3.OpPut(hostsEpochKey, "") }

// ReasonNoLease is the reason of a NotReady host.
const ReasonNoLease = "LeaseExpired"

func hostKey(name string) string      { return hostsPrefix + name }
func hostLeaseKey(name string) string { return hostLeasesPrefix + name }

func checkHostName(name string) error {
	if name == "" || strings.Contains(name, "/") {
		return fmt.Errorf("host name %q is invalid: it must be non-empty and contain no '/': %w", name, errdefs.ErrInvalidArgument)
	}
	return nil
}

func hostNotFound(name string) error {
	return fmt.Errorf("host %q not found: check the name with kanga host ls: %w", name, errdefs.ErrNotFound)
}

func decodeHost(kv *mvccpb.KeyValue) (*api.Host, error) {
	var h api.Host
	if err := json.Unmarshal(kv.Value, &h); err != nil {
		return nil, fmt.Errorf("store: decode %s: %w", kv.Key, err)
	}
	return &h, nil
}

// setPhase derives the host's phase from whether it holds a lease.
func setPhase(h *api.Host, leased bool) {
	if leased {
		h.Status.Phase, h.Status.Reason = api.HostReady, ""
	} else {
		h.Status.Phase, h.Status.Reason = api.HostNotReady, ReasonNoLease
	}
}

// RegisterHost creates or updates the host record. Cordoned is kept as
// stored: an operator's cordon survives the host reconnecting. The phase
// is not stored; it follows the host's lease (KeepHostAlive).
func (s *Store) RegisterHost(ctx context.Context, h *api.Host) error {
	if err := checkHostName(h.Name); err != nil {
		return err
	}
	if err := checkHostImages(h.Images); err != nil {
		return fmt.Errorf("host %q: %w", h.Name, err)
	}
	key := hostKey(h.Name)
	resp, err := s.client.Get(ctx, key)
	if err != nil {
		return s.etcdErr(ctx, "get host", err)
	}
	kvs := resp.Kvs
	for {
		rec := *h
		rec.Status.RegisteredAt = time.Now().UTC()
		rec.Status.Phase, rec.Status.Reason = "", ""
		var cmp clientv3.Cmp
		if len(kvs) == 0 {
			cmp = clientv3.Compare(clientv3.CreateRevision(key), "=", 0)
		} else {
			old, err := decodeHost(kvs[0])
			if err != nil {
				return err
			}
			rec.Cordoned = old.Cordoned
			rec.Status.LastHeartbeat = old.Status.LastHeartbeat
			cmp = clientv3.Compare(clientv3.ModRevision(key), "=", kvs[0].ModRevision)
		}
		val, err := json.Marshal(&rec)
		if err != nil {
			return fmt.Errorf("store: encode host %q: %w", h.Name, err)
		}
		tresp, err := s.client.Txn(ctx).If(cmp).
			Then(clientv3.OpPut(key, string(val)), epochPut()).
			Else(clientv3.OpGet(key)).Commit()
		if err != nil {
			return s.etcdErr(ctx, "register host", err)
		}
		if tresp.Succeeded {
			return nil
		}
		kvs = tresp.Responses[0].GetResponseRange().Kvs
	}
}

// KeepHostAlive binds the host's lease key to a fresh etcd lease of ttl
// and keeps that lease alive until ctx ends (it then returns ctx's error)
// or the lease is lost, for instance after etcd was unreachable for longer
// than ttl (it then returns an ErrUnavailable error and the caller may
// call it again). The host must be registered.
//
// Ending ctx does not revoke the lease: when a host's connection moves to
// another control-plane replica, the new KeepHostAlive takes the key over
// before the old lease runs out, so the host never flaps to NotReady.
//
// Everything here goes over the control connection (Store.ctl), so that
// the keep-alives never queue behind instance writes.
func (s *Store) KeepHostAlive(ctx context.Context, name string, ttl time.Duration) error {
	if err := checkHostName(name); err != nil {
		return err
	}
	secs := max(int64(math.Ceil(ttl.Seconds())), 1)
	lease, err := s.ctl.Grant(ctx, secs)
	if err != nil {
		return s.etcdErr(ctx, "grant host lease", err)
	}
	now := time.Now().UTC()
	val, err := json.Marshal(struct {
		Since time.Time `json:"since"`
	}{now})
	if err != nil {
		return err
	}
	// The lease key and the heartbeat time go in one transaction, so a
	// Ready host always shows when its lease began. The time is written
	// once per lease, not per keep-alive, so that thousands of hosts do
	// not turn into thousands of writes a second.
	key := hostKey(name)
	for {
		resp, err := s.ctl.Get(ctx, key)
		if err != nil {
			s.revoke(lease.ID)
			return s.etcdErr(ctx, "get host", err)
		}
		if len(resp.Kvs) == 0 {
			s.revoke(lease.ID)
			return fmt.Errorf("host %q is not registered: register it before keeping it alive: %w", name, errdefs.ErrFailedPrecondition)
		}
		h, err := decodeHost(resp.Kvs[0])
		if err != nil {
			s.revoke(lease.ID)
			return err
		}
		h.Status.LastHeartbeat = now
		rec, err := json.Marshal(h)
		if err != nil {
			s.revoke(lease.ID)
			return err
		}
		tresp, err := s.ctl.Txn(ctx).
			If(clientv3.Compare(clientv3.ModRevision(key), "=", resp.Kvs[0].ModRevision)).
			Then(clientv3.OpPut(hostLeaseKey(name), string(val), clientv3.WithLease(lease.ID)), clientv3.OpPut(key, string(rec)), epochPut()).
			Commit()
		if err != nil {
			s.revoke(lease.ID)
			return s.etcdErr(ctx, "take host lease", err)
		}
		if tresp.Succeeded {
			break
		}
	}

	ch, err := s.ctl.KeepAlive(ctx, lease.ID)
	if err != nil {
		return s.etcdErr(ctx, "keep host lease alive", err)
	}
	// A keep-alive answered late is the first sign of a starved etcd;
	// the lease is lost when none is answered for ttl. Each answer later
	// than half the TTL is logged with its gap, so that a loss is never a
	// surprise in the log.
	last := time.Now()
	for range ch {
		now := time.Now()
		if gap := now.Sub(last); gap > ttl/2 {
			s.logger.Warn("host lease keep-alive answered late", "host", name, "gap", gap.Round(time.Millisecond), "ttl", ttl)
		}
		last = now
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if s.ctl.Ctx().Err() != nil {
		return fmt.Errorf("store: keep host %q alive: the store is closed: %w", name, errdefs.ErrUnavailable)
	}
	return fmt.Errorf("store: the lease of host %q was lost (etcd unreachable for longer than %s?): %w", name, ttl, errdefs.ErrUnavailable)
}

func (s *Store) revoke(id clientv3.LeaseID) {
	ctx, cancel := context.WithTimeout(s.ctl.Ctx(), 5*time.Second)
	defer cancel()
	_, _ = s.ctl.Revoke(ctx, id)
}

// GetHost returns the named host with its phase.
func (s *Store) GetHost(ctx context.Context, name string) (*api.Host, error) {
	if err := checkHostName(name); err != nil {
		return nil, err
	}
	resp, err := s.client.Txn(ctx).Then(clientv3.OpGet(hostKey(name)), clientv3.OpGet(hostLeaseKey(name), clientv3.WithCountOnly())).Commit()
	if err != nil {
		return nil, s.etcdErr(ctx, "get host", err)
	}
	kvs := resp.Responses[0].GetResponseRange().Kvs
	if len(kvs) == 0 {
		return nil, hostNotFound(name)
	}
	h, err := decodeHost(kvs[0])
	if err != nil {
		return nil, err
	}
	setPhase(h, resp.Responses[1].GetResponseRange().Count > 0)
	return h, nil
}

// ListHosts returns every host by name, with its phase, as of one etcd
// revision, which it returns too.
func (s *Store) ListHosts(ctx context.Context) ([]api.Host, error) {
	hosts, _, err := s.listHosts(ctx)
	return hosts, err
}

func (s *Store) listHosts(ctx context.Context) ([]api.Host, int64, error) {
	resp, err := s.client.Txn(ctx).Then(
		clientv3.OpGet(hostsPrefix, clientv3.WithPrefix()),
		clientv3.OpGet(hostLeasesPrefix, clientv3.WithPrefix(), clientv3.WithKeysOnly()),
	).Commit()
	if err != nil {
		return nil, 0, s.etcdErr(ctx, "list hosts", err)
	}
	leased := map[string]bool{}
	for _, kv := range resp.Responses[1].GetResponseRange().Kvs {
		leased[strings.TrimPrefix(string(kv.Key), hostLeasesPrefix)] = true
	}
	kvs := resp.Responses[0].GetResponseRange().Kvs
	out := make([]api.Host, 0, len(kvs))
	for _, kv := range kvs {
		h, err := decodeHost(kv)
		if err != nil {
			s.logger.Error("skipping undecodable host", "key", string(kv.Key), "error", err)
			continue
		}
		setPhase(h, leased[h.Name])
		out = append(out, *h)
	}
	slices.SortFunc(out, func(a, b api.Host) int { return strings.Compare(a.Name, b.Name) })
	return out, resp.Header.Revision, nil
}

// UpdateHost applies fn to the current host record and stores the result
// unless somebody changed it in between, in which case fn runs again on
// the newer version. An error from fn aborts the update and is returned
// as is. fn may not rename the host; the phase it sets is ignored.
func (s *Store) UpdateHost(ctx context.Context, name string, fn func(*api.Host) error) (*api.Host, error) {
	if err := checkHostName(name); err != nil {
		return nil, err
	}
	key := hostKey(name)
	resp, err := s.client.Get(ctx, key)
	if err != nil {
		return nil, s.etcdErr(ctx, "get host", err)
	}
	kvs := resp.Kvs
	for {
		if len(kvs) == 0 {
			return nil, hostNotFound(name)
		}
		h, err := decodeHost(kvs[0])
		if err != nil {
			return nil, err
		}
		if err := fn(h); err != nil {
			return nil, err
		}
		if h.Name != name {
			return nil, fmt.Errorf("host %q: an update may not rename it (to %q): %w", name, h.Name, errdefs.ErrInvalidArgument)
		}
		h.Status.Phase, h.Status.Reason = "", ""
		val, err := json.Marshal(h)
		if err != nil {
			return nil, fmt.Errorf("store: encode host %q: %w", name, err)
		}
		tresp, err := s.client.Txn(ctx).
			If(clientv3.Compare(clientv3.ModRevision(key), "=", kvs[0].ModRevision)).
			Then(clientv3.OpPut(key, string(val)), clientv3.OpGet(hostLeaseKey(name), clientv3.WithCountOnly()), epochPut()).
			Else(clientv3.OpGet(key)).
			Commit()
		if err != nil {
			return nil, s.etcdErr(ctx, "update host", err)
		}
		if tresp.Succeeded {
			setPhase(h, tresp.Responses[1].GetResponseRange().Count > 0)
			return h, nil
		}
		kvs = tresp.Responses[0].GetResponseRange().Kvs
	}
}

// DeleteHost removes the host record and its lease key. Instances placed
// on the host are not touched: the failure detector treats them as on a
// NotReady host.
func (s *Store) DeleteHost(ctx context.Context, name string) error {
	if err := checkHostName(name); err != nil {
		return err
	}
	resp, err := s.client.Txn(ctx).Then(clientv3.OpDelete(hostKey(name)), clientv3.OpDelete(hostLeaseKey(name)), epochPut()).Commit()
	if err != nil {
		return s.etcdErr(ctx, "delete host", err)
	}
	if resp.Responses[0].GetResponseDeleteRange().Deleted == 0 {
		return hostNotFound(name)
	}
	return nil
}

// HostsSnapshot is the list of all hosts as of an etcd revision.
type HostsSnapshot struct {
	Hosts    []api.Host
	Revision int64
}

// WatchHosts sends the list of all hosts (as ListHosts) at once and again
// after every change to a host record or a host's lease. Lists that the
// consumer has not taken yet are replaced by newer ones, so a slow
// consumer always gets the latest state and never a backlog. The channel
// closes when ctx ends or the store is closed; the watch survives etcd
// failures by listing again.
func (s *Store) WatchHosts(ctx context.Context) <-chan []api.Host {
	out := make(chan []api.Host)
	go func() {
		defer close(out)
		for snap := range s.WatchHostSnapshots(ctx) {
			select {
			case out <- snap.Hosts:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out
}

// WatchHostSnapshots is WatchHosts with the revision of each list.
//
// It lists the hosts once and then follows one watch, folding its events
// into the hosts it holds decoded: a change costs the decoding of one
// record, not a listing of all of them (with thousands of hosts joining,
// listing again after every change kept a core busy for minutes). The
// lists it sends are built only as often as hostListInterval while
// changes keep coming, and a list the consumer has not taken is replaced
// by a newer one. The watch is listed again when it breaks.
func (s *Store) WatchHostSnapshots(ctx context.Context) <-chan HostsSnapshot {
	ch := make(chan HostsSnapshot)
	go func() {
		defer close(ch)
		for {
			reg, err := s.loadHostRegistry(ctx)
			if err != nil {
				s.logger.Warn("watch hosts: cannot list; retrying", "error", err)
				if s.pause(ctx) != nil {
					return
				}
				continue
			}
			compacted := s.followHosts(ctx, ch, reg)
			if ctx.Err() != nil || s.client.Ctx().Err() != nil {
				return
			}
			if !compacted && s.pause(ctx) != nil {
				return
			}
		}
	}()
	return ch
}

// hostListInterval bounds how often WatchHostSnapshots builds a list
// while host records keep changing: each list costs O(hosts).
const hostListInterval = 50 * time.Millisecond

// hostRegistry is the host records and leases as of rev, decoded once.
type hostRegistry struct {
	hosts  map[string]*api.Host
	names  []string // sorted
	leased map[string]bool
	rev    int64
}

func (s *Store) loadHostRegistry(ctx context.Context) (*hostRegistry, error) {
	hosts, rev, err := s.listHosts(ctx)
	if err != nil {
		return nil, err
	}
	r := &hostRegistry{hosts: make(map[string]*api.Host, len(hosts)), leased: map[string]bool{}, rev: rev}
	for i := range hosts {
		h := &hosts[i]
		if _, dup := r.hosts[h.Name]; !dup {
			r.names = append(r.names, h.Name)
		}
		r.hosts[h.Name] = h
		r.leased[h.Name] = h.Status.Phase == api.HostReady
	}
	return r, nil
}

// apply folds one watch event into r.
func (r *hostRegistry) apply(s *Store, ev *clientv3.Event) {
	key := string(ev.Kv.Key)
	switch {
	case strings.HasPrefix(key, hostLeasesPrefix):
		name := strings.TrimPrefix(key, hostLeasesPrefix)
		r.leased[name] = ev.Type != clientv3.EventTypeDelete
	case strings.HasPrefix(key, hostsPrefix):
		name := strings.TrimPrefix(key, hostsPrefix)
		i, found := slices.BinarySearch(r.names, name)
		if ev.Type == clientv3.EventTypeDelete {
			delete(r.hosts, name)
			if found {
				r.names = slices.Delete(r.names, i, i+1)
			}
			return
		}
		h, err := decodeHost(ev.Kv)
		if err != nil {
			s.logger.Error("skipping undecodable host", "key", key, "error", err)
			return
		}
		if h.Name != name {
			// The record names another host than its key: listHosts
			// would list it under its own name; keep to the key.
			h.Name = name
		}
		r.hosts[name] = h
		if !found {
			r.names = slices.Insert(r.names, i, name)
		}
	}
}

// snapshot lists the hosts in name order. The hosts' maps and slices are
// shared with r and with earlier lists: r replaces a record, it never
// changes one, and consumers only read them.
func (r *hostRegistry) snapshot() HostsSnapshot {
	out := make([]api.Host, 0, len(r.names))
	for _, name := range r.names {
		h := *r.hosts[name]
		setPhase(&h, r.leased[name])
		out = append(out, h)
	}
	return HostsSnapshot{Hosts: out, Revision: r.rev}
}

// followHosts sends reg's lists to ch as the watch after reg.rev changes
// it, until the watch breaks (it reports whether on compaction, which
// calls for listing again at once) or ctx ends.
func (s *Store) followHosts(ctx context.Context, ch chan<- HostsSnapshot, reg *hostRegistry) (compacted bool) {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	wch := s.client.Watch(wctx, hostWatchPrefix, clientv3.WithPrefix(), clientv3.WithRev(reg.rev+1))
	snap := reg.snapshot()
	var (
		send    chan<- HostsSnapshot = ch // set while snap is unsent
		changed bool                      // reg is newer than snap
		built   = time.Now()
		timer   *time.Timer
		due     <-chan time.Time
	)
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		select {
		case send <- snap:
			send = nil
		case <-due:
			due = nil
			snap, changed, built, send = reg.snapshot(), false, time.Now(), ch
		case wr, ok := <-wch:
			if !ok {
				return false
			}
			if wr.CompactRevision != 0 {
				return true
			}
			if wr.Err() != nil {
				return false
			}
			for i := range wr.Events {
				reg.apply(s, wr.Events[i])
				reg.rev = max(reg.rev, wr.Events[i].Kv.ModRevision)
			}
			if len(wr.Events) == 0 || changed {
				continue
			}
			changed = true
			wait := hostListInterval - time.Since(built)
			if wait <= 0 {
				wait = 0
			}
			if timer == nil {
				timer = time.NewTimer(wait)
			} else {
				timer.Reset(wait)
			}
			due = timer.C
		case <-ctx.Done():
			return false
		}
	}
}

// ListHostSnapshot is ListHosts with the revision of the list.
func (s *Store) ListHostSnapshot(ctx context.Context) (HostsSnapshot, error) {
	hosts, rev, err := s.listHosts(ctx)
	return HostsSnapshot{Hosts: hosts, Revision: rev}, err
}

// HostsChangedSince reports whether a host record or lease was written
// after rev. (A lease that expired is a deletion, which it does not see:
// it serves to order an operator's cordon before later placements, not
// to detect failures.) It reads one key, whatever the number of hosts.
func (s *Store) HostsChangedSince(ctx context.Context, rev int64) (bool, error) {
	resp, err := s.client.Get(ctx, hostsEpochKey, clientv3.WithKeysOnly())
	if err != nil {
		return false, s.etcdErr(ctx, "check hosts", err)
	}
	return len(resp.Kvs) > 0 && resp.Kvs[0].ModRevision > rev, nil
}

// SetHostCondition records the failure detector's condition of host (see
// api.HostStatus.Condition); an empty condition clears it. It writes only
// when something changes, so a leader may call it on every pass.
func (s *Store) SetHostCondition(ctx context.Context, name, cond, msg string) error {
	_, err := s.UpdateHost(ctx, name, func(h *api.Host) error {
		if h.Status.Condition == cond && h.Status.ConditionMessage == msg {
			return errUnchanged
		}
		h.Status.Condition, h.Status.ConditionMessage = cond, msg
		return nil
	})
	if errors.Is(err, errUnchanged) {
		return nil
	}
	return err
}

// errUnchanged aborts an update that would write what is stored.
var errUnchanged = errors.New("unchanged")
