package cli

import (
	"path/filepath"
	"testing"

	"github.com/kanga-run/kanga/api"
)

// TestReadRequestFilePodInitContainers: a Pod manifest's init containers
// become the instance's, in order, with their env mapped as an app
// container's.
func TestReadRequestFilePodInitContainers(t *testing.T) {
	req, err := readRequestFile(filepath.Join("testdata", "pod-init.yaml"), nil)
	if err != nil {
		t.Fatal(err)
	}
	ic := req.Spec.InitContainers
	if len(ic) != 2 || ic[0].Name != "fetch" || ic[1].Name != "check" || len(req.Spec.Containers) != 1 || req.Spec.Containers[0].Name != "app" {
		t.Fatalf("init containers %+v, containers %+v: want fetch, check, then app", ic, req.Spec.Containers)
	}
	if len(ic[0].Command) != 3 || ic[0].Command[2] != "echo ready > /tmp/state" {
		t.Errorf("fetch command %q", ic[0].Command)
	}
	if len(ic[0].Env) != 1 || ic[0].Env[0] != (api.EnvVar{Name: "POD_NAME", Value: "prepared"}) {
		t.Errorf("fetch env %+v, want POD_NAME=prepared and no marker", ic[0].Env)
	}
}
