package controlplane

import (
	"testing"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/internal/scheduler"
)

// The images hosts report reach the scheduler's locality score through
// hostOf and requestOf: two identical hosts, where the tie-break alone
// picks "a", so "b" wins only on its images.
func TestImageLocality(t *testing.T) {
	busybox := api.HostImage{Tenant: "t1", Name: "docker.io/library/busybox:latest", Digest: "sha256:aa"}
	tests := []struct {
		name     string
		image    string // the instance's image as written
		onB      []api.HostImage
		wantHost string
	}{
		{"no images reported: tie-break", "busybox", nil, "a"},
		{"b holds the tenant's image", "busybox", []api.HostImage{busybox}, "b"},
		{"spelled in full", "docker.io/library/busybox:latest", []api.HostImage{busybox}, "b"},
		{"another tenant's copy does not count", "busybox",
			[]api.HostImage{{Tenant: "t2", Name: busybox.Name, Digest: busybox.Digest}}, "a"},
		{"another image does not count", "busybox",
			[]api.HostImage{{Tenant: "t1", Name: "docker.io/library/alpine:latest"}}, "a"},
		{"another tag does not count", "busybox:1.36", []api.HostImage{busybox}, "a"},
		{"unparsable ref matches nothing", "Bad Ref", []api.HostImage{busybox}, "a"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var hosts []scheduler.Host
			for _, name := range []string{"a", "b"} {
				h := &api.Host{Name: name, RuntimeClasses: []string{"runc"},
					Capacity: api.HostCapacity{CPUs: 2, MemoryBytes: 4 << 30},
					Status:   api.HostStatus{Phase: api.HostReady}}
				if name == "b" {
					h.Images = tt.onB
				}
				hosts = append(hosts, hostOf(h, nil))
			}
			inst := &api.Instance{Name: "i", Tenant: "t1", Spec: api.InstanceSpec{
				Containers: []api.ContainerSpec{{Name: "main", Image: tt.image}}, Runtime: "runc"}}
			req, err := requestOf("t1/i", inst)
			if err != nil {
				t.Fatal(err)
			}
			plan := scheduler.Schedule(scheduler.Snapshot{Hosts: hosts}, []scheduler.Request{req}, DefaultPolicy)
			if len(plan.Placements) != 1 {
				t.Fatalf("plan = %+v, want one placement", plan)
			}
			if got := plan.Placements[0].Host; got != tt.wantHost {
				t.Fatalf("placed on %s, want %s", got, tt.wantHost)
			}
		})
	}
}
