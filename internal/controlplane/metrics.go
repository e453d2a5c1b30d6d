package controlplane

import (
	"time"

	"github.com/kanga-run/kanga/api"
	"github.com/prometheus/client_golang/prometheus"
)

// The scheduler's metrics. Only the leading replica schedules, so the
// others' counters stand still and their pending gauge reads 0.
var (
	placementsTotal = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "kanga", Subsystem: "scheduler", Name: "placements_total",
		Help: "Instances the scheduler assigned to a host.",
	})
	schedulingDuration = prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: "kanga", Subsystem: "scheduler", Name: "scheduling_duration_seconds",
		Help:    "Time from an instance's creation to its assignment to a host.",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300},
	})
	passDuration = prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: "kanga", Subsystem: "scheduler", Name: "pass_duration_seconds",
		Help:    "Time one pass of the control-plane loop (failure detector and scheduler) took.",
		Buckets: prometheus.ExponentialBuckets(.0001, 4, 10), // 100 µs to 26 s
	})
	pendingInstances = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: "kanga", Subsystem: "scheduler", Name: "pending_instances",
		Help: "Instances waiting for a host after the last pass (the scheduling queue).",
	})
	leading = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: "kanga", Subsystem: "scheduler", Name: "leader",
		Help: "1 while this replica leads the control plane (schedules), else 0.",
	})
)

func init() {
	prometheus.MustRegister(placementsTotal, schedulingDuration, passDuration, pendingInstances, leading)
}

// observePlaced records the placement of inst at now.
func observePlaced(inst *api.Instance, now time.Time) {
	placementsTotal.Inc()
	if !inst.CreatedAt.IsZero() {
		schedulingDuration.Observe(now.Sub(inst.CreatedAt).Seconds())
	}
}

// observePass records a pass that took d and left pending instances
// waiting.
func observePass(d time.Duration, pending int) {
	passDuration.Observe(d.Seconds())
	pendingInstances.Set(float64(pending))
}

// observeLeading records a change of leadership; a replica that stops
// leading has no queue.
func observeLeading(v bool) {
	if v {
		leading.Set(1)
		return
	}
	leading.Set(0)
	pendingInstances.Set(0)
}
