package device

import (
	"errors"
	"reflect"
	"testing"

	oci "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
)

func open(t *testing.T, state string) *Registry {
	t.Helper()
	r, err := Open([]string{"testdata/cdi"}, state)
	if err != nil {
		t.Fatal(err)
	}
	if errs := r.Errors(); len(errs) > 0 {
		t.Fatalf("spec errors: %v", errs)
	}
	return r
}

func TestDevices(t *testing.T) {
	r := open(t, t.TempDir())
	want := []api.HostDevice{{Name: "kanga.dev/mock=m0"}, {Name: "kanga.dev/mock=m1"}, {Name: "kanga.dev/mock=shared", Shareable: true}}
	if got := r.Devices(); !reflect.DeepEqual(got, want) {
		t.Fatalf("Devices = %+v, want %+v", got, want)
	}
}

func TestAllocate(t *testing.T) {
	mock := func(n int) api.DeviceRequest { return api.DeviceRequest{Kind: "kanga.dev/mock", Count: n} }
	named := func(n string) api.DeviceRequest {
		return api.DeviceRequest{Kind: "kanga.dev/mock", Name: "kanga.dev/mock=" + n}
	}
	none := func(string) bool { return false }
	type step struct {
		uid   string
		reqs  []api.DeviceRequest
		avoid func(string) bool
		want  []string
		err   error
	}
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"counts take exclusive devices in order", []step{
			{"a", []api.DeviceRequest{mock(1)}, none, []string{"kanga.dev/mock=m0"}, nil},
			{"b", []api.DeviceRequest{mock(1)}, none, []string{"kanga.dev/mock=m1"}, nil},
			{"c", []api.DeviceRequest{mock(1)}, none, nil, errdefs.ErrConflict},
			{"d", []api.DeviceRequest{{Kind: "kanga.dev/nosuch", Count: 1}}, none, nil, errdefs.ErrNotFound},
		}},
		{"a count avoids a device another instance names", []step{
			{"a", []api.DeviceRequest{mock(1)}, func(n string) bool { return n == "kanga.dev/mock=m0" }, []string{"kanga.dev/mock=m1"}, nil},
			{"b", []api.DeviceRequest{named("m0")}, none, []string{"kanga.dev/mock=m0"}, nil},
		}},
		{"a held name is a conflict", []step{
			{"a", []api.DeviceRequest{named("m1")}, none, []string{"kanga.dev/mock=m1"}, nil},
			{"b", []api.DeviceRequest{named("m1")}, none, nil, errdefs.ErrConflict},
		}},
		{"shareable devices have many holders", []step{
			{"a", []api.DeviceRequest{named("shared")}, none, []string{"kanga.dev/mock=shared"}, nil},
			{"b", []api.DeviceRequest{named("shared"), named("m0")}, none, []string{"kanga.dev/mock=shared", "kanga.dev/mock=m0"}, nil},
		}},
		{"an unknown device", []step{
			{"a", []api.DeviceRequest{named("m9")}, none, nil, errdefs.ErrNotFound},
		}},
		{"an instance keeps what it holds", []step{
			{"a", []api.DeviceRequest{mock(2)}, none, []string{"kanga.dev/mock=m0", "kanga.dev/mock=m1"}, nil},
			{"a", []api.DeviceRequest{mock(2)}, none, []string{"kanga.dev/mock=m0", "kanga.dev/mock=m1"}, nil},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := open(t, t.TempDir())
			for i, s := range tc.steps {
				got, err := r.Allocate(s.uid, s.reqs, s.avoid)
				if !errors.Is(err, s.err) || (s.err == nil) != (err == nil) {
					t.Fatalf("step %d: err %v, want %v", i, err, s.err)
				}
				if !reflect.DeepEqual(got, s.want) {
					t.Fatalf("step %d: got %q, want %q", i, got, s.want)
				}
			}
		})
	}
}

// TestRestart: holdings survive a new Registry on the same state, and
// Retain drops those of instances gone meanwhile.
func TestRestart(t *testing.T) {
	state := t.TempDir()
	r := open(t, state)
	for _, uid := range []string{"a", "b"} {
		if _, err := r.Allocate(uid, []api.DeviceRequest{{Kind: "kanga.dev/mock", Count: 1}}, nil); err != nil {
			t.Fatal(err)
		}
	}
	r = open(t, state)
	if got := r.Held("b"); !reflect.DeepEqual(got, []string{"kanga.dev/mock=m1"}) {
		t.Fatalf("after reopening, b holds %q", got)
	}
	r.Retain(func(uid string) bool { return uid == "b" })
	r = open(t, state)
	if got := r.Held("a"); got != nil {
		t.Fatalf("a still holds %q after Retain", got)
	}
	if got, err := r.Allocate("c", []api.DeviceRequest{{Kind: "kanga.dev/mock", Count: 1}}, nil); err != nil || got[0] != "kanga.dev/mock=m0" {
		t.Fatalf("c got %q, %v; want a's device m0", got, err)
	}
}

func TestInject(t *testing.T) {
	r := open(t, t.TempDir())
	spec := &oci.Spec{Process: &oci.Process{}, Linux: &oci.Linux{}}
	if err := r.Inject(spec, []string{"kanga.dev/mock=m0"}); err != nil {
		t.Fatal(err)
	}
	if len(spec.Linux.Devices) != 1 || spec.Linux.Devices[0].Path != "/dev/kanga-mock0" || spec.Linux.Devices[0].Major != 1 || spec.Linux.Devices[0].Minor != 3 {
		t.Fatalf("devices %+v, want /dev/kanga-mock0 as 1:3 (/dev/null)", spec.Linux.Devices)
	}
	if spec.Linux.Resources == nil || len(spec.Linux.Resources.Devices) != 1 || !spec.Linux.Resources.Devices[0].Allow {
		t.Fatalf("cgroup device rules %+v, want one allow", spec.Linux.Resources)
	}
	if !reflect.DeepEqual(spec.Process.Env, []string{"KANGA_MOCK=m0"}) {
		t.Fatalf("env %q", spec.Process.Env)
	}
	if err := r.Inject(spec, []string{"kanga.dev/mock=nosuch"}); err == nil {
		t.Fatal("an unknown device was injected")
	}
}

func TestAttachDetach(t *testing.T) {
	state := t.TempDir()
	r := open(t, state)
	if _, err := r.Allocate("a", []api.DeviceRequest{{Kind: "kanga.dev/mock", Name: "kanga.dev/mock=shared"}}, nil); err != nil {
		t.Fatal(err)
	}
	got, err := r.Attach("a", api.DeviceRequest{Kind: "kanga.dev/mock", Count: 1}, func(n string) bool { return n == "kanga.dev/mock=m0" })
	if err != nil || !reflect.DeepEqual(got, []string{"kanga.dev/mock=m1"}) {
		t.Fatalf("Attach = %q, %v; want m1 (m0 is named by another instance)", got, err)
	}
	if _, err := r.Attach("a", api.DeviceRequest{Kind: "kanga.dev/mock", Name: "kanga.dev/mock=m1"}, nil); !errors.Is(err, errdefs.ErrConflict) {
		t.Fatalf("attaching a held device again: %v, want a conflict", err)
	}
	if _, err := r.Attach("b", api.DeviceRequest{Kind: "kanga.dev/mock", Name: "kanga.dev/mock=m1"}, nil); !errors.Is(err, errdefs.ErrConflict) {
		t.Fatalf("attaching another instance's device: %v, want a conflict", err)
	}
	if err := r.Detach("a", "kanga.dev/mock=m0"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("detaching a device not held: %v, want not found", err)
	}
	if err := r.Detach("a", "kanga.dev/mock=m1"); err != nil {
		t.Fatal(err)
	}
	r = open(t, state)
	if got := r.Held("a"); !reflect.DeepEqual(got, []string{"kanga.dev/mock=shared"}) {
		t.Fatalf("after detach and reopening, a holds %q", got)
	}
	if got, err := r.Attach("b", api.DeviceRequest{Kind: "kanga.dev/mock", Name: "kanga.dev/mock=m1"}, nil); err != nil || len(got) != 1 {
		t.Fatalf("attaching the detached device elsewhere: %q, %v", got, err)
	}
	nodes, err := r.Nodes("kanga.dev/mock=m1")
	if err != nil || len(nodes) != 1 || nodes[0].Path != "/dev/kanga-mock1" || nodes[0].Major != 1 || nodes[0].Minor != 5 || nodes[0].Type != "c" {
		t.Fatalf("Nodes = %+v, %v; want /dev/kanga-mock1 as c 1:5 (/dev/zero)", nodes, err)
	}
}
