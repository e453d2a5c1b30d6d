package agent

import (
	"reflect"
	"testing"

	"github.com/opencontainers/runtime-spec/specs-go"

	"github.com/kanga-run/kanga/api"
)

// Each container binds the instance's mount of a persistent volume at its
// own paths, read-only where it asks; the volume itself is mounted
// read-only only when every mount of it is.
func TestPersistentVolumeMounts(t *testing.T) {
	a := &Agent{cfg: Config{DataDir: "/d"}}
	inst := &api.Instance{UID: "u1",
		PersistentVolumes: []api.BoundVolume{{Name: "data", ID: "pv-1", Host: "h"}, {Name: "logs", ID: "pv-2", Host: "h"}},
		Spec: api.InstanceSpec{
			Volumes: []api.Volume{
				{Name: "d", PersistentVolume: &api.PersistentVolumeSource{Name: "data"}},
				{Name: "l", PersistentVolume: &api.PersistentVolumeSource{Name: "logs"}},
				{Name: "cfg", Config: &api.ObjectVolumeSource{Name: "c"}},
			},
			Containers: []api.ContainerSpec{
				{Name: "app", VolumeMounts: []api.VolumeMount{{Name: "d", MountPath: "/data"}, {Name: "l", MountPath: "/logs", ReadOnly: true}, {Name: "cfg", MountPath: "/etc/c"}}},
				{Name: "side", VolumeMounts: []api.VolumeMount{{Name: "d", MountPath: "/in", ReadOnly: true}, {Name: "l", MountPath: "/logs", ReadOnly: true}}},
			},
		}}
	got := a.pvSpecMounts(inst, inst.Spec.Containers[0])
	want := []specs.Mount{
		{Destination: "/data", Type: "bind", Source: "/d/pvmounts/u1/data", Options: []string{"rbind", "rprivate", "nosuid", "nodev", "rw"}},
		{Destination: "/logs", Type: "bind", Source: "/d/pvmounts/u1/logs", Options: []string{"rbind", "rprivate", "nosuid", "nodev", "ro"}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("app's mounts = %+v, want %+v", got, want)
	}
	if got := a.pvSpecMounts(inst, inst.Spec.Containers[1]); len(got) != 2 || got[0].Options[4] != "ro" || got[0].Destination != "/in" {
		t.Errorf("side's mounts = %+v", got)
	}
	if readOnlyVolume(inst, "data") {
		t.Error("data is mounted read-write by app, but the volume would be read-only")
	}
	if !readOnlyVolume(inst, "logs") {
		t.Error("logs is mounted read-only everywhere, but the volume would be writable")
	}
}
