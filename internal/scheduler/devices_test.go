package scheduler

import (
	"reflect"
	"testing"
)

// gpuHost has two exclusive GPUs (0 and 1) and a shareable mock device.
func gpuHost(name string, held ...string) Host {
	h := host(name)
	free := 2 - len(held)
	h.Devices = []DeviceFree{
		{Kind: "nvidia.com/gpu", Free: free, Names: []string{"nvidia.com/gpu=0", "nvidia.com/gpu=1"}, Held: held},
		{Kind: "kanga.dev/mock", Names: []string{"kanga.dev/mock=m0"}, Shareable: []string{"kanga.dev/mock=m0"}},
	}
	return h
}

func withDevices(id string, ds ...DeviceRequest) Request {
	r := request(id)
	r.Devices = ds
	return r
}

func TestDevices(t *testing.T) {
	gpus := func(n int) DeviceRequest { return DeviceRequest{Kind: "nvidia.com/gpu", Count: n} }
	named := func(n string) DeviceRequest {
		return DeviceRequest{Kind: "nvidia.com/gpu", Name: "nvidia.com/gpu=" + n, Count: 1}
	}
	mock := DeviceRequest{Kind: "kanga.dev/mock", Count: 1}
	for _, tc := range []struct {
		name    string
		hosts   []Host
		pending []Request
		want    []string
		reasons map[string]string
	}{
		{
			name:    "a host without the kind",
			hosts:   []Host{host("h1")},
			pending: []Request{withDevices("r", gpus(1))},
			want:    []string{""},
			reasons: map[string]string{"r": "0/1 hosts available: 1 insufficient nvidia.com/gpu."},
		},
		{
			name:    "counts use up the kind within one call",
			hosts:   []Host{gpuHost("h1")},
			pending: []Request{withDevices("a", gpus(1)), withDevices("b", gpus(1)), withDevices("c", gpus(1))},
			want:    []string{"h1", "h1", ""},
			reasons: map[string]string{"c": "0/1 hosts available: 1 insufficient nvidia.com/gpu."},
		},
		{
			name:    "two at once fit only where two are free",
			hosts:   []Host{gpuHost("h1", "nvidia.com/gpu=0"), gpuHost("h2")},
			pending: []Request{withDevices("a", gpus(2))},
			want:    []string{"h2"},
		},
		{
			name:    "a held name is unavailable; another host has it",
			hosts:   []Host{gpuHost("h1", "nvidia.com/gpu=1"), gpuHost("h2", "nvidia.com/gpu=1")},
			pending: []Request{withDevices("a", named("1"))},
			want:    []string{""},
			reasons: map[string]string{"a": "0/2 hosts available: 2 device nvidia.com/gpu=1 unavailable."},
		},
		{
			name:    "a name and a count share the kind's free devices",
			hosts:   []Host{gpuHost("h1")},
			pending: []Request{withDevices("a", named("0")), withDevices("b", gpus(1)), withDevices("c", named("1"))},
			want:    []string{"h1", "h1", ""},
		},
		{
			name:    "the same name twice in one call",
			hosts:   []Host{gpuHost("h1")},
			pending: []Request{withDevices("a", named("0")), withDevices("b", named("0"))},
			want:    []string{"h1", ""},
		},
		{
			name:    "shareable devices serve any count",
			hosts:   []Host{gpuHost("h1")},
			pending: []Request{withDevices("a", mock), withDevices("b", mock), withDevices("c", DeviceRequest{Kind: "kanga.dev/mock", Name: "kanga.dev/mock=m0", Count: 1})},
			want:    []string{"h1", "h1", "h1"},
		},
		{
			name:    "more shareable devices than the kind has",
			hosts:   []Host{gpuHost("h1")},
			pending: []Request{withDevices("a", DeviceRequest{Kind: "kanga.dev/mock", Count: 2})},
			want:    []string{""},
			reasons: map[string]string{"a": "0/1 hosts available: 1 insufficient kanga.dev/mock."},
		},
		{
			name:    "an unknown name",
			hosts:   []Host{gpuHost("h1")},
			pending: []Request{withDevices("a", named("7"))},
			want:    []string{""},
			reasons: map[string]string{"a": "0/1 hosts available: 1 device nvidia.com/gpu=7 unavailable."},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			snap := Snapshot{Hosts: tc.hosts}
			before := cloneDevices(tc.hosts)
			got, reasons := placedOn(t, snap, tc.pending, Policy{})
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("placed on %q, want %q (reasons %v)", got, tc.want, reasons)
			}
			for id, want := range tc.reasons {
				if reasons[id] != want {
					t.Errorf("reason of %s: %q, want %q", id, reasons[id], want)
				}
			}
			if !reflect.DeepEqual(cloneDevices(tc.hosts), before) {
				t.Errorf("Schedule changed the snapshot's devices")
			}
		})
	}
}

func cloneDevices(hs []Host) [][]DeviceFree {
	var out [][]DeviceFree
	for _, h := range hs {
		var ds []DeviceFree
		for _, d := range h.Devices {
			d.Held = append([]string(nil), d.Held...)
			ds = append(ds, d)
		}
		out = append(out, ds)
	}
	return out
}
