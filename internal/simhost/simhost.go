// Package simhost is a simulated host for tests and benchmarks: a fake
// host, named as such, that registers with its capacity, runtime classes
// and images, keeps its lease, and acknowledges what the control plane
// places on it as an agent would (Creating, then Running) without running
// anything; an instance whose deletion was requested is removed. It
// speaks to the store directly (OnStore), for benchmarks of the control
// plane alone, or over the agents' link, as `kanga agent` and `kanga up`'s
// own agent do (OnLink). APIHost stands
// in for the host behind the API.
package simhost

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
	"github.com/kanga-run/kanga/internal/hostcontract"
	"github.com/kanga-run/kanga/internal/hostlink/agentside"
	"github.com/kanga-run/kanga/internal/model"
	"github.com/kanga-run/kanga/internal/store"
	"github.com/kanga-run/kanga/internal/tenant"
)

// Config describes a simulated host.
type Config struct {
	Name string
	// CPUs, Memory (bytes) and Pods are the capacity it registers.
	CPUs   int
	Memory int64
	Pods   int
	// RuntimeClasses it offers (default: the default class).
	RuntimeClasses []string
	Labels         map[string]string
	Images         []api.HostImage
	// SkipCreating reports an instance Running in one write, without the
	// Creating the agent writes first (kanga bench schedule measures so).
	SkipCreating bool
	// Observe, if set, sees every instance event the host receives, in
	// order, before the host acts on it: for tests that follow what is
	// placed on the host.
	Observe func(hostcontract.InstanceEvent)
}

// Record is the host's registration.
func (c Config) Record() api.Host {
	classes := c.RuntimeClasses
	if len(classes) == 0 {
		classes = []string{model.DefaultRuntimeClass}
	}
	return api.Host{Name: c.Name, Labels: c.Labels, Images: c.Images, RuntimeClasses: classes,
		Capacity: api.HostCapacity{CPUs: c.CPUs, MemoryBytes: c.Memory, Pods: c.Pods}}
}

// Instances is what the host reads and writes instances through: the
// store, or an agent's link to it (both are agent.Store).
type Instances interface {
	ListAllInstances(ctx context.Context) ([]api.Instance, int64, error)
	WatchAllInstances(ctx context.Context, fromRevision int64) <-chan hostcontract.InstanceEvent
	UpdateInstance(ctx context.Context, name string, fn func(*api.Instance) error) (*api.Instance, error)
	DeleteInstance(ctx context.Context, name string) error
}

// Host is a running simulated host.
type Host struct {
	cfg     Config
	inst    Instances
	running atomic.Int64
	done    chan struct{}

	mu sync.Mutex
	// acting holds the UIDs with an acknowledgement or a removal under
	// way, so that a repeated event does not start a second one.
	acting map[string]bool
	wg     sync.WaitGroup
}

// retryEvery is the pause before a write that failed is tried again
// (etcd without a leader, a control-plane replica gone).
const retryEvery = 100 * time.Millisecond

// OnStore registers the host in st, holds its lease of ttl there and acts
// on what is placed on it, until ctx ends (Done then closes).
func OnStore(ctx context.Context, st *store.Store, c Config, ttl time.Duration) (*Host, error) {
	held, err := st.HoldHost(ctx, c.Record(), ttl, store.HoldOptions{Backoff: retryEvery})
	if err != nil {
		return nil, err
	}
	h := start(ctx, c, st.ForHost(c.Name))
	h.wg.Add(1)
	go func() { defer h.wg.Done(); <-held }()
	return h, nil
}

// OnLink runs the host over an agent's link: the link registers it and
// holds its lease (agentside.Link.Run), and the host acts on what the
// link's stream shows placed on it, until ctx ends.
func OnLink(ctx context.Context, l *agentside.Link, c Config) *Host {
	h := start(ctx, c, l)
	rec := c.Record()
	h.wg.Add(1)
	go func() { defer h.wg.Done(); l.Run(ctx, func() api.Host { return rec }) }()
	return h
}

func start(ctx context.Context, c Config, inst Instances) *Host {
	h := &Host{cfg: c, inst: inst, done: make(chan struct{}), acting: map[string]bool{}}
	h.wg.Add(1)
	go func() { defer h.wg.Done(); h.run(ctx) }()
	go func() { h.wg.Wait(); close(h.done) }()
	return h
}

// Name is the host's name.
func (h *Host) Name() string { return h.cfg.Name }

// Running counts the instances the host has reported Running.
func (h *Host) Running() int64 { return h.running.Load() }

// Done is closed once the host has stopped, after its ctx ended.
func (h *Host) Done() <-chan struct{} { return h.done }

func (h *Host) run(ctx context.Context) {
	var (
		insts []api.Instance
		rev   int64
		err   error
	)
	for {
		if insts, rev, err = h.inst.ListAllInstances(ctx); err == nil {
			break
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(retryEvery):
		}
	}
	for i := range insts {
		h.handle(ctx, hostcontract.InstanceEvent{Instance: &insts[i], Tenant: insts[i].Tenant, Name: insts[i].Name})
	}
	for ev := range h.inst.WatchAllInstances(ctx, rev) {
		h.handle(ctx, ev)
	}
}

func (h *Host) handle(ctx context.Context, ev hostcontract.InstanceEvent) {
	if h.cfg.Observe != nil {
		h.cfg.Observe(ev)
	}
	in := ev.Instance
	if ev.Deleted || in == nil || in.Status.Host != h.cfg.Name {
		return
	}
	var act func(context.Context, *api.Instance) error
	key := in.UID
	switch {
	case in.DeletionRequested:
		act, key = h.remove, key+"/remove"
	case in.Status.Phase == api.PhasePending:
		act = h.acknowledge
	default:
		return
	}
	h.mu.Lock()
	if h.acting[key] {
		h.mu.Unlock()
		return
	}
	h.acting[key] = true
	h.mu.Unlock()
	// Each instance on its own, as the agent's runners go: a slow write
	// for one does not hold up the next.
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		defer func() {
			h.mu.Lock()
			delete(h.acting, key)
			h.mu.Unlock()
		}()
		for ctx.Err() == nil {
			err := act(tenant.WithName(ctx, in.Tenant), in)
			if err == nil || errors.Is(err, errMoved) || errors.Is(err, errdefs.ErrNotFound) || errors.Is(err, errdefs.ErrConflict) {
				return
			}
			select {
			case <-ctx.Done():
			case <-time.After(retryEvery):
			}
		}
	}()
}

// errMoved: the instance is no longer this host's to act on (re-created,
// placed elsewhere, or past the phase the action was for).
var errMoved = errors.New("simhost: the instance moved on")

// acknowledge writes Creating, then Running, as the agent's runner does
// around a start (it waits for the Creating write before it writes
// Running; with nothing to start, they follow each other here).
func (h *Host) acknowledge(ctx context.Context, in *api.Instance) error {
	phases := []api.Phase{api.PhaseCreating, api.PhaseRunning}
	if h.cfg.SkipCreating {
		phases = phases[1:]
	}
	for _, phase := range phases {
		_, err := h.inst.UpdateInstance(ctx, in.Name, func(cur *api.Instance) error {
			if cur.UID != in.UID || cur.Status.Host != h.cfg.Name || cur.DeletionRequested {
				return errMoved
			}
			switch cur.Status.Phase {
			case api.PhasePending, api.PhaseCreating:
			default:
				return errMoved
			}
			cur.Status.Phase = phase
			if phase == api.PhaseRunning {
				now := time.Now().UTC()
				cur.Status.StartedAt = &now
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	h.running.Add(1)
	return nil
}

// remove deletes an instance whose deletion was requested, as the agent
// does once it has stopped and cleaned up.
func (h *Host) remove(ctx context.Context, in *api.Instance) error {
	return h.inst.DeleteInstance(ctx, in.Name)
}
