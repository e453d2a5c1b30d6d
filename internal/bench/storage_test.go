package bench

import (
	"testing"

	"github.com/kanga-run/kanga/api"
)

func TestStorageApply(t *testing.T) {
	s := &Storage{EmptyDir: "64Mi", Config: "bench"}
	if got, want := s.Name(), PathKanga+" + emptyDir disk 64Mi + config file"; got != want {
		t.Errorf("Name = %q, want %q", got, want)
	}
	spec := api.InstanceSpec{Containers: []api.ContainerSpec{{Name: "main"}}}
	s.apply(&spec)
	if len(spec.Volumes) != 2 || spec.Volumes[0].EmptyDir == nil || spec.Volumes[0].EmptyDir.SizeLimit != "64Mi" ||
		spec.Volumes[1].Config == nil || spec.Volumes[1].Config.Name != "bench" {
		t.Fatalf("volumes %+v", spec.Volumes)
	}
	m := spec.Containers[0].VolumeMounts
	if len(m) != 2 || m[0].MountPath != "/scratch" || m[1].MountPath != ConfigMountPath {
		t.Errorf("mounts %+v", m)
	}
	var none *Storage
	plain := api.InstanceSpec{Containers: []api.ContainerSpec{{Name: "main"}}}
	none.apply(&plain)
	if len(plain.Volumes) != 0 || plain.Resources.Disk != "" {
		t.Errorf("a nil Storage changed the spec: %+v", plain)
	}
}
