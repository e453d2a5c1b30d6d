package bench

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/containerd/containerd/oci"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/kanga-run/kanga/errdefs"
)

// fakeCommander records command lines and pretends to be an OCI runtime
// that knows the containers in known.
type fakeCommander struct {
	mu      sync.Mutex
	calls   [][]string
	known   map[string]bool
	runErr  error
	pidFile map[string]string // id -> pid written by "run"
}

func (f *fakeCommander) Run(ctx context.Context, name string, args ...string) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, append([]string{name}, args...))
	// args: --root R VERB ...
	verb, id := args[2], args[len(args)-1]
	switch verb {
	case "run":
		if f.runErr != nil {
			return []byte("run failed"), f.runErr
		}
		f.known[id] = true
		pidf := args[slices.Index(args, "--pid-file")+1]
		if err := os.WriteFile(pidf, []byte(f.pidFile[id]), 0o600); err != nil {
			return nil, err
		}
	case "state":
		if !f.known[id] {
			return nil, errors.New("container does not exist")
		}
	case "kill":
		id = args[3]
	case "delete":
		delete(f.known, id)
	}
	return nil, nil
}

func (f *fakeCommander) verbs() []string {
	var v []string
	for _, c := range f.calls {
		v = append(v, c[3])
	}
	return v
}

type fakeReaper struct {
	subreaping bool
	restored   bool
	reaped     []int
}

func (f *fakeReaper) Subreap() (func(), error) {
	f.subreaping = true
	return func() { f.restored = true }, nil
}

func (f *fakeReaper) Reap(pid int) { f.reaped = append(f.reaped, pid) }

func newFakeRaw(t *testing.T) (*RawStarter, *fakeCommander, *fakeReaper) {
	t.Helper()
	cmd := &fakeCommander{known: map[string]bool{}, pidFile: map[string]string{"b-0": "4242\n"}}
	reaper := &fakeReaper{}
	r := &RawStarter{
		Runtime: "crun", Binary: "/usr/bin/crun", Args: []string{"sleep", "3600"},
		TempDir: t.TempDir(), Exec: cmd, Reaper: reaper,
		Rootfs: func(ctx context.Context, dir string) ([]oci.SpecOpts, error) {
			if err := os.MkdirAll(filepath.Join(dir, "bin"), 0o755); err != nil {
				return nil, err
			}
			return []oci.SpecOpts{oci.WithEnv([]string{"PATH=/bin"})}, nil
		},
	}
	return r, cmd, reaper
}

func TestRawStarterLifecycle(t *testing.T) {
	ctx := context.Background()
	r, cmd, reaper := newFakeRaw(t)
	if got := r.Path(); got != "raw crun" {
		t.Errorf("Path = %q", got)
	}
	if err := r.Prepare(ctx); err != nil {
		t.Fatal(err)
	}
	if !reaper.subreaping {
		t.Error("Prepare did not make the process a subreaper")
	}
	work := r.work
	if _, err := r.Start(ctx, "b-0"); err != nil {
		t.Fatal(err)
	}
	run := cmd.calls[0]
	want := []string{"/usr/bin/crun", "--root", filepath.Join(work, "state"), "run", "--detach",
		"--pid-file", filepath.Join(work, "pids", "b-0"), "--bundle", filepath.Join(work, "bundles", "b-0"), "b-0"}
	if !slices.Equal(run, want) {
		t.Errorf("run command =\n%v\nwant\n%v", run, want)
	}

	b, err := os.ReadFile(filepath.Join(work, "bundles", "b-0", "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	var spec specs.Spec
	if err := json.Unmarshal(b, &spec); err != nil {
		t.Fatal(err)
	}
	if spec.Root.Path != filepath.Join(work, "rootfs") || !spec.Root.Readonly {
		t.Errorf("root = %+v, want the shared rootfs read-only", spec.Root)
	}
	if spec.Linux.CgroupsPath != "/kanga-bench/b-0" {
		t.Errorf("cgroupsPath = %q", spec.Linux.CgroupsPath)
	}
	if !slices.Equal(spec.Process.Args, []string{"sleep", "3600"}) || !slices.Contains(spec.Process.Env, "PATH=/bin") {
		t.Errorf("process = %+v, want sleep 3600 with the image's PATH", spec.Process)
	}
	for _, d := range []string{"proc", "dev", "sys"} {
		if _, err := os.Stat(filepath.Join(work, "rootfs", d)); err != nil {
			t.Errorf("rootfs lacks mount point /%s: %v", d, err)
		}
	}

	if err := r.Remove(ctx, "b-0"); err != nil {
		t.Fatal(err)
	}
	if got, want := cmd.verbs(), []string{"run", "state", "kill", "delete"}; !slices.Equal(got, want) {
		t.Errorf("verbs = %v, want %v", got, want)
	}
	if last := cmd.calls[len(cmd.calls)-1]; !slices.Contains(last, "--force") {
		t.Errorf("delete without --force: %v", last)
	}
	if !slices.Equal(reaper.reaped, []int{4242}) {
		t.Errorf("reaped %v, want the container's pid 4242", reaper.reaped)
	}
	if _, err := os.Stat(filepath.Join(work, "bundles", "b-0")); !os.IsNotExist(err) {
		t.Errorf("bundle left behind: %v", err)
	}

	if err := r.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if !reaper.restored {
		t.Error("Close did not stop subreaping")
	}
	if _, err := os.Stat(work); !os.IsNotExist(err) {
		t.Errorf("work dir left behind: %v", err)
	}
}

func TestRawStarterRemoveUnknown(t *testing.T) {
	ctx := context.Background()
	r, cmd, reaper := newFakeRaw(t)
	cmd.runErr = errors.New("exit status 1")
	if err := r.Prepare(ctx); err != nil {
		t.Fatal(err)
	}
	defer r.Close(ctx)
	if _, err := r.Start(ctx, "b-0"); err == nil {
		t.Fatal("Start succeeded with a failing runtime")
	}
	if err := r.Remove(ctx, "b-0"); err != nil {
		t.Fatalf("Remove of a container that never ran: %v", err)
	}
	if got, want := cmd.verbs(), []string{"run", "state", "delete"}; !slices.Equal(got, want) {
		t.Errorf("verbs = %v, want %v: nothing to kill, a delete just in case", got, want)
	}
	if len(reaper.reaped) != 0 {
		t.Errorf("reaped %v", reaper.reaped)
	}
}

func TestRawStarterPrepareFailure(t *testing.T) {
	r, _, reaper := newFakeRaw(t)
	r.Rootfs = func(context.Context, string) ([]oci.SpecOpts, error) { return nil, errors.New("no such image") }
	err := r.Prepare(context.Background())
	if err == nil || !strings.Contains(err.Error(), "no such image") {
		t.Fatalf("Prepare error = %v", err)
	}
	if reaper.subreaping {
		t.Error("became a subreaper although Prepare failed")
	}
	work := r.work
	if err := r.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(work); !os.IsNotExist(err) {
		t.Errorf("work dir left behind: %v", err)
	}
}

func TestBundleSpecValidates(t *testing.T) {
	tests := []struct {
		name   string
		rootfs string
		args   []string
	}{
		{"relative rootfs", "rootfs", []string{"sleep", "1"}},
		{"no args", "/tmp/rootfs", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := BundleSpec(context.Background(), tt.rootfs, tt.args)
			if !errors.Is(err, errdefs.ErrInvalidArgument) {
				t.Errorf("error %v is not ErrInvalidArgument", err)
			}
		})
	}
}

func TestRuntimeBinary(t *testing.T) {
	if _, err := RuntimeBinary("enclave"); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("unknown class: error %v is not ErrInvalidArgument", err)
	}
	dir := t.TempDir()
	fake := filepath.Join(dir, "crun")
	if err := os.WriteFile(fake, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir)
	got, err := RuntimeBinary("crun")
	if err != nil || got != fake {
		t.Errorf("RuntimeBinary(crun) = %q, %v; want %q", got, err, fake)
	}
	if _, err := RuntimeBinary("runc"); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("missing binary: error %v is not ErrFailedPrecondition", err)
	}
}
