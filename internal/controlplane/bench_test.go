package controlplane_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/internal/controlplane"
	"github.com/kanga-run/kanga/internal/store"
	"github.com/kanga-run/kanga/internal/tenant"
)

// BenchmarkBacklog measures the scheduler loop end to end on an embedded
// etcd: a backlog of pending instances is waiting when a replica becomes
// leader, and the clock runs until every one is placed, that is listed,
// scheduled and committed with one fenced transaction each. Hosts are
// simulated (records with leases; nothing runs).
func BenchmarkBacklog(b *testing.B) {
	for _, bc := range []struct{ hosts, instances int }{{100, 1000}, {1000, 1000}, {10000, 1000}} {
		b.Run(fmt.Sprintf("hosts=%d/instances=%d", bc.hosts, bc.instances), func(b *testing.B) {
			st, err := store.Open(b.Context(), store.Config{DataDir: b.TempDir()})
			if err != nil {
				b.Fatal(err)
			}
			defer st.Close()
			ctx, cancel := context.WithCancel(context.Background())
			var wg sync.WaitGroup
			defer func() { cancel(); wg.Wait() }()
			// Hosts register 32 at a time; each then keeps its lease.
			sem := make(chan struct{}, 32)
			var reg sync.WaitGroup
			for i := range bc.hosts {
				name := fmt.Sprintf("host-%05d", i)
				sem <- struct{}{}
				reg.Add(1)
				go func() {
					defer func() { <-sem; reg.Done() }()
					held, err := st.HoldHost(ctx, api.Host{Name: name, RuntimeClasses: []string{"runc"},
						Labels:   map[string]string{"zone": fmt.Sprint("z", i%3)},
						Capacity: api.HostCapacity{CPUs: 64, MemoryBytes: 256 << 30, Pods: 1000}}, 60*time.Second, store.HoldOptions{})
					if err != nil {
						b.Error(err)
						return
					}
					wg.Add(1)
					go func() { defer wg.Done(); <-held }()
				}()
			}
			reg.Wait()
			b.ResetTimer()
			round := 0
			for b.Loop() {
				b.StopTimer()
				round++
				tctx := tenant.WithName(ctx, fmt.Sprint("bench-", round))
				createAll(b, st, tctx, round, bc.instances)
				placed := watchPlaced(ctx, st, fmt.Sprint("bench-", round), bc.instances)
				b.StartTimer()
				cp := controlplane.New(controlplane.Config{Store: st, ID: "bench", Logger: quiet(), Policy: controlplane.DefaultPolicy})
				cctx, stop := context.WithCancel(ctx)
				done := make(chan struct{})
				go func() { defer close(done); _ = cp.Run(cctx) }()
				<-placed
				b.StopTimer()
				stop()
				<-done
				b.StartTimer()
			}
			b.ReportMetric(float64(bc.instances)*float64(b.N)/b.Elapsed().Seconds(), "placements/s")
		})
	}
}

// createAll stores n Pending instances of one tenant, 16 at a time.
func createAll(b *testing.B, st *store.Store, ctx context.Context, round, n int) {
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for i := range n {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			t, _ := tenant.Name(ctx)
			inst := &api.Instance{Name: fmt.Sprintf("i%05d", i), Tenant: t, UID: fmt.Sprint(round, "-", i), CreatedAt: time.Now(),
				Spec: api.InstanceSpec{Containers: []api.ContainerSpec{{Name: "main", Image: "busybox"}},
					Resources: api.Resources{CPU: "250m", Memory: "256Mi"}, Runtime: "runc"},
				Status: api.InstanceStatus{Phase: api.PhasePending}}
			if err := st.CreateInstance(ctx, inst); err != nil {
				b.Error(err)
			}
		}()
	}
	wg.Wait()
}

// watchPlaced returns a channel closed once n instances of tenant have a
// host.
func watchPlaced(ctx context.Context, st *store.Store, tenantName string, n int) <-chan struct{} {
	ch := make(chan struct{})
	_, rev, _ := st.ListAllInstances(ctx)
	wctx, cancel := context.WithCancel(ctx)
	events := st.WatchAllInstances(wctx, rev)
	go func() {
		defer cancel()
		seen := map[string]bool{}
		for ev := range events {
			if ev.Tenant == tenantName && !ev.Deleted && ev.Instance.Status.Host != "" {
				seen[ev.Name] = true
				if len(seen) == n {
					close(ch)
					return
				}
			}
		}
	}()
	return ch
}
