package agent

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
	"github.com/kanga-run/kanga/internal/hostcontract"
)

// memStore is a fake Store holding one instance in memory; it counts the
// writes that reach it, as etcd would see them.
type memStore struct {
	mu     sync.Mutex
	inst   api.Instance
	writes int
}

func (m *memStore) ListAllInstances(context.Context) ([]api.Instance, int64, error) {
	return nil, 0, nil
}

func (m *memStore) WatchAllInstances(context.Context, int64) <-chan hostcontract.InstanceEvent {
	return nil
}

func (m *memStore) DeleteInstance(context.Context, string) error            { return nil }
func (m *memStore) TenantQuota(context.Context, string) (*api.Quota, error) { return nil, nil }

func (m *memStore) UpdateInstance(_ context.Context, name string, fn func(*api.Instance) error) (*api.Instance, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if name != m.inst.Name {
		return nil, errdefs.ErrNotFound
	}
	// A deep copy, as a store decodes a fresh one per update.
	var cp api.Instance
	b, _ := json.Marshal(m.inst)
	_ = json.Unmarshal(b, &cp)
	if err := fn(&cp); err != nil {
		return nil, err
	}
	m.inst = cp
	m.writes++
	return &cp, nil
}

func (m *memStore) state() (api.Instance, int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.inst, m.writes
}

// TestPublishSkipsUnchanged: publishing the same view again writes
// nothing, and the runner's own write does not wake it (both together
// made every running instance rewrite its record in a loop).
func TestPublishSkipsUnchanged(t *testing.T) {
	inst := api.Instance{Name: "web", Tenant: "t1", UID: "u1", Spec: api.InstanceSpec{RestartPolicy: api.RestartAlways}}
	inst.Status.Phase = api.PhasePending
	st := &memStore{inst: inst}
	a := New(Config{Store: st})
	r := newRunner(a, &inst)
	now := time.Now().UTC()
	r.ctrs = []*ctr{{spec: api.ContainerSpec{Name: "main"}, status: api.ContainerStatus{Name: "main", State: api.ContainerRunning, StartedAt: &now}}}
	ctx := context.Background()

	r.publishAsync(ctx, api.PhaseCreating)
	r.publish(ctx, "")
	got, writes := st.state()
	if writes != 2 || got.Status.Phase != api.PhaseRunning {
		t.Fatalf("after Creating and Running: %d writes, phase %s; want 2 writes, Running", writes, got.Status.Phase)
	}
	select {
	case <-r.notify:
		t.Error("the runner's own write notified it")
	default:
	}
	for i := 0; i < 3; i++ {
		r.publish(ctx, "")
	}
	if _, writes := st.state(); writes != 2 {
		t.Errorf("publishing an unchanged view wrote %d more times", writes-2)
	}
	r.event("Normal", "Probe", "something happened")
	r.publish(ctx, "")
	got, writes = st.state()
	if writes != 3 || len(got.Status.Events) == 0 || got.Status.Events[len(got.Status.Events)-1].Reason != "Probe" {
		t.Errorf("a new event: %d writes, events %+v; want 3 writes ending with Probe", writes, got.Status.Events)
	}
}

// hookStore is a memStore that runs a hook after an update is stored and
// before its answer returns: what another writer does meanwhile.
type hookStore struct {
	*memStore
	after func()
}

func (h *hookStore) UpdateInstance(ctx context.Context, name string, fn func(*api.Instance) error) (*api.Instance, error) {
	out, err := h.memStore.UpdateInstance(ctx, name, fn)
	if h.after != nil {
		h.after()
		h.after = nil
	}
	return out, err
}

// TestPublishKeepsDeletionFromWatch: a deletion the watch delivers while
// the runner's own status write is in flight survives that write's
// answer, and the loop is told to look again. Without it the runner sat
// on a Removing instance until the next event of it.
func TestPublishKeepsDeletionFromWatch(t *testing.T) {
	inst := api.Instance{Name: "web", Tenant: "t1", UID: "u1", Spec: api.InstanceSpec{RestartPolicy: api.RestartAlways}}
	inst.Status.Phase = api.PhaseCreating
	st := &hookStore{memStore: &memStore{inst: inst}}
	a := New(Config{Store: st})
	r := newRunner(a, &inst)
	now := time.Now().UTC()
	r.ctrs = []*ctr{{spec: api.ContainerSpec{Name: "main"}, status: api.ContainerStatus{Name: "main", State: api.ContainerRunning, StartedAt: &now}}}
	grace := 3
	st.after = func() {
		// The control plane deletes the instance; the watch delivers it
		// before the write's answer is back.
		deleted, _ := st.state()
		deleted.DeletionRequested, deleted.StopRequested, deleted.StopGraceSeconds = true, true, &grace
		r.update(&deleted, false)
		<-r.notify // the loop takes the event's notify, before the write ends
	}
	r.publish(context.Background(), "")
	latest, gone := r.snapshot()
	if gone || !latest.DeletionRequested || !latest.StopRequested || latest.StopGraceSeconds == nil || *latest.StopGraceSeconds != 3 {
		t.Errorf("after the write: deletion %v, stop %v, grace %v; want the deletion the watch delivered kept", latest.DeletionRequested, latest.StopRequested, latest.StopGraceSeconds)
	}
	if latest.Status.Phase != api.PhaseRunning {
		t.Errorf("phase %s, want the written Running", latest.Status.Phase)
	}
	select {
	case <-r.notify:
	default:
		t.Error("the loop was not told to look again")
	}
}
