package server

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
)

// EventStore lists the tenant's instances and follows their changes
// (store.Store.ListWatchInstances).
type EventStore interface {
	ListWatchInstances(ctx context.Context) ([]api.Instance, <-chan *api.Instance, error)
}

// eventsQuery is what GET /v1/events asks for.
type eventsQuery struct {
	since  time.Time
	typ    string
	follow bool
}

func (s *Server) parseEventsQuery(r *http.Request) (eventsQuery, error) {
	q := r.URL.Query()
	var eq eventsQuery
	if v := q.Get("since"); v != "" {
		t, err := parseSince(v, s.now())
		if err != nil {
			return eq, err
		}
		eq.since = t
	}
	switch v := q.Get("type"); v {
	case "", api.EventNormal, api.EventWarning:
		eq.typ = v
	default:
		return eq, fmt.Errorf("type %q: give %s or %s: %w", v, api.EventNormal, api.EventWarning, errdefs.ErrInvalidArgument)
	}
	if v := q.Get("follow"); v != "" {
		f, err := strconv.ParseBool(v)
		if err != nil {
			return eq, fmt.Errorf("follow %q: give true or false: %w", v, errdefs.ErrInvalidArgument)
		}
		eq.follow = f
	}
	return eq, nil
}

func (eq eventsQuery) admits(e api.Event) bool {
	return (eq.typ == "" || e.Type == eq.typ) && !e.Time.Before(eq.since)
}

// eventKey tells an event from the others of its instance: the status
// keeps a bounded list, so the new ones of a version are those the last
// version did not have.
type eventKey struct {
	t               time.Time
	reason, message string
}

// seenEvents remembers, by instance UID, the events already sent.
type seenEvents map[string]map[eventKey]bool

// fresh returns inst's events not sent yet, and remembers them all.
func (seen seenEvents) fresh(inst *api.Instance) []api.Event {
	prev := seen[inst.UID]
	now := make(map[eventKey]bool, len(inst.Status.Events))
	var out []api.Event
	for _, e := range inst.Status.Events {
		k := eventKey{e.Time, e.Reason, e.Message}
		now[k] = true
		if !prev[k] {
			out = append(out, e)
		}
	}
	seen[inst.UID] = now
	return out
}

// events streams the tenant's instance events as JSON lines
// (api.EventRecord), oldest first; with follow=true it goes on with those
// that happen until the client goes away.
func (s *Server) events(w http.ResponseWriter, r *http.Request) error {
	eq, err := s.parseEventsQuery(r)
	if err != nil {
		return err
	}
	es, ok := s.store.(EventStore)
	if !ok {
		return fmt.Errorf("this server's store keeps no events: %w", errdefs.ErrNotImplemented)
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	list, changes, err := es.ListWatchInstances(ctx)
	if err != nil {
		return err
	}
	seen := seenEvents{}
	var recs []api.EventRecord
	for i := range list {
		for _, e := range seen.fresh(&list[i]) {
			if eq.admits(e) {
				recs = append(recs, api.EventRecord{Instance: list[i].Name, UID: list[i].UID, Event: e})
			}
		}
	}
	slices.SortStableFunc(recs, func(a, b api.EventRecord) int { return a.Time.Compare(b.Time) })

	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	fw := newFlushWriter(w, r)
	enc := json.NewEncoder(fw)
	for _, rec := range recs {
		if err := enc.Encode(rec); err != nil {
			return nil // the client went away
		}
	}
	if !eq.follow {
		return nil
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case inst, ok := <-changes:
			if !ok {
				// The watch broke (etcd lost its leader): end the
				// stream, and the client follows again.
				return nil
			}
			for _, e := range seen.fresh(inst) {
				if !eq.admits(e) {
					continue
				}
				if err := enc.Encode(api.EventRecord{Instance: inst.Name, UID: inst.UID, Event: e}); err != nil {
					return nil
				}
			}
		}
	}
}
