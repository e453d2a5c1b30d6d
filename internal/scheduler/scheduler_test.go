package scheduler

import (
	"reflect"
	"slices"
	"testing"
)

const gi = 1 << 30

// host returns a ready host in zone a with room for a few requests.
func host(name string) Host {
	return Host{
		Name:           name,
		Labels:         map[string]string{ZoneLabel: "a", "disk": "ssd"},
		Ready:          true,
		Capacity:       Resources{MilliCPU: 4000, Memory: 8 * gi, Pids: 1000, BandwidthBPS: 1e9},
		DedicatedFree:  2,
		RuntimeClasses: []string{"runc", "crun"},
		Capabilities:   []string{"sgx"},
	}
}

// request returns a request that fits on host().
func request(id string) Request {
	return Request{
		ID:        id,
		Tenant:    "t1",
		Resources: Resources{MilliCPU: 500, Memory: 1 * gi, Pids: 100, BandwidthBPS: 1e6},
	}
}

// placedOn schedules and returns the host of each request, "" for the
// unplaced, and the reasons of the unplaced.
func placedOn(t *testing.T, snap Snapshot, pending []Request, policy Policy) ([]string, map[string]string) {
	t.Helper()
	plan := Schedule(snap, pending, policy)
	byID := make(map[string]string)
	for _, p := range plan.Placements {
		byID[p.ID] = p.Host
	}
	reasons := make(map[string]string)
	for _, u := range plan.Unplaced {
		reasons[u.ID] = u.Reason
	}
	hosts := make([]string, len(pending))
	for k, r := range pending {
		hosts[k] = byID[r.ID]
		_, placed := byID[r.ID]
		_, unplaced := reasons[r.ID]
		if placed == unplaced {
			t.Fatalf("request %s: placed %v, unplaced %v; want exactly one", r.ID, placed, unplaced)
		}
	}
	if len(plan.Placements)+len(plan.Unplaced) != len(pending) {
		t.Fatalf("plan has %d placements and %d unplaced for %d requests",
			len(plan.Placements), len(plan.Unplaced), len(pending))
	}
	return hosts, reasons
}

func TestFilters(t *testing.T) {
	for _, tc := range []struct {
		name   string
		host   func(*Host)
		req    func(*Request)
		reason string // "" means the request fits
	}{
		{name: "fits"},
		{name: "fits exactly",
			host: func(h *Host) {
				h.Allocated = Resources{MilliCPU: 3500, Memory: 7 * gi, Pids: 900, BandwidthBPS: 1e9 - 1e6}
			},
			req: func(r *Request) { r.DedicatedCores = 2 }},
		{name: "all constraints met",
			req: func(r *Request) {
				r.RuntimeClass = "crun"
				r.Requires = []string{"sgx"}
				r.Selector = map[string]string{ZoneLabel: "a", "disk": "ssd"}
			}},
		{name: "not ready", host: func(h *Host) { h.Ready = false },
			reason: "0/1 hosts available: 1 not ready."},
		{name: "cordoned", host: func(h *Host) { h.Cordoned = true },
			reason: "0/1 hosts available: 1 cordoned."},
		{name: "runtime class", req: func(r *Request) { r.RuntimeClass = "gvisor" },
			reason: "0/1 hosts available: 1 runtime class gvisor not offered."},
		{name: "capability", req: func(r *Request) { r.Requires = []string{"sgx", "tdx"} },
			reason: "0/1 hosts available: 1 missing capability tdx."},
		{name: "selector value", req: func(r *Request) { r.Selector = map[string]string{ZoneLabel: "b"} },
			reason: "0/1 hosts available: 1 selector mismatch."},
		{name: "selector key", req: func(r *Request) { r.Selector = map[string]string{"gpu": ""} },
			reason: "0/1 hosts available: 1 selector mismatch."},
		{name: "free host port",
			host: func(h *Host) {
				h.Ports = []HostPort{{"127.0.0.1", 8080, "tcp"}, {"", 8081, "tcp"}, {"10.0.0.5", 8082, "udp"}}
			},
			req: func(r *Request) {
				r.Ports = []HostPort{{"127.0.0.1", 8080, "udp"}, {"10.0.0.5", 8080, "tcp"}, {"127.0.0.1", 8082, "tcp"}}
			}},
		{name: "host port on the same address",
			host:   func(h *Host) { h.Ports = []HostPort{{"127.0.0.1", 8080, "tcp"}} },
			req:    func(r *Request) { r.Ports = []HostPort{{"127.0.0.1", 9000, "tcp"}, {"127.0.0.1", 8080, "tcp"}} },
			reason: "0/1 hosts available: 1 host port 127.0.0.1:8080/tcp in use."},
		{name: "host port on every address",
			host:   func(h *Host) { h.Ports = []HostPort{{"", 8080, "tcp"}} },
			req:    func(r *Request) { r.Ports = []HostPort{{"127.0.0.1", 8080, "tcp"}} },
			reason: "0/1 hosts available: 1 host port 127.0.0.1:8080/tcp in use."},
		{name: "every address over a single one",
			host:   func(h *Host) { h.Ports = []HostPort{{"10.0.0.5", 53, "udp"}} },
			req:    func(r *Request) { r.Ports = []HostPort{{"", 53, "udp"}} },
			reason: "0/1 hosts available: 1 host port 53/udp in use."},
		{name: "selector before host ports",
			host: func(h *Host) { h.Ports = []HostPort{{"", 8080, "tcp"}} },
			req: func(r *Request) {
				r.Ports = []HostPort{{"", 8080, "tcp"}}
				r.Selector = map[string]string{"disk": "hdd"}
			},
			reason: "0/1 hosts available: 1 selector mismatch."},
		{name: "cpu", host: func(h *Host) { h.Allocated.MilliCPU = 3501 },
			reason: "0/1 hosts available: 1 insufficient cpu."},
		{name: "memory", host: func(h *Host) { h.Allocated.Memory = 7*gi + 1 },
			reason: "0/1 hosts available: 1 insufficient memory."},
		{name: "pids", host: func(h *Host) { h.Allocated.Pids = 901 },
			reason: "0/1 hosts available: 1 insufficient pids."},
		{name: "bandwidth", host: func(h *Host) { h.Capacity.BandwidthBPS = 0 },
			reason: "0/1 hosts available: 1 insufficient bandwidth."},
		{name: "disk", host: func(h *Host) { h.Capacity.Disk = 100 * gi; h.Allocated.Disk = 95 * gi },
			req:    func(r *Request) { r.Resources.Disk = 10 * gi },
			reason: "0/1 hosts available: 1 insufficient disk."},
		{name: "disk fits what is left", host: func(h *Host) { h.Capacity.Disk = 100 * gi; h.Allocated.Disk = 90 * gi },
			req: func(r *Request) { r.Resources.Disk = 10 * gi }},
		{name: "negative disk", req: func(r *Request) { r.Resources.Disk = -1 },
			reason: "invalid request: negative disk"},
		{name: "dedicated cores", req: func(r *Request) { r.DedicatedCores = 3 },
			reason: "0/1 hosts available: 1 insufficient dedicated cores."},
		{name: "over-committed host fits a request asking none of it",
			host: func(h *Host) { h.Allocated.BandwidthBPS = 2e9 },
			req:  func(r *Request) { r.Resources.BandwidthBPS = 0 }},
		{name: "first failing filter counts",
			host:   func(h *Host) { h.Ready = false; h.Allocated.Memory = 8 * gi },
			reason: "0/1 hosts available: 1 not ready."},
		{name: "negative request", req: func(r *Request) { r.Resources.Memory = -1 },
			reason: "invalid request: negative memory"},
		{name: "unknown mode", req: func(r *Request) { r.Mode = "random" },
			reason: `unknown scheduling mode "random"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, r := host("h1"), request("i1")
			if tc.host != nil {
				tc.host(&h)
			}
			if tc.req != nil {
				tc.req(&r)
			}
			got, reasons := placedOn(t, Snapshot{Hosts: []Host{h}}, []Request{r}, Policy{})
			if tc.reason == "" {
				if got[0] != "h1" {
					t.Fatalf("unplaced: %s", reasons["i1"])
				}
				return
			}
			if reasons["i1"] != tc.reason {
				t.Fatalf("reason %q, want %q", reasons["i1"], tc.reason)
			}
		})
	}
}

// TestHostPortsOneCall: of requests racing for one host port, one call
// places exactly one per host; the others wait with the port named.
func TestHostPortsOneCall(t *testing.T) {
	var pending []Request
	for _, id := range []string{"a", "b", "c"} {
		r := request(id)
		r.Ports = []HostPort{{"127.0.0.1", 8080, "tcp"}}
		pending = append(pending, r)
	}
	got, reasons := placedOn(t, Snapshot{Hosts: []Host{host("h1"), host("h2")}}, pending, Policy{})
	if got[0] == "" || got[1] == "" || got[0] == got[1] || got[2] != "" {
		t.Fatalf("placed on %v; want a and b on different hosts, c unplaced", got)
	}
	if want := "0/2 hosts available: 2 host port 127.0.0.1:8080/tcp in use."; reasons["c"] != want {
		t.Errorf("reason %q, want %q", reasons["c"], want)
	}
}

func TestReasonText(t *testing.T) {
	withGvisor := func(name string) Host {
		h := host(name)
		h.RuntimeClasses = append(h.RuntimeClasses, "gvisor")
		h.Allocated.Memory = 8 * gi
		return h
	}
	noCaps := host("h1")
	noCaps.Capabilities = nil
	for _, tc := range []struct {
		name  string
		hosts []Host
		req   func(*Request)
		want  string
	}{
		{name: "sorted by count",
			hosts: []Host{host("h4"), withGvisor("h1"), withGvisor("h2"), host("h5"), withGvisor("h3")},
			req:   func(r *Request) { r.RuntimeClass = "gvisor" },
			want:  "0/5 hosts available: 3 insufficient memory, 2 runtime class gvisor not offered."},
		{name: "equal counts sorted by text",
			hosts: []Host{
				func() Host { h := host("h1"); h.Ready = false; return h }(),
				func() Host { h := host("h2"); h.Cordoned = true; return h }(),
			},
			want: "0/2 hosts available: 1 cordoned, 1 not ready."},
		{name: "one item per missing capability",
			hosts: []Host{noCaps, host("h2"), host("h3")},
			req:   func(r *Request) { r.Requires = []string{"sgx", "tdx"} },
			want:  "0/3 hosts available: 2 missing capability tdx, 1 missing capability sgx."},
		{name: "no hosts", want: "0/0 hosts available."},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := request("i1")
			if tc.req != nil {
				tc.req(&r)
			}
			_, reasons := placedOn(t, Snapshot{Hosts: tc.hosts}, []Request{r}, Policy{})
			if reasons["i1"] != tc.want {
				t.Fatalf("reason\n %q, want\n %q", reasons["i1"], tc.want)
			}
		})
	}
}

func TestScores(t *testing.T) {
	loaded := func(name string, cpu, mem int64) Host {
		h := host(name)
		h.Allocated.MilliCPU, h.Allocated.Memory = cpu, mem
		return h
	}
	inZone := func(h Host, zone string) Host {
		h.Labels = map[string]string{ZoneLabel: zone}
		return h
	}
	withImages := func(h Host, images ...string) Host {
		h.Images = images
		return h
	}
	on := func(id, tenant, h string) Placement { return Placement{ID: id, Tenant: tenant, Host: h} }
	spread := Policy{Mode: Spread}
	binpackSpread := Policy{Mode: BinPack, TenantSpread: true}

	for _, tc := range []struct {
		name     string
		hosts    []Host
		existing []Placement
		req      func(*Request)
		policy   Policy
		want     string
	}{
		{name: "binpack prefers the fuller host",
			hosts: []Host{host("a"), loaded("b", 2000, 4*gi)}, want: "b"},
		{name: "binpack is the default mode",
			hosts: []Host{host("a"), loaded("b", 2000, 4*gi)}, policy: Policy{Mode: ""}, want: "b"},
		{name: "spread prefers the emptier host",
			hosts: []Host{loaded("a", 2000, 4*gi), host("b")}, policy: spread, want: "b"},
		{name: "request mode overrides the policy",
			hosts: []Host{loaded("a", 2000, 4*gi), host("b")},
			req:   func(r *Request) { r.Mode = Spread }, want: "b"},
		{name: "cpu and memory weigh alike",
			// a: 50% cpu, 0% memory; b: 0% cpu, 62.5% memory.
			hosts: []Host{loaded("a", 2000, 0), loaded("b", 0, 5*gi)}, want: "b"},
		{name: "ties go to the smallest name",
			hosts: []Host{host("c"), host("a"), host("b")}, want: "a"},
		{name: "ties go to the smallest name in spread mode too",
			hosts: []Host{host("c"), host("b")}, policy: spread, want: "b"},
		{name: "tenant spread beats binpack",
			hosts:    []Host{host("a"), loaded("b", 3000, 6*gi)},
			existing: []Placement{on("x", "t1", "b")},
			policy:   binpackSpread, want: "a"},
		{name: "tenant spread off",
			hosts:    []Host{host("a"), loaded("b", 3000, 6*gi)},
			existing: []Placement{on("x", "t1", "b")},
			want:     "b"},
		{name: "other tenants do not count",
			hosts:    []Host{host("a"), loaded("b", 3000, 6*gi)},
			existing: []Placement{on("x", "t2", "b")},
			policy:   binpackSpread, want: "b"},
		{name: "spread key replaces the tenant",
			hosts:    []Host{host("a"), host("b")},
			existing: []Placement{{ID: "x", Tenant: "t2", SpreadKey: "web", Host: "a"}},
			req:      func(r *Request) { r.SpreadKey = "web" },
			policy:   binpackSpread, want: "b"},
		{name: "fewer instances win",
			hosts:    []Host{host("a"), host("b"), host("c")},
			existing: []Placement{on("x", "t1", "a"), on("y", "t1", "a"), on("z", "t1", "b")},
			policy:   binpackSpread, want: "c"},
		{name: "existing placement on an unknown host is ignored",
			hosts:    []Host{host("a"), host("b")},
			existing: []Placement{on("x", "t1", "gone")},
			policy:   binpackSpread, want: "a"},
		{name: "zone spread",
			hosts:    []Host{inZone(host("a1"), "a"), inZone(host("a2"), "a"), inZone(host("b1"), "b")},
			existing: []Placement{on("x", "t1", "a1")},
			policy:   binpackSpread, want: "b1"},
		{name: "a fresh host in a busy zone beats a busy host in a fresh zone",
			// Zone a holds 3 instances, zone b 2; host counts are a1 2,
			// a2 0, a3 1, b1 2.
			hosts: []Host{inZone(host("a1"), "a"), inZone(host("a2"), "a"),
				inZone(host("a3"), "a"), inZone(host("b1"), "b")},
			existing: []Placement{on("v", "t1", "a1"), on("w", "t1", "a1"), on("x", "t1", "a3"),
				on("y", "t1", "b1"), on("z", "t1", "b1")},
			policy: binpackSpread, want: "a2"},
		{name: "a host without a zone is a zone of its own",
			hosts: []Host{inZone(host("a1"), "a"), inZone(host("a2"), "a"),
				func() Host { h := host("z"); h.Labels = nil; return h }()},
			existing: []Placement{on("x", "t1", "a1")},
			policy:   binpackSpread, want: "z"},
		{name: "image locality",
			hosts: []Host{host("a"), withImages(host("b"), "img:1")},
			req:   func(r *Request) { r.Images = []string{"img:1"} }, want: "b"},
		{name: "more of the images scores higher",
			hosts: []Host{withImages(host("a"), "img:1"), withImages(host("b"), "img:2", "img:1")},
			req:   func(r *Request) { r.Images = []string{"img:1", "img:2", "img:1"} }, want: "b"},
		{name: "image locality weighs less than a large load difference",
			hosts: []Host{loaded("a", 3000, 7*gi), withImages(host("b"), "img:1", "img:1")},
			req:   func(r *Request) { r.Images = []string{"img:1"} }, want: "a"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := request("i1")
			if tc.req != nil {
				tc.req(&r)
			}
			got, reasons := placedOn(t, Snapshot{Hosts: tc.hosts, Existing: tc.existing}, []Request{r}, tc.policy)
			if got[0] != tc.want {
				t.Fatalf("placed on %q (%s), want %q", got[0], reasons["i1"], tc.want)
			}
		})
	}
}

// TestOneCall checks that a call sees its own earlier placements.
func TestOneCall(t *testing.T) {
	small := func(name string) Host {
		h := host(name)
		h.Capacity.MilliCPU = 1000
		h.DedicatedFree = 1
		return h
	}
	reqs := func(n int, f func(*Request)) []Request {
		var rs []Request
		for k := range n {
			r := request(string(rune('1' + k)))
			if f != nil {
				f(&r)
			}
			rs = append(rs, r)
		}
		return rs
	}
	for _, tc := range []struct {
		name     string
		hosts    []Host
		existing []Placement
		pending  []Request
		policy   Policy
		want     []string
		reasons  map[string]string
	}{
		{name: "cpu is charged",
			hosts:   []Host{small("a"), small("b")},
			pending: reqs(3, func(r *Request) { r.Resources.MilliCPU = 600 }),
			want:    []string{"a", "b", ""},
			reasons: map[string]string{"3": "0/2 hosts available: 2 insufficient cpu."}},
		{name: "dedicated cores are charged",
			hosts:   []Host{small("a"), small("b")},
			pending: reqs(3, func(r *Request) { r.DedicatedCores = 1 }),
			want:    []string{"a", "b", ""},
			reasons: map[string]string{"3": "0/2 hosts available: 2 insufficient dedicated cores."}},
		{name: "binpack stacks on the first placement",
			hosts:   []Host{host("a"), host("b")},
			pending: reqs(3, nil),
			want:    []string{"a", "a", "a"}},
		{name: "spread alternates",
			hosts:   []Host{host("a"), host("b")},
			pending: reqs(3, nil),
			policy:  Policy{Mode: Spread},
			want:    []string{"a", "b", "a"}},
		{name: "tenant spread counts this call's placements",
			hosts:   []Host{host("a"), host("b"), host("c")},
			pending: reqs(4, nil),
			policy:  Policy{TenantSpread: true},
			want:    []string{"a", "b", "c", "a"}},
		{name: "tenant spread keeps tenants apart, not all instances",
			hosts:   []Host{host("a"), host("b")},
			pending: reqs(4, func(r *Request) { r.Tenant = "t" + r.ID }),
			policy:  Policy{TenantSpread: true},
			want:    []string{"a", "a", "a", "a"}},
		{name: "image hits do not leak into the next request",
			hosts: []Host{host("a"), func() Host { h := host("b"); h.Images = []string{"img:1"}; return h }()},
			pending: []Request{
				func() Request { r := request("1"); r.Images = []string{"img:1"}; return r }(),
				func() Request { r := request("2"); r.Images = []string{"img:2"}; return r }(),
			},
			policy: Policy{Mode: Spread},
			want:   []string{"b", "a"}},
		{name: "spread counts do not leak into the next request",
			hosts: []Host{
				func() Host {
					h := host("a")
					h.Allocated.MilliCPU = 3000
					h.Labels = map[string]string{ZoneLabel: "x"}
					return h
				}(),
				func() Host { h := host("b"); h.Labels = map[string]string{ZoneLabel: "y"}; return h }(),
			},
			existing: []Placement{{ID: "x", Tenant: "t1", Host: "a"}},
			pending: []Request{
				request("1"),
				func() Request { r := request("2"); r.Tenant = "t2"; return r }(),
			},
			policy: Policy{TenantSpread: true},
			want:   []string{"b", "a"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, reasons := placedOn(t, Snapshot{Hosts: tc.hosts, Existing: tc.existing}, tc.pending, tc.policy)
			if !slices.Equal(got, tc.want) {
				t.Fatalf("placed on %q, want %q (unplaced: %v)", got, tc.want, reasons)
			}
			for id, want := range tc.reasons {
				if reasons[id] != want {
					t.Errorf("reason for %s: %q, want %q", id, reasons[id], want)
				}
			}
		})
	}
}

func TestPlanOrderAndFields(t *testing.T) {
	h := host("a")
	h.Capacity.MilliCPU = 1000
	pending := []Request{request("1"), request("2"), request("3"), request("4")}
	pending[1].Resources.MilliCPU = 2000 // never fits
	pending[2].SpreadKey = "web"
	plan := Schedule(Snapshot{Hosts: []Host{h}}, pending, Policy{})
	want := Plan{
		Placements: []Placement{
			{ID: "1", Tenant: "t1", Host: "a"},
			{ID: "3", Tenant: "t1", SpreadKey: "web", Host: "a"},
		},
		Unplaced: []Unplaced{
			{ID: "2", Reason: "0/1 hosts available: 1 insufficient cpu.", Filters: []string{"insufficient cpu"}},
			{ID: "4", Reason: "0/1 hosts available: 1 insufficient cpu.", Filters: []string{"insufficient cpu"}},
		},
	}
	if !reflect.DeepEqual(plan, want) {
		t.Fatalf("plan\n %+v, want\n %+v", plan, want)
	}
}

func TestDeterministic(t *testing.T) {
	snap := Snapshot{Hosts: synthHosts(300)}
	pending := synthRequests(500)
	for k := 0; k < 50; k++ {
		snap.Existing = append(snap.Existing, Placement{
			ID: "old" + itoa(k), Tenant: "t" + itoa(k%7), Host: snap.Hosts[(k*37)%len(snap.Hosts)].Name,
		})
	}
	for _, policy := range []Policy{
		{}, {Mode: Spread}, {TenantSpread: true}, {Mode: Spread, TenantSpread: true},
		{TenantSpread: true, MaxCandidates: 20},
	} {
		first := Schedule(snap, pending, policy)
		if len(first.Placements) < len(pending)/2 || len(first.Unplaced) == 0 {
			t.Fatalf("%+v: %d placed, %d unplaced: the synthetic load should exercise both",
				policy, len(first.Placements), len(first.Unplaced))
		}
		if again := Schedule(snap, pending, policy); !reflect.DeepEqual(first, again) {
			t.Fatalf("%+v: two runs differ", policy)
		}
		// The order of the hosts in the snapshot must not matter.
		shuffled := snap
		shuffled.Hosts = slices.Clone(snap.Hosts)
		slices.Reverse(shuffled.Hosts)
		shuffled.Hosts = append(shuffled.Hosts[100:], shuffled.Hosts[:100]...)
		if other := Schedule(shuffled, pending, policy); !reflect.DeepEqual(first, other) {
			t.Fatalf("%+v: host order changes the plan", policy)
		}
	}
}

// Counts is Existing in aggregate: a snapshot giving the same placements
// either way gets the same plan, and one without them another plan.
func TestCountsMatchExisting(t *testing.T) {
	hosts := synthHosts(60)
	pending := synthRequests(200)
	listed := Snapshot{Hosts: hosts}
	counted := Snapshot{Hosts: hosts, Counts: map[string]map[string]int{}}
	for k := 0; k < 400; k++ {
		tenant, host := "t"+itoa(k%5), hosts[(k*13)%len(hosts)].Name
		listed.Existing = append(listed.Existing, Placement{ID: "old" + itoa(k), Tenant: tenant, Host: host})
		if counted.Counts[tenant] == nil {
			counted.Counts[tenant] = map[string]int{}
		}
		counted.Counts[tenant][host]++
	}
	policy := Policy{Mode: Spread, TenantSpread: true}
	want := Schedule(listed, pending, policy)
	if got := Schedule(counted, pending, policy); !reflect.DeepEqual(got, want) {
		t.Fatalf("plan from Counts differs from the plan from Existing")
	}
	if none := Schedule(Snapshot{Hosts: hosts}, pending, policy); reflect.DeepEqual(none, want) {
		t.Fatal("the existing placements change nothing; the test would not notice Counts being ignored")
	}
}

func TestNoMutation(t *testing.T) {
	snap := Snapshot{Hosts: synthHosts(50)}
	snap.Existing = []Placement{{ID: "x", Tenant: "t1", Host: snap.Hosts[3].Name}}
	pending := synthRequests(80)
	wantSnap, wantPending := cloneSnapshot(snap), cloneRequests(pending)

	plan := Schedule(snap, pending, Policy{TenantSpread: true})
	if len(plan.Placements) == 0 {
		t.Fatal("nothing placed; the test would not notice a mutation")
	}
	if !reflect.DeepEqual(snap, wantSnap) {
		t.Fatal("Schedule modified the snapshot")
	}
	if !reflect.DeepEqual(pending, wantPending) {
		t.Fatal("Schedule modified the pending requests")
	}
	// And a second call on the same snapshot sees no trace of the first.
	if again := Schedule(snap, pending, Policy{TenantSpread: true}); !reflect.DeepEqual(plan, again) {
		t.Fatal("a second call on the same snapshot gives another plan")
	}
}

func cloneSnapshot(s Snapshot) Snapshot {
	out := Snapshot{Existing: slices.Clone(s.Existing)}
	for _, h := range s.Hosts {
		c := h
		if h.Labels != nil {
			c.Labels = make(map[string]string, len(h.Labels))
			for k, v := range h.Labels {
				c.Labels[k] = v
			}
		}
		c.RuntimeClasses = slices.Clone(h.RuntimeClasses)
		c.Capabilities = slices.Clone(h.Capabilities)
		c.Images = slices.Clone(h.Images)
		out.Hosts = append(out.Hosts, c)
	}
	return out
}

func cloneRequests(rs []Request) []Request {
	var out []Request
	for _, r := range rs {
		c := r
		if r.Selector != nil {
			c.Selector = make(map[string]string, len(r.Selector))
			for k, v := range r.Selector {
				c.Selector[k] = v
			}
		}
		c.Requires = slices.Clone(r.Requires)
		c.Images = slices.Clone(r.Images)
		out = append(out, c)
	}
	return out
}

func TestMaxCandidates(t *testing.T) {
	hosts := make([]Host, 10)
	for i := range hosts {
		hosts[i] = host("h" + itoa(i))
	}
	hosts[7].Allocated.MilliCPU = 2000 // the best bin-packing choice
	snap := Snapshot{Hosts: hosts}
	pending := []Request{request("1"), request("2"), request("3")}

	got, _ := placedOn(t, snap, pending, Policy{MaxCandidates: len(hosts)})
	if want := []string{"h7", "h7", "h7"}; !slices.Equal(got, want) {
		t.Fatalf("with every host a candidate: %q, want %q", got, want)
	}

	// With one candidate each, requests land where their search starts:
	// not all on the best host, and the same way every time.
	got, _ = placedOn(t, snap, pending, Policy{MaxCandidates: 1})
	if slices.Equal(got, []string{"h7", "h7", "h7"}) {
		t.Fatalf("with one candidate: %q, the search did not stop", got)
	}
	again, _ := placedOn(t, snap, pending, Policy{MaxCandidates: 1})
	if !slices.Equal(got, again) {
		t.Fatalf("with one candidate: %q, then %q", got, again)
	}

	// The limit counts feasible hosts: infeasible ones are skipped, and a
	// request that fits nowhere still gets every host's reason.
	for i := range hosts {
		if i != 4 {
			hosts[i].Cordoned = true
		}
	}
	got, _ = placedOn(t, snap, pending[:1], Policy{MaxCandidates: 1})
	if got[0] != "h4" {
		t.Fatalf("placed on %q, want the only feasible host h4", got[0])
	}
	hosts[4].Ready = false
	_, reasons := placedOn(t, snap, pending[:1], Policy{MaxCandidates: 1})
	if want := "0/10 hosts available: 9 cordoned, 1 not ready."; reasons["1"] != want {
		t.Fatalf("reason %q, want %q", reasons["1"], want)
	}
}

// TestManyTerms checks the filters past the 64 runtime classes,
// capabilities and selector terms that get a bit each.
func TestManyTerms(t *testing.T) {
	const n = 70
	var hosts []Host
	var pending []Request
	for i := range n {
		h := host("h" + itoa(100+i))
		h.RuntimeClasses = []string{"rc" + itoa(i)}
		h.Capabilities = []string{"cap" + itoa(i)}
		h.Labels = map[string]string{"k": "v" + itoa(i)}
		hosts = append(hosts, h)
		r := request("r" + itoa(i))
		r.RuntimeClass = "rc" + itoa(i)
		r.Requires = []string{"cap" + itoa(i)}
		r.Selector = map[string]string{"k": "v" + itoa(i)}
		pending = append(pending, r)
	}
	misfits := []Request{request("class"), request("cap"), request("sel")}
	misfits[0].RuntimeClass = "rc69"
	misfits[0].Requires = []string{"cap1"}
	misfits[1].Requires = []string{"cap69", "cap68"}
	misfits[2].RuntimeClass = "rc68"
	misfits[2].Selector = map[string]string{"k": "v69"}
	got, reasons := placedOn(t, Snapshot{Hosts: hosts}, append(pending, misfits...), Policy{})
	for i := range n {
		if want := "h" + itoa(100+i); got[i] != want {
			t.Errorf("r%d placed on %q (%s), want %q", i, got[i], reasons["r"+itoa(i)], want)
		}
	}
	for id, want := range map[string]string{
		"class": "0/70 hosts available: 69 runtime class rc69 not offered, 1 missing capability cap1.",
		"cap":   "0/70 hosts available: 69 missing capability cap69, 1 missing capability cap68.",
		"sel":   "0/70 hosts available: 69 runtime class rc68 not offered, 1 selector mismatch.",
	} {
		if reasons[id] != want {
			t.Errorf("%s: reason %q, want %q", id, reasons[id], want)
		}
	}
}

func TestInstanceLimit(t *testing.T) {
	h := host("a")
	h.Capacity.Instances = 2
	h.Allocated.Instances = 1
	reqs := []Request{request("1"), request("2"), request("3")}
	for i := range reqs {
		reqs[i].Resources.Instances = 1
	}
	reqs[2].Resources.Instances = 0 // a host without a limit asks none
	got, reasons := placedOn(t, Snapshot{Hosts: []Host{h}}, reqs, Policy{})
	if got[0] != "a" || got[1] != "" || got[2] != "a" {
		t.Fatalf("placed on %q, want a, nowhere, a", got)
	}
	if reasons["2"] != "0/1 hosts available: 1 too many instances." {
		t.Fatalf("reason %q", reasons["2"])
	}
}
