package linkserver

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/internal/store"
)

// feedStore is a fake store whose instance watch the test feeds.
type feedStore struct {
	fakeStore
	events chan store.InstanceEvent
}

func (f *feedStore) ListAllInstances(context.Context) ([]api.Instance, int64, error) {
	return f.insts, 10, nil
}

func (f *feedStore) WatchAllInstances(context.Context, int64) <-chan store.InstanceEvent {
	return f.events
}

func put(name, host string, rev int64) store.InstanceEvent {
	return store.InstanceEvent{Tenant: "t", Name: name, Revision: rev,
		Instance: &api.Instance{Tenant: "t", Name: name, Status: api.InstanceStatus{Host: host}}}
}

// settle waits until the hub has applied revision rev.
func settle(t *testing.T, h *hub, rev int64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		h.mu.Lock()
		r := h.rev
		h.mu.Unlock()
		if r >= rev {
			return
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatalf("hub did not reach revision %d", rev)
}

func names(t *testing.T, s *sub, n int) []string {
	t.Helper()
	var out []string
	for range n {
		select {
		case ev := <-s.ch:
			out = append(out, ev.Name)
		case <-time.After(5 * time.Second):
			t.Fatalf("got %v, want %d events", out, n)
		}
	}
	select {
	case ev := <-s.ch:
		t.Fatalf("unexpected event %s after %v", ev.Name, out)
	default:
	}
	return out
}

func TestHubRoutesByHostAndResumes(t *testing.T) {
	st := &feedStore{events: make(chan store.InstanceEvent)}
	st.insts = []api.Instance{{Tenant: "t", Name: "a", Status: api.InstanceStatus{Host: "h1"}}}
	h := newHub(st, slog.Default())
	go h.run(t.Context())
	ctx := t.Context()

	s1, err := h.subscribe(ctx, "h1", 10)
	if err != nil {
		t.Fatal(err)
	}
	st.events <- put("a", "h2", 11) // a moves away from h1: both hear of it
	st.events <- put("b", "h2", 12) // h2's only
	st.events <- put("c", "h1", 13) // h1's only
	settle(t, h, 13)
	if got := names(t, s1, 2); got[0] != "a" || got[1] != "c" {
		t.Fatalf("h1 got %v, want [a c]", got)
	}
	// h2 resumes after revision 11: the ring replays b, not a.
	s2, err := h.subscribe(ctx, "h2", 11)
	if err != nil {
		t.Fatal(err)
	}
	if got := names(t, s2, 1); got[0] != "b" {
		t.Fatalf("h2 resumed with %v, want [b]", got)
	}
	// Before the hub's history: the caller falls back to its own watch.
	if _, err := h.subscribe(ctx, "h1", 5); !errors.Is(err, errTooOld) {
		t.Fatalf("subscribe before the history: %v, want errTooOld", err)
	}
	// A stream that stops reading is dropped (closed), not waited for.
	for i := range subBuffer + 1 {
		st.events <- put("c", "h1", int64(14+i))
	}
	settle(t, h, int64(14+subBuffer))
	closed := false
	for range subBuffer + 1 {
		if _, ok := <-s1.ch; !ok {
			closed = true
			break
		}
	}
	if !closed {
		t.Fatal("a stream that fell behind was not dropped")
	}
}
