package agent

import (
	"fmt"
	"time"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/internal/model"
)

// The SLA report judges delivery against the promise with the slack a
// one-second sampling of kernel counters needs.
const (
	// slaAtLeast: an instance that wanted more got at least this share of
	// its promise.
	slaAtLeast = 0.90
	// slaAtMost: a limit lets through at most this multiple of the promise
	// (token buckets and throttle slices overshoot a little per second).
	slaAtMost = 1.15
	// slaWanting: in an interval where at least this share of the CFS
	// periods ended throttled, the instance wanted more CPU than its quota.
	slaWanting = 0.5
	// slaStarved: in an interval where the instance's tasks waited for a
	// CPU at least this share of the time, it wanted more than it got,
	// whether or not the quota throttled it.
	slaStarved = 0.1
	// slaNearLimit: an OOM kill is the instance's own doing when its
	// memory peak was at least this share of its limit.
	slaNearLimit = 0.90
)

// interval is the change of the counters between two samples.
type interval struct {
	prev, cur *sample
	seconds   float64
}

// intervals pairs consecutive samples, skipping pairs whose clock or
// counters went backwards (a cgroup recreated under the same name).
func intervals(samples []sample) []interval {
	var out []interval
	for i := 1; i < len(samples); i++ {
		p, c := &samples[i-1], &samples[i]
		dt := c.Time.Sub(p.Time).Seconds()
		if dt <= 0 || c.CPUUsageNanos < p.CPUUsageNanos || c.CPUPeriods < p.CPUPeriods ||
			c.DiskReadBytes < p.DiskReadBytes || c.DiskWriteBytes < p.DiskWriteBytes ||
			c.DiskReadOps < p.DiskReadOps || c.DiskWriteOps < p.DiskWriteOps ||
			c.NetRxBytes < p.NetRxBytes || c.NetTxBytes < p.NetTxBytes {
			continue
		}
		out = append(out, interval{prev: p, cur: c, seconds: dt})
	}
	return out
}

// evaluateSLA is the SLA report over an instance's samples, oldest first:
// one item per promised resource, none for what was not promised.
func evaluateSLA(r model.Resources, samples []sample) []api.SLAItem {
	items := []api.SLAItem{}
	ivs := intervals(samples)
	if item, ok := cpuItem(r, samples, ivs); ok {
		items = append(items, item)
	}
	if item, ok := memoryItem(r, samples); ok {
		items = append(items, item)
	}
	if r.Pids > 0 {
		items = append(items, pidsItem(r.Pids, samples))
	}
	for _, d := range []struct {
		resource string
		count    int64
		counter  func(*sample) uint64
		unit     func(float64) string
	}{
		{"disk-read-bps", r.DiskReadBPS, func(s *sample) uint64 { return s.DiskReadBytes }, bytesRate},
		{"disk-write-bps", r.DiskWriteBPS, func(s *sample) uint64 { return s.DiskWriteBytes }, bytesRate},
		{"disk-read-iops", r.DiskReadIOPS, func(s *sample) uint64 { return s.DiskReadOps }, opsRate},
		{"disk-write-iops", r.DiskWriteIOPS, func(s *sample) uint64 { return s.DiskWriteOps }, opsRate},
	} {
		promise := float64(d.count)
		if promise > 0 {
			items = append(items, diskItem(d.resource, promise, ivs, d.counter, d.unit))
		}
	}
	for _, b := range []struct {
		resource  string
		bps       int64
		bytes     func(*sample) uint64
		overlimit func(*sample) uint64
	}{
		{"ingress-bandwidth", r.IngressBPS, func(s *sample) uint64 { return s.NetRxBytes }, func(s *sample) uint64 { return s.IngressOverlimits }},
		{"egress-bandwidth", r.EgressBPS, func(s *sample) uint64 { return s.NetTxBytes }, func(s *sample) uint64 { return s.EgressOverlimits }},
	} {
		if b.bps <= 0 {
			continue
		}
		items = append(items, bandwidthItem(b.resource, float64(b.bps), ivs, b.bytes, b.overlimit))
	}
	return items
}

const notEnough = "not enough samples yet"

// cpuItem: a shared instance that wanted more than its quota (throttled
// in most periods of an interval, or kept waiting for a CPU by a busy
// host) must have got about its quota then; a
// dedicated one must never be throttled and never share a core with
// another dedicated instance.
func cpuItem(r model.Resources, samples []sample, ivs []interval) (api.SLAItem, bool) {
	if n := r.DedicatedCores; n > 0 {
		return dedicatedCPUItem(n, samples, ivs), true
	}
	if r.MilliCPU <= 0 {
		return api.SLAItem{}, false
	}
	promise := float64(r.MilliCPU) / 1000
	item := api.SLAItem{Resource: "cpu", Promised: fmt.Sprintf("%.2f CPU", promise), Kept: true}
	if len(ivs) == 0 {
		item.Delivered = notEnough
		return item, true
	}
	var wantNanos, wantSeconds, peak float64
	for _, iv := range ivs {
		used := float64(iv.cur.CPUUsageNanos - iv.prev.CPUUsageNanos)
		peak = max(peak, used/1e9/iv.seconds)
		periods := iv.cur.CPUPeriods - iv.prev.CPUPeriods
		throttled := iv.cur.CPUThrottledPeriods - iv.prev.CPUThrottledPeriods
		starved := iv.cur.RunDelayNanos >= iv.prev.RunDelayNanos &&
			float64(iv.cur.RunDelayNanos-iv.prev.RunDelayNanos)/1e9/iv.seconds >= slaStarved
		if (periods > 0 && float64(throttled) >= slaWanting*float64(periods)) || starved {
			wantNanos += used
			wantSeconds += iv.seconds
		}
	}
	if wantSeconds == 0 {
		item.Delivered = fmt.Sprintf("never wanted more than its quota; peak %.2f CPU", peak)
		return item, true
	}
	got := wantNanos / 1e9 / wantSeconds
	item.Delivered = fmt.Sprintf("%.2f CPU while it wanted more (%s of %s)", got, seconds(wantSeconds), seconds(totalSeconds(ivs)))
	switch {
	case got < slaAtLeast*promise:
		item.Kept = false
		item.Detail = "got less than its quota while it wanted more: the host could not give it the CPU it was promised"
	case got > slaAtMost*promise:
		item.Kept = false
		item.Detail = "ran past its quota: the limit is not enforced"
	}
	return item, true
}

func dedicatedCPUItem(n int, samples []sample, ivs []interval) api.SLAItem {
	item := api.SLAItem{Resource: "cpu", Promised: plural(n, "dedicated core"), Kept: true}
	if len(samples) == 0 {
		item.Delivered = notEnough
		return item
	}
	var throttled uint64
	shared := false
	wrongCount := ""
	for _, s := range samples {
		shared = shared || s.SharedCores
		if cores, err := parseCPUList(s.CPUs); err != nil || len(cores) != n {
			wrongCount = s.CPUs
		}
	}
	for _, iv := range ivs {
		throttled += iv.cur.CPUThrottledPeriods - iv.prev.CPUThrottledPeriods
	}
	var peak float64
	for _, iv := range ivs {
		peak = max(peak, float64(iv.cur.CPUUsageNanos-iv.prev.CPUUsageNanos)/1e9/iv.seconds)
	}
	last := samples[len(samples)-1]
	item.Delivered = fmt.Sprintf("cores %s, %d throttled periods, peak %.2f CPU", last.CPUs, throttled, peak)
	switch {
	case wrongCount != "":
		item.Kept = false
		item.Detail = fmt.Sprintf("ran on cores %q, not %d whole cores", wrongCount, n)
	case shared:
		item.Kept = false
		item.Detail = "shared a core with another dedicated instance"
	case throttled > 0:
		item.Kept = false
		item.Detail = "was throttled"
	}
	return item
}

// memoryItem: the limit holds, and an OOM kill is only kept within the
// promise when the instance itself reached its limit.
func memoryItem(r model.Resources, samples []sample) (api.SLAItem, bool) {
	limit := r.Memory
	if limit <= 0 {
		return api.SLAItem{}, false
	}
	item := api.SLAItem{Resource: "memory", Promised: bytesSize(float64(limit)), Kept: true}
	if len(samples) == 0 {
		item.Delivered = notEnough
		return item, true
	}
	var peak, kills uint64
	var unjust uint64
	var prevKills uint64
	for i, s := range samples {
		peak = max(peak, s.MemoryPeak)
		kills = max(kills, s.OOMKills)
		if i > 0 {
			prevKills = samples[i-1].OOMKills
		}
		if s.OOMKills > prevKills && float64(s.MemoryPeak) < slaNearLimit*float64(limit) {
			unjust += s.OOMKills - prevKills
		}
	}
	last := samples[len(samples)-1]
	item.Delivered = fmt.Sprintf("peak %s, %d OOM kills", bytesSize(float64(peak)), kills)
	// The kernel rounds a limit down to whole pages.
	const page = 4096
	switch {
	case last.MemoryLimit == 0 || last.MemoryLimit > uint64(limit) || last.MemoryLimit+page < uint64(limit):
		item.Kept = false
		item.Detail = fmt.Sprintf("the kernel's limit is %s, not the promised %s", bytesSize(float64(last.MemoryLimit)), bytesSize(float64(limit)))
	case unjust > 0:
		item.Kept = false
		item.Detail = fmt.Sprintf("%d OOM kills while well below its limit", unjust)
	case kills > 0:
		item.Detail = "OOM kills happened at its limit"
	}
	return item, true
}

func pidsItem(limit int64, samples []sample) api.SLAItem {
	item := api.SLAItem{Resource: "pids", Promised: fmt.Sprintf("%d processes", limit), Kept: true}
	if len(samples) == 0 {
		item.Delivered = notEnough
		return item
	}
	var most uint64
	for _, s := range samples {
		most = max(most, s.Pids)
		if s.PidsLimit != uint64(limit) {
			item.Kept = false
			item.Detail = fmt.Sprintf("the kernel's limit was %d", s.PidsLimit)
		}
	}
	item.Delivered = fmt.Sprintf("at most %d processes", most)
	if most > uint64(limit) {
		item.Kept = false
		item.Detail = "ran more processes than its limit"
	}
	return item
}

// diskItem: blkio v1 does not say when I/O waited on the throttle, so the
// report checks the cap: the peak one-second rate stays at the promise.
func diskItem(resource string, promise float64, ivs []interval, counter func(*sample) uint64, unit func(float64) string) api.SLAItem {
	item := api.SLAItem{Resource: resource, Promised: unit(promise), Kept: true}
	if len(ivs) == 0 {
		item.Delivered = notEnough
		return item
	}
	var peak float64
	for _, iv := range ivs {
		peak = max(peak, float64(counter(iv.cur)-counter(iv.prev))/iv.seconds)
	}
	item.Delivered = "peak " + unit(peak)
	if peak > slaAtMost*promise {
		item.Kept = false
		item.Detail = "ran past its limit"
	}
	return item
}

// bandwidthItem: in intervals where the shaper held traffic back (the
// instance wanted more), it must have got about its rate: capped at the
// promise, not below it.
func bandwidthItem(resource string, promise float64, ivs []interval, bytes, overlimits func(*sample) uint64) api.SLAItem {
	item := api.SLAItem{Resource: resource, Promised: bitsRate(promise), Kept: true}
	if len(ivs) == 0 {
		item.Delivered = notEnough
		return item
	}
	var wantBits, wantSeconds, peak float64
	for _, iv := range ivs {
		bits := float64(bytes(iv.cur)-bytes(iv.prev)) * 8
		peak = max(peak, bits/iv.seconds)
		if overlimits(iv.cur) > overlimits(iv.prev) {
			wantBits += bits
			wantSeconds += iv.seconds
		}
	}
	if wantSeconds == 0 {
		item.Delivered = fmt.Sprintf("never wanted more than its rate; peak %s", bitsRate(peak))
		return item
	}
	got := wantBits / wantSeconds
	item.Delivered = fmt.Sprintf("%s while it wanted more (%s of %s)", bitsRate(got), seconds(wantSeconds), seconds(totalSeconds(ivs)))
	switch {
	case got < slaAtLeast*promise:
		item.Kept = false
		item.Detail = "shaped below its rate"
	case got > slaAtMost*promise:
		item.Kept = false
		item.Detail = "ran past its rate"
	}
	return item
}

func totalSeconds(ivs []interval) float64 {
	var t float64
	for _, iv := range ivs {
		t += iv.seconds
	}
	return t
}

func seconds(s float64) string {
	return (time.Duration(s*float64(time.Second)) / time.Second * time.Second).String()
}

func bytesSize(b float64) string {
	switch {
	case b >= 1<<30:
		return fmt.Sprintf("%.1fGi", b/(1<<30))
	case b >= 1<<20:
		return fmt.Sprintf("%.1fMi", b/(1<<20))
	case b >= 1<<10:
		return fmt.Sprintf("%.1fKi", b/(1<<10))
	}
	return fmt.Sprintf("%.0fB", b)
}

func bytesRate(b float64) string { return bytesSize(b) + "/s" }

func opsRate(n float64) string { return fmt.Sprintf("%.0f IOPS", n) }

func bitsRate(b float64) string {
	switch {
	case b >= 1e9:
		return fmt.Sprintf("%.2f Gbit/s", b/1e9)
	case b >= 1e6:
		return fmt.Sprintf("%.2f Mbit/s", b/1e6)
	case b >= 1e3:
		return fmt.Sprintf("%.1f kbit/s", b/1e3)
	}
	return fmt.Sprintf("%.0f bit/s", b)
}
