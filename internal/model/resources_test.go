package model

import (
	"errors"
	"strings"
	"testing"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
)

func TestParseResources(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   api.Resources
		want Resources
		errs []string // fields named in the error, in order; none: no error
	}{
		{name: "empty", in: api.Resources{}, want: Resources{}},
		{
			name: "every field",
			in: api.Resources{CPU: "500m", CPULimit: "2", Memory: "256Mi", Pids: 100,
				DiskReadBPS: "10Mi", DiskWriteBPS: "1M", DiskReadIOPS: 200, DiskWriteIOPS: 300,
				IngressBandwidth: "5M", EgressBandwidth: "100kbit", LogSize: "10Mi", LogFiles: 3},
			want: Resources{MilliCPU: 500, MilliCPULimit: 2000, Memory: 256 << 20, Pids: 100,
				DiskReadBPS: 10 << 20, DiskWriteBPS: 1e6, DiskReadIOPS: 200, DiskWriteIOPS: 300,
				IngressBPS: 5e6, EgressBPS: 1e5, LogSize: 10 << 20, LogFiles: 3},
		},
		{name: "shared", in: api.Resources{CPU: "1.5", CPUPolicy: CPUPolicyShared}, want: Resources{MilliCPU: 1500}},
		{name: "dedicated", in: api.Resources{CPU: "2", CPUPolicy: CPUPolicyDedicated}, want: Resources{MilliCPU: 2000, DedicatedCores: 2}},
		{name: "dedicated in millicores", in: api.Resources{CPU: "1000m", CPUPolicy: CPUPolicyDedicated}, want: Resources{MilliCPU: 1000, DedicatedCores: 1}},
		// An instance of no size is one core (the control plane and the
		// agent agree); Validate asks the tenant for a size.
		{name: "dedicated without cpu", in: api.Resources{CPUPolicy: CPUPolicyDedicated}, want: Resources{DedicatedCores: 1}},
		{name: "dedicated fraction", in: api.Resources{CPU: "1.5", CPUPolicy: CPUPolicyDedicated}, want: Resources{MilliCPU: 1500}, errs: []string{"spec.resources.cpu"}},
		{name: "unknown policy", in: api.Resources{CPU: "1", CPUPolicy: "burst"}, want: Resources{MilliCPU: 1000}, errs: []string{"spec.resources.cpuPolicy"}},
		{
			// Every bad field is named; the good ones are still set.
			name: "bad fields",
			in:   api.Resources{CPU: "fast", Memory: "1Gi", DiskWriteBPS: "lots", EgressBandwidth: "1", LogSize: "-1", Pids: 10},
			want: Resources{Memory: 1 << 30, Pids: 10},
			errs: []string{"spec.resources.cpu:", "spec.resources.diskWriteBps:", "spec.resources.egressBandwidth:", "spec.resources.logSize:"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseResources(tc.in)
			if got != tc.want {
				t.Errorf("ParseResources = %+v, want %+v", got, tc.want)
			}
			if len(tc.errs) == 0 {
				if err != nil {
					t.Fatalf("err = %v", err)
				}
				return
			}
			if !errors.Is(err, errdefs.ErrInvalidArgument) {
				t.Fatalf("err = %v, want an InvalidArgument", err)
			}
			lines := strings.Split(err.Error(), "\n")
			if len(lines) != len(tc.errs) {
				t.Fatalf("err = %q, want %d errors naming %q", err, len(tc.errs), tc.errs)
			}
			for i, field := range tc.errs {
				if !strings.HasPrefix(lines[i], field) {
					t.Errorf("error %d is %q, want it to start with %s", i, lines[i], field)
				}
			}
		})
	}
}

func TestCPUQuotaMilli(t *testing.T) {
	for _, tc := range []struct {
		r    Resources
		want int64
	}{
		{Resources{}, 0},
		{Resources{MilliCPU: 500}, 500},
		{Resources{MilliCPULimit: 2000}, 2000},
		// The cap, not the reservation: the instance may burst to it.
		{Resources{MilliCPU: 500, MilliCPULimit: 2000}, 2000},
	} {
		if got := tc.r.CPUQuotaMilli(); got != tc.want {
			t.Errorf("%+v.CPUQuotaMilli() = %d, want %d", tc.r, got, tc.want)
		}
	}
}

// BenchmarkParseResources is the cost of a reader's parse of a full spec
// (go test -bench ParseResources ./internal/model/).
func BenchmarkParseResources(b *testing.B) {
	in := api.Resources{CPU: "500m", CPULimit: "2", Memory: "256Mi", Pids: 100, DiskReadBPS: "10Mi",
		IngressBandwidth: "5M", EgressBandwidth: "100kbit", LogSize: "10Mi", LogFiles: 3}
	for b.Loop() {
		if _, err := ParseResources(in); err != nil {
			b.Fatal(err)
		}
	}
}
