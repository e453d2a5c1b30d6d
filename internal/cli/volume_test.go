package cli

import (
	"strings"
	"testing"

	"github.com/kanga-run/kanga/api"
)

// -v NAME:/PATH[:ro] mounts a volume the spec declares, else declares a
// persistent volume of that name; bad forms are errors naming the flag.
func TestVolumeMountsFlag(t *testing.T) {
	req := func() *api.CreateInstanceRequest {
		return &api.CreateInstanceRequest{Spec: api.InstanceSpec{
			Containers: []api.ContainerSpec{{Name: "a"}, {Name: "b"}},
			Volumes:    []api.Volume{{Name: "scratch", Config: &api.ObjectVolumeSource{Name: "c"}}},
		}}
	}
	r := req()
	if err := volumeMounts(r, []string{"data:/data", "scratch:/tmp/s:ro", "data2:/d2:rw"}); err != nil {
		t.Fatal(err)
	}
	if n := len(r.Spec.Volumes); n != 3 || r.Spec.Volumes[1].PersistentVolume == nil || r.Spec.Volumes[1].PersistentVolume.Name != "data" ||
		r.Spec.Volumes[2].PersistentVolume.Name != "data2" {
		t.Fatalf("volumes = %+v", r.Spec.Volumes)
	}
	for _, c := range r.Spec.Containers {
		if len(c.VolumeMounts) != 3 || c.VolumeMounts[0] != (api.VolumeMount{Name: "data", MountPath: "/data"}) ||
			c.VolumeMounts[1] != (api.VolumeMount{Name: "scratch", MountPath: "/tmp/s", ReadOnly: true}) || c.VolumeMounts[2].ReadOnly {
			t.Errorf("container %s mounts %+v", c.Name, c.VolumeMounts)
		}
	}
	for _, bad := range []string{"data", "data:rel", ":/x", "data:/x:rx", "a:/b:ro:x"} {
		if err := volumeMounts(req(), []string{bad}); err == nil || !strings.Contains(err.Error(), "-v") {
			t.Errorf("-v %q: %v, want an error naming -v", bad, err)
		}
	}
}
