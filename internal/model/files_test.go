package model

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
)

func TestProjectVolume(t *testing.T) {
	mode := func(m int32) *int32 { return &m }
	data := map[string][]byte{"b": []byte("2"), "a": []byte("1"), "c": nil}
	for _, tc := range []struct {
		name    string
		src     api.ObjectVolumeSource
		want    []ProjectedFile
		wantErr error
	}{
		{"every key", api.ObjectVolumeSource{Name: "o"},
			[]ProjectedFile{{"a", 0o644, []byte("1")}, {"b", 0o644, []byte("2")}, {"c", 0o644, nil}}, nil},
		{"default mode", api.ObjectVolumeSource{Name: "o", DefaultMode: mode(0o400)},
			[]ProjectedFile{{"a", 0o400, []byte("1")}, {"b", 0o400, []byte("2")}, {"c", 0o400, nil}}, nil},
		{"items", api.ObjectVolumeSource{Name: "o", DefaultMode: mode(0o440), Items: []api.KeyToPath{
			{Key: "b", Path: "sub/./two"}, {Key: "a", Path: "one", Mode: mode(0o600)}}},
			[]ProjectedFile{{"one", 0o600, []byte("1")}, {"sub/two", 0o440, []byte("2")}}, nil},
		{"item key gone", api.ObjectVolumeSource{Name: "o", Items: []api.KeyToPath{{Key: "z", Path: "z"}}}, nil, errdefs.ErrFailedPrecondition},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ProjectVolume(&tc.src, data)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tc.want) {
				t.Errorf("ProjectVolume = %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

func TestResolveEnv(t *testing.T) {
	objs := ObjectData{
		Secrets: map[string]map[string][]byte{"db": {"PW": []byte("s3"), "USER": []byte("app")}},
		Configs: map[string]map[string][]byte{"app": {"LEVEL": []byte("debug"), "PW": []byte("from-config")}},
	}
	sec := func(n string) *api.ObjectRef { return &api.ObjectRef{Name: n} }
	for _, tc := range []struct {
		name    string
		c       api.ContainerSpec
		want    []api.EnvVar
		wantErr error
	}{
		{"later source wins, own env wins over both", api.ContainerSpec{
			EnvFrom: []api.EnvFromSource{{ConfigMapRef: sec("app")}, {SecretRef: sec("db")}},
			Env:     []api.EnvVar{{Name: "USER", Value: "me"}},
		}, []api.EnvVar{{Name: "LEVEL", Value: "debug"}, {Name: "PW", Value: "s3"}, {Name: "USER", Value: "me"}}, nil},
		{"prefix and key refs", api.ContainerSpec{
			EnvFrom: []api.EnvFromSource{{Prefix: "DB_", SecretRef: sec("db")}},
			Env: []api.EnvVar{{Name: "P", ValueFrom: &api.EnvVarSource{SecretKeyRef: &api.KeySelector{Name: "db", Key: "PW"}}},
				{Name: "L", ValueFrom: &api.EnvVarSource{ConfigMapKeyRef: &api.KeySelector{Name: "app", Key: "LEVEL"}}}},
		}, []api.EnvVar{{Name: "DB_PW", Value: "s3"}, {Name: "DB_USER", Value: "app"}, {Name: "P", Value: "s3"}, {Name: "L", Value: "debug"}}, nil},
		{"secret gone", api.ContainerSpec{EnvFrom: []api.EnvFromSource{{SecretRef: sec("nope")}}}, nil, errdefs.ErrFailedPrecondition},
		{"key gone", api.ContainerSpec{Env: []api.EnvVar{{Name: "P", ValueFrom: &api.EnvVarSource{SecretKeyRef: &api.KeySelector{Name: "db", Key: "NOPE"}}}}}, nil, errdefs.ErrFailedPrecondition},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ResolveEnv("c", &tc.c, objs)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) || strings.Contains(fmt.Sprint(err), "s3") {
					t.Fatalf("err = %v, want %v without the value", err, tc.wantErr)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tc.want) {
				t.Errorf("ResolveEnv = %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

func TestProjectInstance(t *testing.T) {
	mode := int32(0o400)
	spec := &api.InstanceSpec{
		Containers: []api.ContainerSpec{
			{Name: "plain", Env: []api.EnvVar{{Name: "A", Value: "1"}}},
			{Name: "withsecret", EnvFrom: []api.EnvFromSource{{SecretRef: &api.ObjectRef{Name: "db"}}}},
		},
		Volumes: []api.Volume{
			{Name: "s", Secret: &api.ObjectVolumeSource{Name: "db", Items: []api.KeyToPath{{Key: "PW", Path: "pw", Mode: &mode}}}},
			{Name: "c", Config: &api.ObjectVolumeSource{Name: "app"}},
		},
	}
	objs := ObjectData{
		Secrets: map[string]map[string][]byte{"db": {"PW": []byte("s3")}},
		Configs: map[string]map[string][]byte{"app": {"a.conf": []byte("x")}},
	}
	vols, env, err := ProjectInstance(spec, objs)
	if err != nil {
		t.Fatal(err)
	}
	wantVols := []ProjectedVolume{
		{Name: "s", Secret: true, Files: []ProjectedFile{{"pw", 0o400, []byte("s3")}}},
		{Name: "c", Files: []ProjectedFile{{"a.conf", 0o644, []byte("x")}}},
	}
	wantEnv := map[string][]api.EnvVar{"withsecret": {{Name: "PW", Value: "s3"}}}
	if !reflect.DeepEqual(vols, wantVols) || !reflect.DeepEqual(env, wantEnv) {
		t.Errorf("ProjectInstance = %+v, %+v; want %+v, %+v", vols, env, wantVols, wantEnv)
	}
	delete(objs.Configs, "app")
	if _, _, err := ProjectInstance(spec, objs); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("with the config gone: %v, want FailedPrecondition", err)
	}
}

func TestResolveFields(t *testing.T) {
	ip := &api.EnvVarSource{FieldRef: &api.FieldRef{FieldPath: api.FieldPodIP}}
	spec := api.ContainerSpec{
		Command: []string{"serve", "--listen=$(MY_IP):80", "$$(MY_IP)"},
		Args:    []string{"$(BEFORE)", "$(MY_IP)"},
		Env: []api.EnvVar{
			{Name: "BEFORE", Value: "early $(MY_IP)"},
			{Name: "MY_IP", ValueFrom: ip},
			{Name: "URL", Value: "http://$(MY_IP):80/$$x"},
			{Name: "PW", ValueFrom: &api.EnvVarSource{SecretKeyRef: &api.KeySelector{Name: "s", Key: "pw"}}},
		},
	}
	// As the host has it: secrets resolved, the field still a reference.
	env := []api.EnvVar{
		{Name: "FROM_CONFIG", Value: "$(MY_IP)"},
		{Name: "BEFORE", Value: "early $(MY_IP)"},
		{Name: "MY_IP", ValueFrom: ip},
		{Name: "URL", Value: "http://$(MY_IP):80/$$x"},
		{Name: "PW", Value: "pa$$(MY_IP)"},
	}
	got, cmd, args := ResolveFields(&spec, env, InstanceFields{PodIP: "10.1.2.3"})
	want := []api.EnvVar{
		{Name: "FROM_CONFIG", Value: "$(MY_IP)"}, // not a literal of the spec: left alone
		{Name: "BEFORE", Value: "early $(MY_IP)"},
		{Name: "MY_IP", Value: "10.1.2.3"},
		{Name: "URL", Value: "http://10.1.2.3:80/$x"},
		{Name: "PW", Value: "pa$$(MY_IP)"}, // a secret's value is never expanded
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("env:\n got %+v\nwant %+v", got, want)
	}
	if w := []string{"serve", "--listen=10.1.2.3:80", "$(MY_IP)"}; !reflect.DeepEqual(cmd, w) {
		t.Errorf("command = %q, want %q", cmd, w)
	}
	if w := []string{"$(BEFORE)", "10.1.2.3"}; !reflect.DeepEqual(args, w) {
		t.Errorf("args = %q, want %q", args, w)
	}

	// Without field references nothing changes, $$ included.
	plain := api.ContainerSpec{Command: []string{"echo", "$$"}, Env: []api.EnvVar{{Name: "A", Value: "$$(B)"}}}
	got, cmd, _ = ResolveFields(&plain, plain.Env, InstanceFields{PodIP: "10.1.2.3"})
	if got[0].Value != "$$(B)" || cmd[1] != "$$" {
		t.Errorf("a container without field references was expanded: env %+v, command %q", got, cmd)
	}
}

// A field reference survives the create-time resolution of configs, for
// the host to resolve at start.
func TestResolveEnvKeepsFieldRefs(t *testing.T) {
	c := api.ContainerSpec{Env: []api.EnvVar{
		{Name: "IP", ValueFrom: &api.EnvVarSource{FieldRef: &api.FieldRef{FieldPath: api.FieldPodIP}}},
		{Name: "MODE", ValueFrom: &api.EnvVarSource{ConfigMapKeyRef: &api.KeySelector{Name: "cfg", Key: "mode"}}},
	}}
	got, err := ResolveEnv("spec.containers[0]", &c, ObjectData{Configs: map[string]map[string][]byte{"cfg": {"mode": []byte("fast")}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].ValueFrom == nil || got[0].ValueFrom.FieldRef == nil || got[0].ValueFrom.FieldRef.FieldPath != api.FieldPodIP || got[1].Value != "fast" {
		t.Errorf("ResolveEnv = %+v, want IP still a fieldRef and MODE=fast", got)
	}
	if !HasFieldRefs(got) {
		t.Error("HasFieldRefs of the resolved env is false")
	}
}
