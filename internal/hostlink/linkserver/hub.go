package linkserver

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/internal/store"
)

// hub is one watch of all instances per server, fanned out to the hosts'
// streams by host. Without it every connected agent would hold its own
// etcd watch and decode every instance event of the pool: O(hosts x
// events). Streams resume from any revision the ring still covers.
type hub struct {
	st  Store
	log *slog.Logger

	ready chan struct{} // closed once the first list is loaded

	mu     sync.Mutex
	rev    int64                    // last revision applied
	base   int64                    // the ring covers every event after base
	byKey  map[string]*api.Instance // the current version, for routing by old host
	subs   map[string]map[*sub]struct{}
	ring   []hubEvent
	closed bool
}

type hubEvent struct {
	ev               store.InstanceEvent
	oldHost, newHost string
}

// sub is one host's stream. Its channel is closed when the hub drops it
// (it fell behind, or the hub stopped); the agent then reconnects.
type sub struct {
	host string
	from int64 // only events after this revision
	ch   chan store.InstanceEvent
}

// ringSize bounds the events kept for streams that resume after a
// reconnect; older resumes fall back to a watch of their own.
const ringSize = 100_000

// subBuffer is how far a stream may fall behind before it is dropped.
const subBuffer = 4096

var errTooOld = errors.New("revision older than the hub's history")

func newHub(st Store, log *slog.Logger) *hub {
	return &hub{st: st, log: log, ready: make(chan struct{}), byKey: map[string]*api.Instance{},
		subs: map[string]map[*sub]struct{}{}}
}

func (h *hub) run(ctx context.Context) {
	var (
		insts []api.Instance
		rev   int64
		err   error
	)
	for {
		insts, rev, err = h.st.ListAllInstances(ctx)
		if err == nil {
			break
		}
		h.log.Warn("hostlink hub: listing instances failed; retrying", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
	h.mu.Lock()
	for i := range insts {
		h.index(&insts[i])
	}
	h.rev, h.base = rev, rev
	h.mu.Unlock()
	close(h.ready)
	for ev := range h.st.WatchAllInstances(ctx, rev) {
		h.apply(ev)
	}
	h.mu.Lock()
	h.closed = true
	for _, ss := range h.subs {
		for s := range ss {
			close(s.ch)
		}
	}
	h.subs = map[string]map[*sub]struct{}{}
	h.mu.Unlock()
}

func instKey(t, n string) string { return t + "/" + n }

func (h *hub) index(in *api.Instance) { h.byKey[instKey(in.Tenant, in.Name)] = in }

func (h *hub) apply(ev store.InstanceEvent) {
	h.mu.Lock()
	defer h.mu.Unlock()
	k := instKey(ev.Tenant, ev.Name)
	var oldHost, newHost string
	if old := h.byKey[k]; old != nil {
		oldHost = old.Status.Host
		if ev.Deleted && ev.Instance == nil {
			ev.Instance = old
		}
	}
	delete(h.byKey, k)
	if !ev.Deleted && ev.Instance != nil {
		newHost = ev.Instance.Status.Host
		h.index(ev.Instance)
	}
	h.rev = max(h.rev, ev.Revision)
	h.ring = append(h.ring, hubEvent{ev: ev, oldHost: oldHost, newHost: newHost})
	if len(h.ring) > ringSize {
		drop := len(h.ring) - ringSize/2
		h.base = h.ring[drop-1].ev.Revision
		h.ring = append([]hubEvent(nil), h.ring[drop:]...)
	}
	h.deliver(newHost, ev)
	if oldHost != newHost {
		h.deliver(oldHost, ev)
	}
}

func (h *hub) deliver(host string, ev store.InstanceEvent) {
	if host == "" {
		return
	}
	for s := range h.subs[host] {
		if ev.Revision != 0 && ev.Revision <= s.from {
			continue
		}
		select {
		case s.ch <- ev:
		default:
			h.log.Warn("hostlink hub: a host's stream fell behind; dropping it (the agent resumes)", "host", host)
			delete(h.subs[host], s)
			close(s.ch)
		}
	}
}

// subscribe opens host's stream after revision from: the events of the
// ring after it that concern host first, then live ones.
func (h *hub) subscribe(ctx context.Context, host string, from int64) (*sub, error) {
	select {
	case <-h.ready:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed || from < h.base {
		return nil, errTooOld
	}
	var replay []store.InstanceEvent
	for _, he := range h.ring {
		if he.ev.Revision > from && (he.newHost == host || he.oldHost == host) {
			replay = append(replay, he.ev)
		}
	}
	s := &sub{host: host, from: from, ch: make(chan store.InstanceEvent, subBuffer+len(replay))}
	for _, ev := range replay {
		s.ch <- ev
	}
	if h.subs[host] == nil {
		h.subs[host] = map[*sub]struct{}{}
	}
	h.subs[host][s] = struct{}{}
	return s, nil
}

func (h *hub) unsubscribe(s *sub) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.subs[s.host][s]; ok {
		delete(h.subs[s.host], s)
		if len(h.subs[s.host]) == 0 {
			delete(h.subs, s.host)
		}
	}
}
