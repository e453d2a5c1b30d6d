package scheduler

import (
	"fmt"
	"strconv"
	"testing"
)

// Results on the project machine (2 cores, Intel Xeon, Debian 12, go1.26.8),
// from
//
//	go test -run '^$' -bench BenchmarkSchedule -benchmem -count 3 ./internal/scheduler/
//
// on 2026-11-26 16:38 UTC, while other builds ran on the machine (load
// average about 3), so they are lower bounds. ns/op is one Schedule call
// placing all its requests (binpack + tenant spread, every score on);
// requests/s is requests over time. Median of three:
//
//	hosts=100/requests=100                 215,463 ns/op   464,117 requests/s     52,517 B/op    353 allocs/op
//	hosts=1000/requests=1000            11,498,370 ns/op    86,969 requests/s    343,204 B/op    944 allocs/op
//	hosts=10000/requests=1000          106,779,031 ns/op     9,365 requests/s  2,084,584 B/op  1,062 allocs/op
//	hosts=10000/requests=1000/cand=500  15,003,196 ns/op    66,652 requests/s  2,084,601 B/op  1,062 allocs/op
//
// A full scan costs about 10 ns per host and request; at 10,000 hosts
// about a sixth of a call (some 15 ms) is building the per-call state
// (newState), which also bounds the limited search.

func BenchmarkSchedule(b *testing.B) {
	for _, bc := range []struct{ hosts, requests, candidates int }{
		{100, 100, 0},
		{1000, 1000, 0},
		{10000, 1000, 0},
		// kube-scheduler's default share of nodes scored at this size is
		// 5%, 500 hosts.
		{10000, 1000, 500},
	} {
		name := fmt.Sprintf("hosts=%d/requests=%d", bc.hosts, bc.requests)
		if bc.candidates > 0 {
			name += fmt.Sprintf("/candidates=%d", bc.candidates)
		}
		b.Run(name, func(b *testing.B) {
			snap := Snapshot{Hosts: synthHosts(bc.hosts)}
			pending := synthRequests(bc.requests)
			// The policy that does the most work: every score is computed.
			policy := Policy{Mode: BinPack, TenantSpread: true, MaxCandidates: bc.candidates}
			var plan Plan
			b.ReportAllocs()
			for b.Loop() {
				plan = Schedule(snap, pending, policy)
			}
			b.ReportMetric(float64(bc.requests)*float64(b.N)/b.Elapsed().Seconds(), "requests/s")
			b.ReportMetric(float64(len(plan.Placements)), "placed/op")
		})
	}
}

// synthHosts returns n varied hosts: three zones, 8 to 32 cores, 0 to 69%
// allocated, a few not ready or cordoned, runtime classes and images
// spread over them. Arithmetic, not math/rand, keeps them the same on every
// run and Go version.
func synthHosts(n int) []Host {
	hosts := make([]Host, n)
	for i := range hosts {
		cores := int64(8 + 8*(i%4))
		capacity := Resources{MilliCPU: cores * 1000, Memory: cores * 4 * gi, Pids: 32768, BandwidthBPS: 10e9}
		h := Host{
			Name: fmt.Sprintf("host-%05d", i),
			Labels: map[string]string{
				ZoneLabel: "z" + strconv.Itoa(1+i%3),
				"disk":    []string{"ssd", "hdd"}[i%2],
			},
			Ready:    i%97 != 0,
			Cordoned: i%89 == 0,
			Capacity: capacity,
			Allocated: Resources{
				MilliCPU:     capacity.MilliCPU * int64((i*7919)%70) / 100,
				Memory:       capacity.Memory * int64((i*104729)%70) / 100,
				Pids:         int64(i % 1000),
				BandwidthBPS: int64(i%10) * 1e8,
			},
			DedicatedFree:  i % 5,
			RuntimeClasses: []string{"runc"},
		}
		if i%2 == 0 {
			h.RuntimeClasses = append(h.RuntimeClasses, "crun")
		}
		if i%3 == 0 {
			h.RuntimeClasses = append(h.RuntimeClasses, "gvisor")
		}
		if i%50 == 0 {
			h.Capabilities = []string{"sgx"}
		}
		for k := range 3 {
			h.Images = append(h.Images, "registry.local/img-"+strconv.Itoa((i+k*13)%40)+":latest")
		}
		hosts[i] = h
	}
	return hosts
}

// synthRequests returns n varied requests from 50 tenants: 0.25 to 2
// cores, some with a runtime class, selector, capability, dedicated cores
// or image, and 2% with a selector no host matches.
func synthRequests(n int) []Request {
	reqs := make([]Request, n)
	for j := range reqs {
		r := Request{
			ID:     fmt.Sprintf("req-%05d", j),
			Tenant: "t" + strconv.Itoa(j%50),
			Resources: Resources{
				MilliCPU:     int64(250 * (1 + j%8)),
				Memory:       int64(256<<20) * int64(1+j%16),
				Pids:         256,
				BandwidthBPS: 10e6,
			},
		}
		switch j % 10 {
		case 0:
			r.RuntimeClass = "gvisor"
		case 1:
			r.RuntimeClass = "crun"
		case 2:
			r.Selector = map[string]string{ZoneLabel: "z" + strconv.Itoa(1+j%3)}
		}
		if j%50 == 3 {
			r.Selector = map[string]string{ZoneLabel: "nowhere"}
		}
		if j%100 == 7 {
			r.Requires = []string{"sgx"}
		}
		if j%20 == 4 {
			r.DedicatedCores = 2
			r.Resources.MilliCPU += 2000
		}
		if j%4 != 0 {
			r.Images = []string{"registry.local/img-" + strconv.Itoa(j%40) + ":latest"}
		}
		reqs[j] = r
	}
	return reqs
}

func itoa(n int) string { return strconv.Itoa(n) }
