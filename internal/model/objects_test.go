package model

import (
	"errors"
	"strings"
	"testing"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
)

func TestValidateObjectData(t *testing.T) {
	for _, tc := range []struct {
		name  string
		data  map[string][]byte
		field string // "" when valid
	}{
		{"empty allowed", nil, ""},
		{"plain keys", map[string][]byte{"password": []byte("x"), "app.conf": nil, "A_b-1.c": []byte("y")}, ""},
		{"dotfile", map[string][]byte{".env": []byte("x")}, ""},
		{"slash", map[string][]byte{"a/b": []byte("x")}, `contains '/'`},
		{"dotdot", map[string][]byte{"..": []byte("x")}, `'..'`},
		{"dotdot prefix", map[string][]byte{"..data": []byte("x")}, `'..'`},
		{"dot", map[string][]byte{".": []byte("x")}, `'.'`},
		{"empty key", map[string][]byte{"": []byte("x")}, "is empty"},
		{"space", map[string][]byte{"a b": []byte("x")}, "not valid"},
		{"long key", map[string][]byte{strings.Repeat("k", 254): nil}, "at most 253"},
		{"exactly 1 MiB", map[string][]byte{"k": make([]byte, api.MaxObjectBytes-1)}, ""},
		{"over 1 MiB", map[string][]byte{"k": make([]byte, api.MaxObjectBytes)}, "at most 1048576"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := ValidateObjectData("data", tc.data)
			if tc.field == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), tc.field) || !strings.HasPrefix(err.Error(), "data") {
				t.Errorf("err = %v, want InvalidArgument on data mentioning %q", err, tc.field)
			}
		})
	}
}

func TestValidateObjectDataNeverQuotesValues(t *testing.T) {
	err := ValidateObjectData("data", map[string][]byte{"bad/key": []byte("SECRET-VALUE"), "k": make([]byte, api.MaxObjectBytes)})
	if err == nil || strings.Contains(err.Error(), "SECRET-VALUE") {
		t.Fatalf("err = %v: must fail without quoting a value", err)
	}
}

func TestValidateObjectName(t *testing.T) {
	for name, ok := range map[string]bool{
		"db": true, "db-password": true, "app.conf.v2": true, "a": true, strings.Repeat("a", 253): true,
		"": false, "Db": false, "-db": false, "db-": false, "a/b": false, "a..b": false, "a_b": false, strings.Repeat("a", 254): false,
	} {
		err := ValidateObjectName("name", name)
		if (err == nil) != ok {
			t.Errorf("ValidateObjectName(%q) = %v, want ok=%v", name, err, ok)
		}
		if err != nil && (!errors.Is(err, errdefs.ErrInvalidArgument) || !strings.HasPrefix(err.Error(), "name")) {
			t.Errorf("ValidateObjectName(%q) = %v, want InvalidArgument naming the field", name, err)
		}
	}
}

func TestValidateVolumes(t *testing.T) {
	mode := func(m int32) *int32 { return &m }
	base := func() api.InstanceSpec {
		return api.InstanceSpec{
			Containers: []api.ContainerSpec{{Name: "app", Image: "img",
				VolumeMounts: []api.VolumeMount{{Name: "creds", MountPath: "/etc/creds"}, {Name: "conf", MountPath: "/etc/app"}},
				EnvFrom:      []api.EnvFromSource{{SecretRef: &api.ObjectRef{Name: "db"}}, {Prefix: "APP_", ConfigMapRef: &api.ObjectRef{Name: "conf"}}},
				Env: []api.EnvVar{{Name: "PW", ValueFrom: &api.EnvVarSource{SecretKeyRef: &api.KeySelector{Name: "db", Key: "password"}}},
					{Name: "LEVEL", ValueFrom: &api.EnvVarSource{ConfigMapKeyRef: &api.KeySelector{Name: "conf", Key: "level"}}}},
			}},
			Volumes: []api.Volume{
				{Name: "creds", Secret: &api.ObjectVolumeSource{Name: "db", DefaultMode: mode(0o400),
					Items: []api.KeyToPath{{Key: "password", Path: "pw/file", Mode: mode(0o440)}}}},
				{Name: "conf", Config: &api.ObjectVolumeSource{Name: "conf"}},
				{Name: "scratch", EmptyDir: &api.EmptyDirVolumeSource{SizeLimit: "64Mi"}},
				{Name: "mem", EmptyDir: &api.EmptyDirVolumeSource{Medium: api.MediumMemory, SizeLimit: "64Mi"}},
			},
			Resources:     api.Resources{Memory: "256Mi"},
			RestartPolicy: api.RestartNever, Runtime: DefaultRuntimeClass,
		}
	}
	for _, tc := range []struct {
		name  string
		edit  func(*api.InstanceSpec)
		field string // "" when valid
	}{
		{"valid", func(*api.InstanceSpec) {}, ""},
		{"subPath", func(s *api.InstanceSpec) { s.Containers[0].VolumeMounts[1].SubPath = "conf.d/app.conf" }, ""},
		{"relative mount", func(s *api.InstanceSpec) { s.Containers[0].VolumeMounts[0].MountPath = "etc/creds" }, "spec.containers[0].volumeMounts[0].mountPath"},
		{"dotdot mount", func(s *api.InstanceSpec) { s.Containers[0].VolumeMounts[0].MountPath = "/etc/../proc" }, "spec.containers[0].volumeMounts[0].mountPath"},
		{"proc", func(s *api.InstanceSpec) { s.Containers[0].VolumeMounts[0].MountPath = "/proc" }, "spec.containers[0].volumeMounts[0].mountPath"},
		{"absolute subPath", func(s *api.InstanceSpec) { s.Containers[0].VolumeMounts[0].SubPath = "/etc" }, "spec.containers[0].volumeMounts[0].subPath \"/etc\" must be relative"},
		{"dotdot subPath", func(s *api.InstanceSpec) { s.Containers[0].VolumeMounts[0].SubPath = "a/../../etc" }, "spec.containers[0].volumeMounts[0].subPath \"a/../../etc\" contains '..'"},
		{"unclean subPath", func(s *api.InstanceSpec) { s.Containers[0].VolumeMounts[0].SubPath = "a//b/" }, "spec.containers[0].volumeMounts[0].subPath \"a//b/\" is not a clean path"},
		{"dot subPath", func(s *api.InstanceSpec) { s.Containers[0].VolumeMounts[0].SubPath = "." }, "spec.containers[0].volumeMounts[0].subPath \".\" is not a clean path"},
		{"under sys", func(s *api.InstanceSpec) { s.Containers[0].VolumeMounts[0].MountPath = "/sys/fs/x" }, "under /sys"},
		{"dev", func(s *api.InstanceSpec) { s.Containers[0].VolumeMounts[0].MountPath = "/dev/" }, "under /dev"},
		{"kanga", func(s *api.InstanceSpec) { s.Containers[0].VolumeMounts[0].MountPath = "/.kanga/x" }, "under /.kanga"},
		{"root", func(s *api.InstanceSpec) { s.Containers[0].VolumeMounts[0].MountPath = "/" }, "root"},
		{"not forbidden: /devices", func(s *api.InstanceSpec) { s.Containers[0].VolumeMounts[0].MountPath = "/devices" }, ""},
		{"two on one path", func(s *api.InstanceSpec) { s.Containers[0].VolumeMounts[1].MountPath = "/etc/creds/" }, "spec.containers[0].volumeMounts[1].mountPath"},
		{"unknown volume", func(s *api.InstanceSpec) { s.Containers[0].VolumeMounts[0].Name = "nope" }, "spec.containers[0].volumeMounts[0].name"},
		{"duplicate volume", func(s *api.InstanceSpec) { s.Volumes[1].Name = "creds" }, "spec.volumes[1].name"},
		{"no source", func(s *api.InstanceSpec) { s.Volumes[1].Config = nil }, "spec.volumes[1] has no source"},
		{"two sources", func(s *api.InstanceSpec) { s.Volumes[1].Secret = &api.ObjectVolumeSource{Name: "db"} }, "spec.volumes[1] has 2 sources"},
		{"emptyDir and secret", func(s *api.InstanceSpec) { s.Volumes[2].Secret = &api.ObjectVolumeSource{Name: "db"} }, "spec.volumes[2] has 2 sources"},
		{"emptyDir no sizeLimit", func(s *api.InstanceSpec) { s.Volumes[2].EmptyDir.SizeLimit = "" }, ""},
		{"memory emptyDir no sizeLimit", func(s *api.InstanceSpec) { s.Volumes[3].EmptyDir.SizeLimit = "" }, ""},
		{"emptyDir bad medium", func(s *api.InstanceSpec) { s.Volumes[2].EmptyDir.Medium = "memory" }, "spec.volumes[2].emptyDir.medium"},
		{"emptyDir bad size", func(s *api.InstanceSpec) { s.Volumes[2].EmptyDir.SizeLimit = "lots" }, "spec.volumes[2].emptyDir.sizeLimit"},
		{"emptyDir negative size", func(s *api.InstanceSpec) { s.Volumes[2].EmptyDir.SizeLimit = "-1Gi" }, "spec.volumes[2].emptyDir.sizeLimit"},
		{"emptyDir too small", func(s *api.InstanceSpec) { s.Volumes[2].EmptyDir.SizeLimit = "1Mi" }, "spec.volumes[2].emptyDir.sizeLimit \"1Mi\" is not between 4Mi and 16Ti"},
		{"emptyDir too large", func(s *api.InstanceSpec) { s.Volumes[2].EmptyDir.SizeLimit = "17Ti" }, "spec.volumes[2].emptyDir.sizeLimit \"17Ti\" is not between"},
		{"emptyDir at the bounds", func(s *api.InstanceSpec) {
			s.Volumes[2].EmptyDir.SizeLimit = "4Mi"
			s.Volumes = append(s.Volumes, api.Volume{Name: "big", EmptyDir: &api.EmptyDirVolumeSource{SizeLimit: "16Ti"}})
		}, ""},
		{"memory emptyDir over the memory limit", func(s *api.InstanceSpec) { s.Volumes[3].EmptyDir.SizeLimit = "257Mi" }, "spec.volumes[3].emptyDir.sizeLimit \"257Mi\" is above spec.resources.memory"},
		{"memory emptyDir at the memory limit", func(s *api.InstanceSpec) { s.Volumes[3].EmptyDir.SizeLimit = "256Mi" }, ""},
		{"disk emptyDir over the memory limit", func(s *api.InstanceSpec) { s.Volumes[2].EmptyDir.SizeLimit = "1Gi" }, ""},
		{"bad volume name", func(s *api.InstanceSpec) { s.Volumes[2].Name = "Scratch_1" }, "spec.volumes[2].name"},
		{"emptyDir mount over proc", func(s *api.InstanceSpec) {
			s.Containers[0].VolumeMounts = append(s.Containers[0].VolumeMounts, api.VolumeMount{Name: "scratch", MountPath: "/proc/x"})
		}, "spec.containers[0].volumeMounts[2].mountPath"},
		{"emptyDir and secret on one path", func(s *api.InstanceSpec) {
			s.Containers[0].VolumeMounts = append(s.Containers[0].VolumeMounts, api.VolumeMount{Name: "scratch", MountPath: "/etc/creds"})
		}, "spec.containers[0].volumeMounts[2].mountPath \"/etc/creds\" is also the path of"},
		{"disk too small", func(s *api.InstanceSpec) { s.Resources.Disk = "1Mi" }, "spec.resources.disk \"1Mi\" is not between 4Mi and 16Ti"},
		{"disk not a quantity", func(s *api.InstanceSpec) { s.Resources.Disk = "big" }, "spec.resources.disk"},
		{"disk ok", func(s *api.InstanceSpec) { s.Resources.Disk = "200Mi" }, ""},
		{"bad object name", func(s *api.InstanceSpec) { s.Volumes[0].Secret.Name = "DB" }, "spec.volumes[0].secret.name"},
		{"item key slash", func(s *api.InstanceSpec) { s.Volumes[0].Secret.Items[0].Key = "a/b" }, "spec.volumes[0].secret.items[0].key"},
		{"item path absolute", func(s *api.InstanceSpec) { s.Volumes[0].Secret.Items[0].Path = "/pw" }, "spec.volumes[0].secret.items[0].path"},
		{"item path dotdot", func(s *api.InstanceSpec) { s.Volumes[0].Secret.Items[0].Path = "../pw" }, "spec.volumes[0].secret.items[0].path"},
		{"item path ..data", func(s *api.InstanceSpec) { s.Volumes[0].Secret.Items[0].Path = "sub/..data/pw" }, "spec.volumes[0].secret.items[0].path"},
		{"item mode", func(s *api.InstanceSpec) { s.Volumes[0].Secret.Items[0].Mode = mode(0o1777) }, "spec.volumes[0].secret.items[0].mode"},
		{"default mode", func(s *api.InstanceSpec) { s.Volumes[0].Secret.DefaultMode = mode(-1) }, "spec.volumes[0].secret.defaultMode"},
		{"envFrom empty", func(s *api.InstanceSpec) { s.Containers[0].EnvFrom[0].SecretRef = nil }, "spec.containers[0].envFrom[0] has no source"},
		{"envFrom prefix", func(s *api.InstanceSpec) { s.Containers[0].EnvFrom[1].Prefix = "1X" }, "spec.containers[0].envFrom[1].prefix"},
		{"valueFrom and value", func(s *api.InstanceSpec) { s.Containers[0].Env[0].Value = "x" }, "spec.containers[0].env[0]: give a value or valueFrom"},
		{"valueFrom key", func(s *api.InstanceSpec) { s.Containers[0].Env[0].ValueFrom.SecretKeyRef.Key = "../x" }, "spec.containers[0].env[0].valueFrom.secretKeyRef.key"},
		{"valueFrom none", func(s *api.InstanceSpec) { s.Containers[0].Env[1].ValueFrom.ConfigMapKeyRef = nil }, "spec.containers[0].env[1].valueFrom has no source"},
		{"fieldRef podIP", func(s *api.InstanceSpec) {
			s.Containers[0].Env = append(s.Containers[0].Env, api.EnvVar{Name: "IP", ValueFrom: &api.EnvVarSource{FieldRef: &api.FieldRef{FieldPath: api.FieldPodIP}}})
		}, ""},
		{"fieldRef unsupported", func(s *api.InstanceSpec) {
			s.Containers[0].Env = append(s.Containers[0].Env, api.EnvVar{Name: "N", ValueFrom: &api.EnvVarSource{FieldRef: &api.FieldRef{FieldPath: "metadata.name"}}})
		}, "spec.containers[0].env[2].valueFrom.fieldRef.fieldPath \"metadata.name\" is not supported"},
		{"fieldRef and secretKeyRef", func(s *api.InstanceSpec) {
			s.Containers[0].Env[0].ValueFrom.FieldRef = &api.FieldRef{FieldPath: api.FieldPodIP}
		}, "spec.containers[0].env[0].valueFrom has more than one"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spec := base()
			tc.edit(&spec)
			err := Validate(&spec)
			if tc.field == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), tc.field) {
				t.Errorf("err = %v, want InvalidArgument naming %q", err, tc.field)
			}
		})
	}
}

func TestObjectRefs(t *testing.T) {
	spec := api.InstanceSpec{
		Volumes: []api.Volume{{Name: "v", Config: &api.ObjectVolumeSource{Name: "conf", Items: []api.KeyToPath{{Key: "k", Path: "p"}}}}},
		Containers: []api.ContainerSpec{{
			EnvFrom: []api.EnvFromSource{{SecretRef: &api.ObjectRef{Name: "s"}}},
			Env:     []api.EnvVar{{Name: "A", Value: "1"}, {Name: "B", ValueFrom: &api.EnvVarSource{SecretKeyRef: &api.KeySelector{Name: "s", Key: "pw"}}}},
		}},
	}
	want := []ObjectRef{
		{Field: "spec.volumes[0].config.name", Kind: KindConfig, Name: "conf"},
		{Field: "spec.volumes[0].config.items[0].key", Kind: KindConfig, Name: "conf", Key: "k"},
		{Field: "spec.containers[0].envFrom[0].secretRef.name", Kind: KindSecret, Name: "s"},
		{Field: "spec.containers[0].env[1].valueFrom.secretKeyRef", Kind: KindSecret, Name: "s", Key: "pw"},
	}
	got := ObjectRefs(&spec)
	if len(got) != len(want) {
		t.Fatalf("ObjectRefs = %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("ref %d = %+v, want %+v", i, got[i], want[i])
		}
	}
}

func TestEmptyDirSize(t *testing.T) {
	for _, tc := range []struct {
		name string
		res  api.Resources
		e    api.EmptyDirVolumeSource
		want int64
	}{
		{"sizeLimit", api.Resources{Memory: "256Mi", Disk: "1Gi"}, api.EmptyDirVolumeSource{SizeLimit: "64Mi"}, 64 << 20},
		{"disk: the disk limit", api.Resources{Memory: "256Mi", Disk: "200Mi"}, api.EmptyDirVolumeSource{}, 200 << 20},
		{"disk: no disk limit", api.Resources{Memory: "256Mi"}, api.EmptyDirVolumeSource{}, DefaultEmptyDirSize},
		{"memory: the memory limit", api.Resources{Memory: "256Mi", Disk: "1Gi"}, api.EmptyDirVolumeSource{Medium: api.MediumMemory}, 256 << 20},
		{"memory: no memory limit", api.Resources{}, api.EmptyDirVolumeSource{Medium: api.MediumMemory}, DefaultEmptyDirSize},
		{"memory: sizeLimit", api.Resources{Memory: "256Mi"}, api.EmptyDirVolumeSource{Medium: api.MediumMemory, SizeLimit: "16Mi"}, 16 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := EmptyDirSize(&api.InstanceSpec{Resources: tc.res}, &tc.e, "v")
			if err != nil || got != tc.want {
				t.Fatalf("EmptyDirSize = %d, %v; want %d", got, err, tc.want)
			}
		})
	}
}
