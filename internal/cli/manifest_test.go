package cli

import (
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/kanga-run/kanga/api"
)

func TestReadRequestFilePodManifest(t *testing.T) {
	req, err := readRequestFile(filepath.Join("testdata", "pod.yaml"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if req.Name != "web" || req.Spec.RestartPolicy != api.RestartOnFailure || req.Spec.ActiveDeadlineSeconds == nil || *req.Spec.ActiveDeadlineSeconds != 600 {
		t.Errorf("request %+v: want name web, OnFailure, a 600 s deadline", req)
	}
	if req.Labels["app"] != "web" {
		t.Errorf("labels %v, want the pod's (app=web)", req.Labels)
	}
	if req.Spec.Resources.CPU != "500m" || req.Spec.Resources.Memory != "128Mi" {
		t.Errorf("resources %+v, want the pod's limits", req.Spec.Resources)
	}
	if len(req.Spec.Containers) != 1 {
		t.Fatalf("%d containers, want 1", len(req.Spec.Containers))
	}
	c := req.Spec.Containers[0]
	want := []api.EnvVar{
		{Name: "GREETING", ValueFrom: &api.EnvVarSource{ConfigMapKeyRef: &api.KeySelector{Name: "settings", Key: "greeting"}}},
		{Name: "PASSWORD", ValueFrom: &api.EnvVarSource{SecretKeyRef: &api.KeySelector{Name: "db", Key: "password"}}},
		{Name: "POD_NAME", Value: "web"},
		{Name: "POD_IP", ValueFrom: &api.EnvVarSource{FieldRef: &api.FieldRef{FieldPath: api.FieldPodIP}}},
		{Name: "URL", Value: "http://$(POD_IP):80/web"},
	}
	if !reflect.DeepEqual(c.Env, want) {
		t.Errorf("env:\n got %+v\nwant %+v", c.Env, want)
	}
	if len(c.EnvFrom) != 1 || c.EnvFrom[0].Prefix != "CFG_" || c.EnvFrom[0].ConfigMapRef == nil || c.EnvFrom[0].ConfigMapRef.Name != "settings" {
		t.Errorf("envFrom %+v, want the Kanga config settings with prefix CFG_", c.EnvFrom)
	}
	for _, e := range c.Env {
		if strings.HasPrefix(e.Name, "KANGA_") {
			t.Errorf("a pod run without a cluster got the virtual node's marker %s", e.Name)
		}
	}

	for _, tc := range []struct{ file, want string }{
		{"deployment.yaml", "is a Deployment (apps/v1)"},
	} {
		if _, err := readRequestFile(filepath.Join("testdata", tc.file), nil); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want %q", tc.file, err, tc.want)
		}
	}
}
