package scheduler

import (
	"strings"
	"testing"
)

// An instance bound to its volumes' host goes there and nowhere else, and
// when that host cannot take it the reason says which host and why.
func TestVolumeHost(t *testing.T) {
	cordonedB := host("b")
	cordonedB.Cordoned = true
	downB := host("b")
	downB.Ready = false
	fullB := host("b")
	fullB.Allocated = fullB.Capacity
	for _, tt := range []struct {
		name      string
		hosts     []Host
		want      string // host, or "" for unplaced
		wantInMsg []string
	}{
		{"placed on the volume host though a is emptier", []Host{host("a"), host("b"), host("c")}, "b", nil},
		{"cordoned", []Host{host("a"), cordonedB}, "", []string{"volumes are on host b", "1 cordoned", "1 " + NotVolumeHost}},
		{"down", []Host{host("a"), downB}, "", []string{"volumes are on host b", "1 not ready"}},
		{"full", []Host{host("a"), fullB}, "", []string{"volumes are on host b", "1 insufficient cpu"}},
		{"gone", []Host{host("a"), host("c")}, "", []string{"host b, which is not a known host", "2 " + NotVolumeHost}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := request("r1")
			r.Host = "b"
			got, reasons := placedOn(t, Snapshot{Hosts: tt.hosts}, []Request{r}, Policy{Mode: Spread})
			if got[0] != tt.want {
				t.Fatalf("placed on %q, want %q (reason %q)", got[0], tt.want, reasons["r1"])
			}
			for _, w := range tt.wantInMsg {
				if !strings.Contains(reasons["r1"], w) {
					t.Errorf("reason %q does not say %q", reasons["r1"], w)
				}
			}
		})
	}
}
