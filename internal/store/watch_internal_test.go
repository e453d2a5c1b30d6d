package store

import (
	"context"
	"fmt"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/internal/tenant"
)

func openInternal(t *testing.T) *Store {
	t.Helper()
	s, err := Open(context.Background(), Config{DataDir: t.TempDir()})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestWatchResync checks the repair after a compacted watch: the watcher
// lists again and sends exactly the difference to what it had delivered.
func TestWatchResync(t *testing.T) {
	s := openInternal(t)
	ctx := tenant.WithName(t.Context(), "t")
	for _, name := range []string{"same", "changed"} {
		if err := s.CreateInstance(ctx, &api.Instance{Name: name, Tenant: "t"}); err != nil {
			t.Fatal(err)
		}
	}
	resp, err := s.client.Get(ctx, instancesPrefix, clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan InstanceEvent, 10)
	w := &allWatcher{s: s, ch: ch, known: make(map[string]known)}
	for _, kv := range resp.Kvs {
		inst, _ := decodeInstance(kv)
		w.known[string(kv.Key)] = known{inst: inst, modRev: kv.ModRevision}
	}
	w.known[instanceKey("t", "gone")] = known{inst: &api.Instance{Name: "gone", Tenant: "t", UID: "last"}, modRev: 1}

	if _, err := s.UpdateInstance(ctx, "changed", func(in *api.Instance) error {
		in.Status.Phase = api.PhaseRunning
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateInstance(ctx, &api.Instance{Name: "new", Tenant: "t"}); err != nil {
		t.Fatal(err)
	}

	// Compact everything, so that a watch from the old revision fails the
	// way a long-disconnected watcher's would.
	cur, err := s.client.Get(ctx, "nothing")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.client.Compact(ctx, cur.Header.Revision); err != nil {
		t.Fatal(err)
	}
	if _, compacted := w.watch(ctx, resp.Header.Revision); !compacted {
		t.Fatal("watch from a compacted revision did not report compaction")
	}

	rev, err := w.resync(ctx)
	if err != nil || rev < cur.Header.Revision {
		t.Fatalf("resync = %d, %v; want revision >= %d", rev, err, cur.Header.Revision)
	}
	close(ch)
	var got []string
	for ev := range ch {
		s := fmt.Sprintf("%s/%s deleted=%v", ev.Tenant, ev.Name, ev.Deleted)
		if ev.Instance != nil {
			s += " phase=" + string(ev.Instance.Status.Phase) + " uid=" + ev.Instance.UID
		}
		got = append(got, s)
	}
	want := []string{
		"t/changed deleted=false phase=Running uid=",
		"t/new deleted=false phase= uid=",
		"t/gone deleted=true phase= uid=last",
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("resync events:\n got %q\nwant %q", got, want)
	}
	if len(w.known) != 3 {
		t.Fatalf("known after resync has %d entries, want 3", len(w.known))
	}
}

// TestWatchAllInstancesAfterCompaction starts a watch from a revision
// that is gone: the watcher still delivers the current state.
func TestWatchAllInstancesAfterCompaction(t *testing.T) {
	s := openInternal(t)
	ctx := tenant.WithName(t.Context(), "t")
	_, rev, err := s.ListAllInstances(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.CreateInstance(ctx, &api.Instance{Name: "web", Tenant: "t"}); err != nil {
		t.Fatal(err)
	}
	_, cur, err := s.ListAllInstances(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.client.Compact(ctx, cur); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ev := <-s.WatchAllInstances(wctx, rev)
	if ev.Deleted || ev.Tenant != "t" || ev.Name != "web" || ev.Instance == nil {
		t.Fatalf("first event = %+v, want put t/web", ev)
	}
}
