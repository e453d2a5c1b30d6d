package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/client"
	"github.com/kanga-run/kanga/internal/assembly/cp"
	"github.com/kanga-run/kanga/internal/simhost"
)

// BenchmarkControlPath measures Kanga's part of a start with nothing to
// start: the Go SDK's CreateInstance and WaitInstance(running) over HTTP
// on loopback, the API (auth, tenant policy, image check against a
// stand-in host, Pending write, wait for the placement), the embedded
// etcd, the control-plane loop (fenced placement write), all assembled as
// kanga server's control plane is (package cp), and an in-process
// simulated host (package simhost) that does what `kanga up`'s agent does
// with the store around a start: it follows the instances through the
// store's watch and writes Creating, then Running, with UpdateInstance. The container start
// itself is left out (bench start measures it). One op is one instance,
// from CreateInstance to WaitInstance returning it Running (ns/op is the
// mean wall time per start, p50-ms and p90-ms the per-start latency);
// with c=8, eight clients create at once.
//
// Run it with -benchtime=200x -count=5 or so; etcd's fsyncs make every op
// pay real disk latency, so it is noisy on a shared machine.
func BenchmarkControlPath(b *testing.B) {
	for _, c := range []int{1, 8} {
		b.Run(fmt.Sprintf("c=%d", c), func(b *testing.B) {
			env := newControlPathEnv(b)
			var (
				seq, failed atomic.Int64
				mu          sync.Mutex
				lat         []time.Duration
			)
			b.SetParallelism(max(1, c/2)) // GOMAXPROCS is 2 on the project's machine
			if c == 1 {
				b.SetParallelism(1)
			}
			b.ResetTimer()
			run := func() {
				name := fmt.Sprintf("cp-%07d", seq.Add(1))
				t := time.Now()
				if err := env.start(b.Context(), name); err != nil {
					failed.Add(1)
					b.Error(err)
					return
				}
				d := time.Since(t)
				mu.Lock()
				lat = append(lat, d)
				mu.Unlock()
			}
			if c == 1 {
				for b.Loop() {
					run()
				}
			} else {
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						run()
					}
				})
			}
			b.StopTimer()
			if b.Elapsed() > 0 {
				b.ReportMetric(float64(int64(b.N)-failed.Load())/b.Elapsed().Minutes(), "starts/min")
			}
			if len(lat) > 0 {
				slices.Sort(lat)
				b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
				b.ReportMetric(float64(lat[len(lat)*9/10].Microseconds())/1000, "p90-ms")
			}
		})
	}
}

type controlPathEnv struct {
	c *client.Client
}

func newControlPathEnv(b testing.TB) *controlPathEnv {
	b.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(cancel)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	sim := simhost.Config{Name: "sim-host", CPUs: 1 << 20, Memory: 1 << 50, Pods: 1 << 30}
	plane, err := servePlane(ctx, cp.Options{DataDir: b.TempDir(), Logger: log,
		Hosts: simhost.Directory{simhost.NewAPIHost(sim)}})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(plane.stop)
	if _, err := simhost.OnStore(ctx, plane.Store(), sim, time.Minute); err != nil {
		b.Fatal(err)
	}
	if err := waitReady(ctx, plane.Store(), 1, func(string, ...any) {}); err != nil {
		b.Fatal(err)
	}
	cfg := plane.ClientConfig()
	c, err := client.New(cfg.Addr, cfg.Token)
	if err != nil {
		b.Fatal(err)
	}
	return &controlPathEnv{c: c}
}

// start creates an instance and waits until it is Running.
func (e *controlPathEnv) start(ctx context.Context, name string) error {
	_, err := e.c.CreateInstance(ctx, api.CreateInstanceRequest{Name: name, Spec: api.InstanceSpec{
		Containers: []api.ContainerSpec{{Name: "main", Image: "bench", Command: []string{"sleep", "3600"}}},
		Resources:  api.Resources{CPU: "100m", Memory: "64Mi"},
	}})
	if err != nil {
		return err
	}
	inst, err := e.c.WaitInstance(ctx, name, client.WaitRunning)
	if err != nil {
		return err
	}
	if inst.Status.Phase != api.PhaseRunning {
		return fmt.Errorf("instance %s is %s, not Running: %s %s", name, inst.Status.Phase, inst.Status.Reason, inst.Status.Message)
	}
	return nil
}
