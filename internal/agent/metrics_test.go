package agent

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"

	"github.com/kanga-run/kanga/api"
)

// sampledAgent is an Agent with only what the collector reads: runners
// and their latest samples, as the sampler leaves them.
func sampledAgent(samples map[[3]string]sample) *Agent {
	a := &Agent{runners: map[string]*runner{}, histories: histories{m: map[string]*history{}}}
	for k, s := range samples {
		uid, tn, name := k[0], k[1], k[2]
		a.runners[uid] = &runner{uid: uid, tenant: tn, name: name}
		if !s.Time.IsZero() {
			h := &history{}
			h.add(s)
			a.histories.m[uid] = h
		}
	}
	return a
}

func TestInstanceCollector(t *testing.T) {
	now := time.Unix(1700000000, 0)
	a := sampledAgent(map[[3]string]sample{
		{"u1", "t1", "web"}: {InstanceStats: api.InstanceStats{Time: now, CPUUsageNanos: 1_500_000_000, CPUPeriods: 10,
			CPUThrottledPeriods: 2, CPUThrottledNanos: 250_000_000, MemoryUsage: 4096, MemoryPeak: 8192, MemoryLimit: 1 << 20,
			OOMKills: 1, Pids: 3, NetRxBytes: 100, NetTxBytes: 200, DiskReadBytes: 11, DiskWriteBytes: 22, DiskReadOps: 1, DiskWriteOps: 2}},
		// No sample yet: no series.
		{"u2", "t1", "starting"}: {},
		// Older sample of the same name (a replacement being set up):
		// the newer speaks for it.
		{"u3", "t2", "db"}: {InstanceStats: api.InstanceStats{Time: now, MemoryUsage: 7}},
		{"u4", "t2", "db"}: {InstanceStats: api.InstanceStats{Time: now.Add(time.Second), MemoryUsage: 9}},
	})
	c := a.InstanceCollector()
	want := `
# HELP container_cpu_usage_seconds_total Cumulative CPU time the instance consumed, in seconds.
# TYPE container_cpu_usage_seconds_total counter
container_cpu_usage_seconds_total{name="db",tenant="t2"} 0
container_cpu_usage_seconds_total{name="web",tenant="t1"} 1.5
# HELP container_cpu_cfs_throttled_seconds_total Total time duration the instance has been throttled, in seconds.
# TYPE container_cpu_cfs_throttled_seconds_total counter
container_cpu_cfs_throttled_seconds_total{name="db",tenant="t2"} 0
container_cpu_cfs_throttled_seconds_total{name="web",tenant="t1"} 0.25
# HELP container_memory_usage_bytes Current memory usage in bytes, including all memory regardless of when it was accessed.
# TYPE container_memory_usage_bytes gauge
container_memory_usage_bytes{name="db",tenant="t2"} 9
container_memory_usage_bytes{name="web",tenant="t1"} 4096
# HELP container_spec_memory_limit_bytes Memory limit of the instance in bytes (absent: none).
# TYPE container_spec_memory_limit_bytes gauge
container_spec_memory_limit_bytes{name="web",tenant="t1"} 1.048576e+06
# HELP container_network_receive_bytes_total Cumulative count of bytes received.
# TYPE container_network_receive_bytes_total counter
container_network_receive_bytes_total{name="db",tenant="t2"} 0
container_network_receive_bytes_total{name="web",tenant="t1"} 100
# HELP container_oom_events_total Count of out-of-memory kills in the instance.
# TYPE container_oom_events_total counter
container_oom_events_total{name="db",tenant="t2"} 0
container_oom_events_total{name="web",tenant="t1"} 1
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), "container_cpu_usage_seconds_total",
		"container_cpu_cfs_throttled_seconds_total", "container_memory_usage_bytes", "container_spec_memory_limit_bytes",
		"container_network_receive_bytes_total", "container_oom_events_total"); err != nil {
		t.Error(err)
	}
	// 16 families for web, 15 for db (no limit), none for starting.
	if n := testutil.CollectAndCount(c); n != 31 {
		t.Errorf("collected %d series, want 31", n)
	}
	if problems, err := testutil.CollectAndLint(c); err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %v", problems, err)
	}
	// Sampling stops at rm (startSampling's stop drops the history): the
	// series go with it.
	a.histories.mu.Lock()
	delete(a.histories.m, "u1")
	a.histories.mu.Unlock()
	if n := testutil.CollectAndCount(c, "container_cpu_usage_seconds_total"); n != 1 {
		t.Errorf("after u1 stopped being sampled: %d cpu series, want 1 (db)", n)
	}
}

func TestStartObserve(t *testing.T) {
	created := time.Unix(1700000000, 0)
	p := &startProfile{record: created, begin: created.Add(100 * time.Millisecond)}
	p.last = p.begin
	for _, st := range []struct {
		name string
		d    time.Duration
	}{{"network", 20 * time.Millisecond}, {"task-start", 30 * time.Millisecond}} {
		p.last = p.last.Add(st.d)
		p.names = append(p.names, st.name)
		p.took = append(p.took, st.d)
	}
	count := func(h *prometheus.HistogramVec, lbl string) uint64 {
		var m dto.Metric
		if err := h.WithLabelValues(lbl).(prometheus.Metric).Write(&m); err != nil {
			t.Fatal(err)
		}
		return m.GetHistogram().GetSampleCount()
	}
	sum := func(h *prometheus.HistogramVec, lbl string) float64 {
		var m dto.Metric
		if err := h.WithLabelValues(lbl).(prometheus.Metric).Write(&m); err != nil {
			t.Fatal(err)
		}
		return m.GetHistogram().GetSampleSum()
	}
	for _, tc := range []struct {
		path string
	}{{startPathCold}, {startPathPool}, {startPathWarm}} {
		t.Run(tc.path, func(t *testing.T) {
			c0, s0 := count(startDuration, tc.path), sum(startDuration, tc.path)
			r0, n0 := count(stepDuration, "record-to-agent"), count(stepDuration, "network")
			p.observe(tc.path)
			if got := count(startDuration, tc.path) - c0; got != 1 {
				t.Errorf("start count moved by %d, want 1", got)
			}
			if got := sum(startDuration, tc.path) - s0; fmt.Sprintf("%.3f", got) != "0.050" {
				t.Errorf("start sum moved by %v, want 0.050 (the profile's agent total)", got)
			}
			if count(stepDuration, "record-to-agent")-r0 != 1 || count(stepDuration, "network")-n0 != 1 {
				t.Error("the steps were not observed once each")
			}
		})
	}
}

// BenchmarkScrape100 is one scrape of the per-instance series of 100
// sampled instances, encoded as Prometheus text, as /metrics serves it.
func BenchmarkScrape100(b *testing.B) {
	samples := map[[3]string]sample{}
	for i := range 100 {
		samples[[3]string{fmt.Sprintf("uid-%03d", i), fmt.Sprintf("tenant-%d", i%10), fmt.Sprintf("inst-%03d", i)}] = sample{
			InstanceStats: api.InstanceStats{Time: time.Now(), CPUUsageNanos: uint64(i) * 1e9, MemoryUsage: 1 << 24, MemoryLimit: 1 << 28, Pids: 4}}
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(sampledAgent(samples).InstanceCollector())
	b.ReportAllocs()
	for b.Loop() {
		var buf bytes.Buffer
		mfs, err := reg.Gather()
		if err != nil {
			b.Fatal(err)
		}
		enc := expfmt.NewEncoder(&buf, expfmt.NewFormat(expfmt.TypeTextPlain))
		for _, mf := range mfs {
			if err := enc.Encode(mf); err != nil {
				b.Fatal(err)
			}
		}
		b.SetBytes(int64(buf.Len()))
	}
}

// BenchmarkStartObserve is what a start pays for the metrics: the
// histogram observations of one profile of 12 steps.
func BenchmarkStartObserve(b *testing.B) {
	p := newStartProfile(time.Now().Add(-time.Second))
	for i := range 12 {
		p.step(fmt.Sprintf("step-%d", i))
	}
	b.ReportAllocs()
	for b.Loop() {
		p.observe(startPathCold)
	}
}

func TestCountTake(t *testing.T) {
	for _, c := range []*prometheus.CounterVec{warmTakes, poolTakes} {
		hit, miss := testutil.ToFloat64(c.WithLabelValues("hit")), testutil.ToFloat64(c.WithLabelValues("miss"))
		countTake(c, true)
		countTake(c, false)
		countTake(c, false)
		if d := testutil.ToFloat64(c.WithLabelValues("hit")) - hit; d != 1 {
			t.Errorf("hits moved by %v, want 1", d)
		}
		if d := testutil.ToFloat64(c.WithLabelValues("miss")) - miss; d != 2 {
			t.Errorf("misses moved by %v, want 2", d)
		}
	}
}
