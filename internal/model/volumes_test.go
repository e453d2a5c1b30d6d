package model

import (
	"errors"
	"strings"
	"testing"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
)

func TestValidateCreateVolume(t *testing.T) {
	for _, tt := range []struct {
		req      api.CreateVolumeRequest
		wantSize int64
		wantErr  string // the field the 400 names
	}{
		{api.CreateVolumeRequest{Name: "data", Size: "1Gi"}, 1 << 30, ""},
		{api.CreateVolumeRequest{Name: "data", Size: "16Mi"}, 16 << 20, ""},
		{api.CreateVolumeRequest{Name: "data", Size: "1Ti", Host: "h-1"}, 1 << 40, ""},
		{api.CreateVolumeRequest{Name: "", Size: "1Gi"}, 0, "name is empty"},
		{api.CreateVolumeRequest{Name: "Data", Size: "1Gi"}, 0, "name \"Data\""},
		{api.CreateVolumeRequest{Name: "a/b", Size: "1Gi"}, 0, "name \"a/b\""},
		{api.CreateVolumeRequest{Name: strings.Repeat("a", 64), Size: "1Gi"}, 0, "name"},
		{api.CreateVolumeRequest{Name: "data"}, 0, "size is empty"},
		{api.CreateVolumeRequest{Name: "data", Size: "15Mi"}, 0, "size \"15Mi\" is out of range"},
		{api.CreateVolumeRequest{Name: "data", Size: "2Ti"}, 0, "size \"2Ti\" is out of range"},
		{api.CreateVolumeRequest{Name: "data", Size: "-1Gi"}, 0, "size \"-1Gi\""},
		{api.CreateVolumeRequest{Name: "data", Size: "lots"}, 0, "size \"lots\" is not a size"},
		{api.CreateVolumeRequest{Name: "data", Size: "1Gi", Host: "../h"}, 0, "host"},
	} {
		size, err := ValidateCreateVolume(&tt.req)
		if tt.wantErr == "" {
			if err != nil || size != tt.wantSize {
				t.Errorf("%+v: %d, %v; want %d", tt.req, size, err, tt.wantSize)
			}
			continue
		}
		if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.HasPrefix(err.Error(), tt.wantErr) {
			t.Errorf("%+v: %v; want an InvalidArgument starting %q", tt.req, err, tt.wantErr)
		}
	}
}

func TestPersistentVolumeSpec(t *testing.T) {
	spec := func(vols []api.Volume, mounts ...api.VolumeMount) *api.InstanceSpec {
		return &api.InstanceSpec{
			Containers: []api.ContainerSpec{{Name: "c", Image: "busybox", VolumeMounts: mounts}},
			Volumes:    vols,
		}
	}
	pv := func(name, vol string) api.Volume {
		return api.Volume{Name: name, PersistentVolume: &api.PersistentVolumeSource{Name: vol}}
	}
	for _, tt := range []struct {
		name    string
		spec    *api.InstanceSpec
		wantErr string
	}{
		{"ok", spec([]api.Volume{pv("data", "data")}, api.VolumeMount{Name: "data", MountPath: "/data"}), ""},
		{"bad volume name", spec([]api.Volume{pv("data", "Data")}), "spec.volumes[0].persistentVolume.name"},
		{"empty volume name", spec([]api.Volume{pv("data", "")}), "spec.volumes[0].persistentVolume.name is empty"},
		{"one volume twice", spec([]api.Volume{pv("a", "data"), pv("b", "data")}), "spec.volumes[1].persistentVolume.name \"data\" is also the volume of spec.volumes[0]"},
		{"two sources", spec([]api.Volume{{Name: "a", PersistentVolume: &api.PersistentVolumeSource{Name: "d"}, Config: &api.ObjectVolumeSource{Name: "c"}}}), "spec.volumes[0] has 2 sources"},
		{"mount over /proc", spec([]api.Volume{pv("data", "data")}, api.VolumeMount{Name: "data", MountPath: "/proc/x"}), "spec.containers[0].volumeMounts[0].mountPath"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			errs := validateVolumes(tt.spec)
			if tt.wantErr == "" {
				if len(errs) > 0 {
					t.Fatalf("errors: %v", errs)
				}
				return
			}
			if len(errs) != 1 || !errors.Is(errs[0], errdefs.ErrInvalidArgument) || !strings.Contains(errs[0].Error(), tt.wantErr) {
				t.Fatalf("errors %v; want one naming %q", errs, tt.wantErr)
			}
		})
	}
	refs := PersistentVolumeRefs(spec([]api.Volume{pv("a", "data"), pv("b", "logs")},
		api.VolumeMount{Name: "a", MountPath: "/a", ReadOnly: true}, api.VolumeMount{Name: "b", MountPath: "/b"}))
	if len(refs) != 2 || refs[0] != (VolumeRef{Field: "spec.volumes[0].persistentVolume.name", Name: "data", ReadOnly: true}) || refs[1].ReadOnly {
		t.Errorf("refs = %+v", refs)
	}
}
