package agent

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Start paths: how an instance got its sandbox.
const (
	startPathWarm = "warm" // claimed a warm container (warm.go)
	startPathPool = "pool" // took a pooled network sandbox
	startPathCold = "cold" // set everything up from nothing
)

// startBuckets span a warm claim (a few ms) to a cold start that pulls
// an image (tens of seconds).
var startBuckets = []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}

var (
	// startDuration and stepDuration observe the numbers the start
	// profile already took for the "instance started" log line: nothing
	// is timed twice, and an observation is a histogram Observe.
	startDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: "kanga", Subsystem: "instance", Name: "start_duration_seconds",
		Help:    "Time from the agent taking up a new instance to its Running status, by how it started (warm, pool, cold).",
		Buckets: startBuckets,
	}, []string{"path"})
	stepDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: "kanga", Subsystem: "instance", Name: "start_step_duration_seconds",
		Help:    "Time each step of an instance start took on the agent; record-to-agent is from the instance's creation to the agent taking it up.",
		Buckets: startBuckets,
	}, []string{"step"})
)

// Hits and misses of the warm containers and the sandbox pool, counted
// for the starts that could use them (an instance with dedicated cores,
// devices or disk limits never asks the warm pool).
var (
	warmTakes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "kanga", Subsystem: "warm", Name: "takes_total",
		Help: "Starts that asked for a warm container of their tenant, image and runtime, by result (hit, miss).",
	}, []string{"result"})
	poolTakes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "kanga", Subsystem: "pool", Name: "takes_total",
		Help: "Starts that asked the pool for a ready network sandbox, by result (hit, miss).",
	}, []string{"result"})
)

func countTake(c *prometheus.CounterVec, hit bool) {
	if hit {
		c.WithLabelValues("hit").Inc()
		return
	}
	c.WithLabelValues("miss").Inc()
}

func init() {
	prometheus.MustRegister(startDuration, stepDuration, warmTakes, poolTakes)
}

// observe records a finished start in the histograms. Starts that adopt
// what an earlier agent made are not starts and are left out.
func (p *startProfile) observe(path string) {
	if !p.record.IsZero() {
		stepDuration.WithLabelValues("record-to-agent").Observe(p.begin.Sub(p.record).Seconds())
	}
	for i, n := range p.names {
		stepDuration.WithLabelValues(n).Observe(p.took[i].Seconds())
	}
	startDuration.WithLabelValues(path).Observe(p.last.Sub(p.begin).Seconds())
}

// observeStart records the start just ended, unless it adopted
// containers an earlier agent started.
func (r *runner) observeStart(prof *startProfile, warm bool) {
	if r.adopted {
		return
	}
	path := startPathCold
	if warm {
		path = startPathWarm
	} else if id, ok := r.a.netIDs.Load(r.uid); ok && id != r.uid {
		// attach records a pooled sandbox under its own id.
		path = startPathPool
	}
	prof.observe(path)
}

// latest returns the newest sample, if any.
func (h *history) latest() (sample, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.samples) == 0 {
		return sample{}, false
	}
	return h.samples[len(h.samples)-1], true
}

// instanceLabels label the per-instance series. "name" rather than
// "instance", as cAdvisor does: Prometheus gives every scraped series an
// instance label of its own (the target), which would shadow it.
var instanceLabels = []string{"tenant", "name"}

func instanceDesc(name, help string) *prometheus.Desc {
	return prometheus.NewDesc(name, help, instanceLabels, nil)
}

// Per-instance series under cAdvisor's names, so that dashboards and
// alerts written for the kubelet's read them.
var (
	descCPU          = instanceDesc("container_cpu_usage_seconds_total", "Cumulative CPU time the instance consumed, in seconds.")
	descCPUPeriods   = instanceDesc("container_cpu_cfs_periods_total", "Number of elapsed enforcement period intervals.")
	descCPUThrottled = instanceDesc("container_cpu_cfs_throttled_periods_total", "Number of throttled period intervals.")
	descCPUThrSecs   = instanceDesc("container_cpu_cfs_throttled_seconds_total", "Total time duration the instance has been throttled, in seconds.")
	descMem          = instanceDesc("container_memory_usage_bytes", "Current memory usage in bytes, including all memory regardless of when it was accessed.")
	descMemMax       = instanceDesc("container_memory_max_usage_bytes", "Maximum memory usage recorded in bytes.")
	descMemLimit     = instanceDesc("container_spec_memory_limit_bytes", "Memory limit of the instance in bytes (absent: none).")
	descOOM          = instanceDesc("container_oom_events_total", "Count of out-of-memory kills in the instance.")
	descThreads      = instanceDesc("container_threads", "Number of tasks (threads) in the instance's pids cgroup.")
	descRx           = instanceDesc("container_network_receive_bytes_total", "Cumulative count of bytes received.")
	descTx           = instanceDesc("container_network_transmit_bytes_total", "Cumulative count of bytes transmitted.")
	descFsRead       = instanceDesc("container_fs_reads_bytes_total", "Cumulative count of bytes read from block devices.")
	descFsWrite      = instanceDesc("container_fs_writes_bytes_total", "Cumulative count of bytes written to block devices.")
	descFsReadOps    = instanceDesc("container_fs_reads_total", "Cumulative count of reads completed.")
	descFsWriteOps   = instanceDesc("container_fs_writes_total", "Cumulative count of writes completed.")
	descLastSeen     = instanceDesc("container_last_seen", "Last time the instance was sampled, in seconds since the epoch.")
)

// instanceCollector exports, on each scrape, the newest sample the
// sampler took of every running instance: a scrape reads no cgroup and
// an instance's series go with its sampling, when it stops.
type instanceCollector struct{ a *Agent }

// InstanceCollector is the collector of the per-instance series; the
// daemon registers it for the host API's /metrics.
func (a *Agent) InstanceCollector() prometheus.Collector { return instanceCollector{a} }

func (c instanceCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descCPU, descCPUPeriods, descCPUThrottled, descCPUThrSecs, descMem, descMemMax,
		descMemLimit, descOOM, descThreads, descRx, descTx, descFsRead, descFsWrite, descFsReadOps, descFsWriteOps, descLastSeen} {
		ch <- d
	}
}

type sampledInstance struct {
	uid, tenant, name string
}

func (c instanceCollector) Collect(ch chan<- prometheus.Metric) {
	a := c.a
	a.mu.Lock()
	insts := make([]sampledInstance, 0, len(a.runners))
	for uid, r := range a.runners {
		insts = append(insts, sampledInstance{uid: uid, tenant: r.tenant, name: r.name})
	}
	a.mu.Unlock()
	// One series set per tenant and name: while an instance moves to a
	// replacement (same name, new UID) both may be sampled for a moment;
	// the newest sample speaks for the name.
	type keyed struct{ tenant, name string }
	latest := map[keyed]sample{}
	for _, in := range insts {
		h := a.histories.get(in.uid)
		if h == nil {
			continue
		}
		s, ok := h.latest()
		if !ok {
			continue
		}
		k := keyed{in.tenant, in.name}
		if prev, ok := latest[k]; !ok || s.Time.After(prev.Time) {
			latest[k] = s
		}
	}
	for k, s := range latest {
		collectSample(ch, s, k.tenant, k.name)
	}
}

func collectSample(ch chan<- prometheus.Metric, s sample, tenant, name string) {
	counter := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, tenant, name)
	}
	gauge := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, tenant, name)
	}
	counter(descCPU, float64(s.CPUUsageNanos)/1e9)
	counter(descCPUPeriods, float64(s.CPUPeriods))
	counter(descCPUThrottled, float64(s.CPUThrottledPeriods))
	counter(descCPUThrSecs, float64(s.CPUThrottledNanos)/1e9)
	gauge(descMem, float64(s.MemoryUsage))
	gauge(descMemMax, float64(s.MemoryPeak))
	if s.MemoryLimit > 0 {
		gauge(descMemLimit, float64(s.MemoryLimit))
	}
	counter(descOOM, float64(s.OOMKills))
	gauge(descThreads, float64(s.Pids))
	counter(descRx, float64(s.NetRxBytes))
	counter(descTx, float64(s.NetTxBytes))
	counter(descFsRead, float64(s.DiskReadBytes))
	counter(descFsWrite, float64(s.DiskWriteBytes))
	counter(descFsReadOps, float64(s.DiskReadOps))
	counter(descFsWriteOps, float64(s.DiskWriteOps))
	gauge(descLastSeen, float64(s.Time.UnixNano())/1e9)
}
