package agent

import (
	"strings"
	"testing"
	"time"

	"github.com/kanga-run/kanga/api"
)

// step is what happened in one second: counter increments and the gauges
// read at its end.
type step struct {
	cpuNanos, periods, throttled uint64
	runDelay                     uint64
	writeBytes, writeOps         uint64
	txBytes, egressOver          uint64
	rxBytes, ingressOver         uint64

	cpus              string
	shared            bool
	memPeak, memLimit uint64
	oomKills          uint64
	pids, pidsLimit   uint64
}

// series turns steps into cumulative samples one second apart, starting
// with an all-zero sample.
func series(steps ...step) []sample {
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	var cur sample
	cur.Time = t0
	out := []sample{cur}
	if len(steps) > 0 {
		out[0].CPUs, out[0].MemoryLimit, out[0].PidsLimit = steps[0].cpus, steps[0].memLimit, steps[0].pidsLimit
	}
	for i, s := range steps {
		cur.Time = t0.Add(time.Duration(i+1) * time.Second)
		cur.CPUUsageNanos += s.cpuNanos
		cur.CPUPeriods += s.periods
		cur.CPUThrottledPeriods += s.throttled
		cur.RunDelayNanos += s.runDelay
		cur.DiskWriteBytes += s.writeBytes
		cur.DiskWriteOps += s.writeOps
		cur.NetTxBytes += s.txBytes
		cur.EgressOverlimits += s.egressOver
		cur.NetRxBytes += s.rxBytes
		cur.IngressOverlimits += s.ingressOver
		cur.CPUs, cur.SharedCores = s.cpus, s.shared
		cur.MemoryPeak, cur.MemoryLimit, cur.OOMKills = s.memPeak, s.memLimit, s.oomKills
		cur.Pids, cur.PidsLimit = s.pids, s.pidsLimit
		out = append(out, cur)
	}
	return out
}

func repeat(n int, s step) []step {
	out := make([]step, n)
	for i := range out {
		out[i] = s
	}
	return out
}

func TestEvaluateSLA(t *testing.T) {
	const mi = 1 << 20
	busyHalf := step{cpuNanos: 5e8, periods: 10, throttled: 10}
	for _, tc := range []struct {
		name     string
		res      api.Resources
		samples  []sample
		resource string // the item checked; "" expects no items at all
		kept     bool
		contains string // in Delivered or Detail
	}{
		{name: "no promises, no items", res: api.Resources{}, samples: series(repeat(3, busyHalf)...)},
		{name: "cpu: one sample is not enough", res: api.Resources{CPU: "0.5"}, samples: series(), resource: "cpu", kept: true, contains: notEnough},
		{name: "cpu: busy loop gets its quota", res: api.Resources{CPU: "0.5"}, samples: series(repeat(5, busyHalf)...), resource: "cpu", kept: true, contains: "0.50 CPU while it wanted more"},
		{name: "cpu: within tolerance", res: api.Resources{CPU: "500m"}, samples: series(repeat(5, step{cpuNanos: 4.6e8, periods: 10, throttled: 10})...), resource: "cpu", kept: true},
		{name: "cpu: starved while wanting", res: api.Resources{CPU: "0.5"}, samples: series(repeat(5, step{cpuNanos: 3e8, periods: 10, throttled: 9})...), resource: "cpu", kept: false, contains: "less than its quota"},
		{name: "cpu: past its quota", res: api.Resources{CPU: "0.5"}, samples: series(repeat(5, step{cpuNanos: 8e8, periods: 10, throttled: 10})...), resource: "cpu", kept: false, contains: "not enforced"},
		{name: "cpu: idle is not starved", res: api.Resources{CPU: "1"}, samples: series(repeat(5, step{cpuNanos: 1e8, periods: 10})...), resource: "cpu", kept: true, contains: "never wanted more"},
		{name: "cpu: a burst throttled once is not wanting", res: api.Resources{CPU: "1"}, samples: series(repeat(5, step{cpuNanos: 1e8, periods: 10, throttled: 1})...), resource: "cpu", kept: true, contains: "never wanted more"},
		{name: "dedicated: exclusive and unthrottled", res: api.Resources{CPU: "1", CPUPolicy: "dedicated"}, samples: series(repeat(3, step{cpuNanos: 1e9, cpus: "1"})...), resource: "cpu", kept: true, contains: "cores 1, 0 throttled periods, peak 1.00 CPU"},
		{name: "dedicated: shared a core", res: api.Resources{CPU: "1", CPUPolicy: "dedicated"}, samples: series(step{cpuNanos: 1e9, cpus: "1"}, step{cpuNanos: 1e9, cpus: "1", shared: true}), resource: "cpu", kept: false, contains: "shared a core"},
		{name: "dedicated: throttled", res: api.Resources{CPU: "1", CPUPolicy: "dedicated"}, samples: series(step{cpuNanos: 1e9, periods: 10, throttled: 1, cpus: "0"}, step{cpus: "0"}), resource: "cpu", kept: false, contains: "throttled"},
		{name: "dedicated: wrong number of cores", res: api.Resources{CPU: "1", CPUPolicy: "dedicated"}, samples: series(step{cpus: "0-1"}), resource: "cpu", kept: false, contains: "not 1 whole cores"},
		{name: "memory: peak under the limit", res: api.Resources{Memory: "64Mi"}, samples: series(step{memPeak: 10 * mi, memLimit: 64 * mi}), resource: "memory", kept: true, contains: "peak 10.0Mi, 0 OOM kills"},
		{name: "memory: OOM kill at the limit is kept", res: api.Resources{Memory: "64Mi"}, samples: series(step{memPeak: 20 * mi, memLimit: 64 * mi}, step{memPeak: 64 * mi, memLimit: 64 * mi, oomKills: 1}), resource: "memory", kept: true, contains: "OOM kills happened at its limit"},
		{name: "memory: OOM kill well below the limit", res: api.Resources{Memory: "64Mi"}, samples: series(step{memPeak: 10 * mi, memLimit: 64 * mi}, step{memPeak: 10 * mi, memLimit: 64 * mi, oomKills: 1}), resource: "memory", kept: false, contains: "well below its limit"},
		{name: "memory: no limit in the kernel", res: api.Resources{Memory: "64Mi"}, samples: series(step{memPeak: 10 * mi}), resource: "memory", kept: false, contains: "kernel's limit"},
		{name: "pids: held at the limit", res: api.Resources{Pids: 50}, samples: series(step{pids: 50, pidsLimit: 50}), resource: "pids", kept: true, contains: "at most 50"},
		{name: "pids: limit missing", res: api.Resources{Pids: 50}, samples: series(step{pids: 80, pidsLimit: 0}), resource: "pids", kept: false},
		{name: "disk iops: capped at the promise", res: api.Resources{DiskWriteIOPS: 200}, samples: series(repeat(4, step{writeOps: 205})...), resource: "disk-write-iops", kept: true, contains: "peak 205 IOPS"},
		{name: "disk iops: past the promise", res: api.Resources{DiskWriteIOPS: 200}, samples: series(step{writeOps: 200}, step{writeOps: 400}), resource: "disk-write-iops", kept: false},
		{name: "disk bps: capped", res: api.Resources{DiskWriteBPS: "2Mi"}, samples: series(repeat(3, step{writeBytes: 2 * mi})...), resource: "disk-write-bps", kept: true, contains: "peak 2.0Mi/s"},
		{name: "egress: capped at, not below", res: api.Resources{EgressBandwidth: "8M"}, samples: series(repeat(4, step{txBytes: 1e6, egressOver: 30})...), resource: "egress-bandwidth", kept: true, contains: "8.00 Mbit/s while it wanted more"},
		{name: "egress: shaped below", res: api.Resources{EgressBandwidth: "8M"}, samples: series(repeat(4, step{txBytes: 5e5, egressOver: 30})...), resource: "egress-bandwidth", kept: false, contains: "below its rate"},
		{name: "egress: never wanted more", res: api.Resources{EgressBandwidth: "8M"}, samples: series(repeat(4, step{txBytes: 1e5})...), resource: "egress-bandwidth", kept: true, contains: "never wanted more"},
		{name: "ingress: counted on rx", res: api.Resources{IngressBandwidth: "8Mbit"}, samples: series(repeat(4, step{rxBytes: 1e6, ingressOver: 5, txBytes: 1})...), resource: "ingress-bandwidth", kept: true, contains: "8.00 Mbit/s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			items := evaluateSLA(parsed(t, tc.res), tc.samples)
			if tc.resource == "" {
				if len(items) != 0 {
					t.Fatalf("items %+v, want none", items)
				}
				return
			}
			var item *api.SLAItem
			for i := range items {
				if items[i].Resource == tc.resource {
					item = &items[i]
				}
			}
			if item == nil {
				t.Fatalf("no %s item in %+v", tc.resource, items)
			}
			if item.Kept != tc.kept {
				t.Errorf("kept = %v, want %v: %+v", item.Kept, tc.kept, *item)
			}
			if !strings.Contains(item.Delivered+" | "+item.Detail, tc.contains) {
				t.Errorf("%+v does not say %q", *item, tc.contains)
			}
		})
	}
}

func TestEvaluateSLAOneItemPerPromise(t *testing.T) {
	res := api.Resources{CPU: "1", Memory: "1Gi", Pids: 10, DiskReadBPS: "1M", DiskWriteBPS: "1M", DiskReadIOPS: 5, DiskWriteIOPS: 5, IngressBandwidth: "1M", EgressBandwidth: "1M"}
	var got []string
	for _, it := range evaluateSLA(parsed(t, res), series(step{})) {
		got = append(got, it.Resource)
	}
	want := "cpu memory pids disk-read-bps disk-write-bps disk-read-iops disk-write-iops ingress-bandwidth egress-bandwidth"
	if strings.Join(got, " ") != want {
		t.Fatalf("items %v, want %s", got, want)
	}
}

func TestIntervalsSkipCountersGoingBack(t *testing.T) {
	s := series(step{cpuNanos: 1e9}, step{cpuNanos: 1e9})
	s[2].CPUUsageNanos = 0 // cgroup recreated
	if n := len(intervals(s)); n != 1 {
		t.Fatalf("%d intervals, want 1", n)
	}
}

// A busy loop that a saturated host keeps waiting for a CPU is not
// throttled by its quota, yet it wanted more and did not get it.
func TestSLACPUStarvedByHost(t *testing.T) {
	res := api.Resources{CPU: "0.5"}
	starved := evaluateSLA(parsed(t, res), series(repeat(5, step{cpuNanos: 3e8, periods: 10, runDelay: 6e8})...))
	if len(starved) != 1 || starved[0].Kept || !strings.Contains(starved[0].Delivered, "0.30 CPU while it wanted more") {
		t.Fatalf("starved instance: %+v", starved)
	}
	// Waiting briefly, as any task does now and then, is not wanting more.
	idle := evaluateSLA(parsed(t, res), series(repeat(5, step{cpuNanos: 1e8, periods: 10, runDelay: 1e7})...))
	if len(idle) != 1 || !idle[0].Kept || !strings.Contains(idle[0].Delivered, "never wanted more") {
		t.Fatalf("mostly idle instance: %+v", idle)
	}
}
