package controlplane

import (
	"testing"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/internal/scheduler"
)

// A create that meets only hosts that are not ready for a moment must keep
// waiting (HostNotReady), not be reported Unschedulable, which ends a
// client's wait for Running (issue 22).
func TestUnplacedStatusTransient(t *testing.T) {
	inst := &api.Instance{Spec: api.InstanceSpec{Runtime: "runc"}}
	for _, tc := range []struct {
		name    string
		filters []string
		want    string
	}{
		{"only host not ready", []string{"not ready"}, ReasonHostNotReady},
		{"not ready and full", []string{"not ready", "insufficient memory"}, ReasonUnschedulable},
		{"cordoned", []string{"cordoned"}, ReasonUnschedulable},
		{"cores taken", []string{"insufficient cpu"}, ReasonInsufficientCPU},
		{"dedicated cores taken", []string{"insufficient dedicated cores"}, ReasonInsufficientCPU},
		{"cores taken everywhere, some dedicated", []string{"insufficient cpu", "insufficient dedicated cores"}, ReasonInsufficientCPU},
		{"memory short", []string{"insufficient memory"}, api.ReasonInsufficientMemory},
		{"pids short", []string{"insufficient pids"}, api.ReasonInsufficientPids},
		{"bandwidth short", []string{"insufficient bandwidth"}, api.ReasonInsufficientBandwidth},
		{"disk short", []string{"insufficient disk"}, api.ReasonInsufficientDisk},
		{"devices short", []string{"insufficient nvidia.com/gpu"}, api.ReasonInsufficientDevices},
		{"hosts full of instances", []string{"too many instances"}, api.ReasonInsufficientInstances},
		{"memory short, other host volumes' elsewhere", []string{scheduler.NotVolumeHost, "insufficient memory"}, api.ReasonInsufficientMemory},
		{"different resources short", []string{"insufficient cpu", "insufficient memory"}, ReasonUnschedulable},
		{"short and cordoned", []string{"insufficient memory", "cordoned"}, ReasonUnschedulable},
		{"selector mismatch", []string{"selector mismatch"}, ReasonUnschedulable},
		{"no hosts", nil, ReasonUnschedulable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reason, msg := unplacedStatus(inst, scheduler.Unplaced{Filters: tc.filters, Reason: "0/1 hosts available: 1 " + "x."})
			if reason != tc.want {
				t.Errorf("reason = %s, want %s", reason, tc.want)
			}
			if msg == "" {
				t.Error("no message")
			}
		})
	}
}
