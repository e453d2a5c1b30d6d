package cli

import (
	"reflect"
	"strings"
	"testing"

	"github.com/kanga-run/kanga/api"
)

// TestStorageFlags: --tmpfs (storageFlags) and -v (volumeMounts), as run
// applies them.
func TestStorageFlags(t *testing.T) {
	base := func() api.CreateInstanceRequest {
		return api.CreateInstanceRequest{Spec: api.InstanceSpec{
			Containers: []api.ContainerSpec{{Name: "a"}, {Name: "b"}},
			Volumes:    []api.Volume{{Name: "scratch", EmptyDir: &api.EmptyDirVolumeSource{SizeLimit: "64Mi"}}},
		}}
	}
	for _, tc := range []struct {
		name       string
		tmpfs, vol []string
		wantVols   []api.Volume // appended to base's
		wantMounts []api.VolumeMount
		wantErr    string
	}{
		{name: "tmpfs with size", tmpfs: []string{"/tmp/x:size=64Mi"},
			wantVols:   []api.Volume{{Name: "tmpfs-0", EmptyDir: &api.EmptyDirVolumeSource{Medium: api.MediumMemory, SizeLimit: "64Mi"}}},
			wantMounts: []api.VolumeMount{{Name: "tmpfs-0", MountPath: "/tmp/x"}}},
		{name: "tmpfs default size, ro", tmpfs: []string{"/run/cache:ro"},
			wantVols:   []api.Volume{{Name: "tmpfs-0", EmptyDir: &api.EmptyDirVolumeSource{Medium: api.MediumMemory}}},
			wantMounts: []api.VolumeMount{{Name: "tmpfs-0", MountPath: "/run/cache", ReadOnly: true}}},
		{name: "declared emptyDir", vol: []string{"scratch:/data"},
			wantMounts: []api.VolumeMount{{Name: "scratch", MountPath: "/data"}}},
		{name: "declared emptyDir ro", vol: []string{"scratch:/data:ro"},
			wantMounts: []api.VolumeMount{{Name: "scratch", MountPath: "/data", ReadOnly: true}}},
		{name: "tmpfs relative", tmpfs: []string{"tmp"}, wantErr: "give an absolute path"},
		{name: "tmpfs bad option", tmpfs: []string{"/t:noexec"}, wantErr: `option "noexec"`},
		{name: "tmpfs empty size", tmpfs: []string{"/t:size="}, wantErr: "size= needs a quantity"},
		{name: "undeclared is a persistent volume", vol: []string{"cache:/data"},
			wantVols:   []api.Volume{{Name: "cache", PersistentVolume: &api.PersistentVolumeSource{Name: "cache"}}},
			wantMounts: []api.VolumeMount{{Name: "cache", MountPath: "/data"}}},
		{name: "volume no path", vol: []string{"scratch"}, wantErr: "give NAME:/PATH"},
		{name: "volume relative path", vol: []string{"scratch:data"}, wantErr: "give NAME:/PATH"},
		{name: "volume bad mode", vol: []string{"scratch:/data:rx"}, wantErr: "ro or rw"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := base()
			err := storageFlags(&req, tc.tmpfs)
			if err == nil {
				err = volumeMounts(&req, tc.vol)
			}
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if want := append(base().Spec.Volumes, tc.wantVols...); !reflect.DeepEqual(req.Spec.Volumes, want) {
				t.Errorf("volumes = %+v, want %+v", req.Spec.Volumes, want)
			}
			for _, c := range req.Spec.Containers {
				if !reflect.DeepEqual(c.VolumeMounts, tc.wantMounts) {
					t.Errorf("container %s mounts = %+v, want %+v", c.Name, c.VolumeMounts, tc.wantMounts)
				}
			}
		})
	}
}
