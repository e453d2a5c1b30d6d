package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/internal/agent/network"
	"github.com/kanga-run/kanga/internal/agent/steps"
)

// fakeStepNetwork is a Network (a fake for unit tests: no CNI) that hands
// out one attachment in netns and records what it was asked.
type fakeStepNetwork struct {
	Network
	netns     string
	setupErr  error
	assignErr error

	mu    sync.Mutex
	calls []string
}

func (f *fakeStepNetwork) record(c string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, c)
}

func (f *fakeStepNetwork) Setup(_ context.Context, id string, _ []network.Port, _ network.Limits) (*network.Attachment, error) {
	f.record("setup " + id)
	if f.setupErr != nil {
		return nil, f.setupErr
	}
	return &network.Attachment{IP: "10.99.0.7", NetNS: f.netns}, nil
}

func (f *fakeStepNetwork) Teardown(_ context.Context, id string, _ []network.Port) error {
	f.record("teardown " + id)
	return nil
}

func (f *fakeStepNetwork) Assign(_ context.Context, id, tenant string) error {
	f.record("assign " + id + " " + tenant)
	return f.assignErr
}

// testNetNS makes a network namespace for the test (the sandbox's sysctls
// are written inside one) and removes it after.
func testNetNS(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: makes a network namespace")
	}
	name := fmt.Sprintf("kanga-lc-%d-%s", os.Getpid(), strings.ReplaceAll(t.Name(), "/", "-"))
	if len(name) > 60 {
		name = name[:60]
	}
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Skipf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	return "/var/run/netns/" + name
}

func newStepRunner(t *testing.T, nw Network, phase api.Phase) (*Agent, *runner) {
	t.Helper()
	a := New(Config{HostName: "h", DataDir: t.TempDir(), Network: nw,
		CgroupRoot: fmt.Sprintf("/kanga-lc-%d", os.Getpid())})
	inst := &api.Instance{Name: "web", UID: "u-lc-1", Tenant: "acme",
		Status: api.InstanceStatus{Phase: phase}}
	return a, newRunner(a, inst)
}

func TestStartStepsInOrder(t *testing.T) {
	_, r := newStepRunner(t, &fakeStepNetwork{}, api.PhasePending)
	inst, _ := r.snapshot()
	names := func(ss []steps.Step) []string {
		var n []string
		for _, s := range ss {
			n = append(n, s.Name())
		}
		return n
	}
	if got, want := names(r.startSteps(&inst)), []string{"network", "cgroup", "files", "volumes", "pvolumes", "devices", "containers", "tasks"}; !slices.Equal(got, want) {
		t.Errorf("startSteps = %q, want %q", got, want)
	}
	if got, want := names(r.warmSteps(&inst, &warmCtr{})), []string{"warm-claim"}; !slices.Equal(got, want) {
		t.Errorf("warmSteps = %q, want %q", got, want)
	}
}

// TestNetworkStep: the network step undoes only a sandbox it set up for a
// Pending instance, and removes it itself when it fails half way.
func TestNetworkStep(t *testing.T) {
	netns := testNetNS(t)
	boom := errors.New("boom")
	tests := []struct {
		name      string
		phase     api.Phase
		netns     string
		setupErr  error
		assignErr error
		wantErr   string
		wantCalls []string // after Do
		wantUndo  bool
	}{
		{name: "fresh", phase: api.PhasePending, netns: netns,
			wantCalls: []string{"setup u-lc-1", "assign u-lc-1 acme"}, wantUndo: true},
		{name: "adopted", phase: api.PhaseRunning, netns: netns,
			wantCalls: []string{"setup u-lc-1", "assign u-lc-1 acme"}},
		{name: "setup fails", phase: api.PhasePending, netns: netns, setupErr: boom,
			wantErr: "setting up the network sandbox: boom", wantCalls: []string{"setup u-lc-1"}},
		{name: "assign fails fresh", phase: api.PhasePending, netns: netns, assignErr: boom,
			wantErr:   "applying the tenant's network rules: boom",
			wantCalls: []string{"setup u-lc-1", "assign u-lc-1 acme", "teardown u-lc-1"}},
		{name: "assign fails adopted", phase: api.PhaseCreating, netns: netns, assignErr: boom,
			wantErr:   "applying the tenant's network rules: boom",
			wantCalls: []string{"setup u-lc-1", "assign u-lc-1 acme"}},
		{name: "sysctls fail fresh", phase: api.PhasePending, netns: "/nonexistent/netns",
			wantErr:   "setting up the network sandbox",
			wantCalls: []string{"setup u-lc-1", "assign u-lc-1 acme", "teardown u-lc-1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			nw := &fakeStepNetwork{netns: tt.netns, setupErr: tt.setupErr, assignErr: tt.assignErr}
			a, r := newStepRunner(t, nw, tt.phase)
			inst, _ := r.snapshot()
			undo, err := (&networkStep{r: r, inst: &inst}).Do(context.Background())
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Do: %v, want %q", err, tt.wantErr)
				}
				if undo != nil || r.att != nil || r.ip != "" {
					t.Errorf("a failed step left an undo (%v) or an attachment (%v, %q)", undo != nil, r.att, r.ip)
				}
			} else if err != nil {
				t.Fatalf("Do: %v", err)
			}
			if !slices.Equal(nw.calls, tt.wantCalls) {
				t.Errorf("calls %q, want %q", nw.calls, tt.wantCalls)
			}
			if tt.wantErr != "" {
				return
			}
			if r.ip != "10.99.0.7" || r.att == nil || r.att.NetNS != tt.netns {
				t.Errorf("runner has ip %q, attachment %v", r.ip, r.att)
			}
			if (undo != nil) != tt.wantUndo {
				t.Fatalf("undo = %v, want %v", undo != nil, tt.wantUndo)
			}
			if undo == nil {
				return
			}
			if err := undo(context.Background()); err != nil {
				t.Fatal(err)
			}
			if want := append(tt.wantCalls, "teardown u-lc-1"); !slices.Equal(nw.calls, want) {
				t.Errorf("calls after undo %q, want %q", nw.calls, want)
			}
			if _, ok := a.netIDs.Load(r.uid); ok || r.ip != "" || r.att != nil {
				t.Errorf("the undone sandbox is still recorded: netID known %v, ip %q", ok, r.ip)
			}
		})
	}
}

// TestFilesStep: the files are written with the instance's name and
// address; the undo removes them and keeps the sandbox dir's records.
func TestFilesStep(t *testing.T) {
	for _, phase := range []api.Phase{api.PhasePending, api.PhaseRunning} {
		t.Run(string(phase), func(t *testing.T) {
			a, r := newStepRunner(t, &fakeStepNetwork{}, phase)
			inst, _ := r.snapshot()
			r.ip = "10.99.0.8"
			dir := a.sandboxDir(r.uid)
			if err := a.writeNetID(r.uid, "pool-x"); err != nil {
				t.Fatal(err)
			}
			undo, err := (&filesStep{r: r, inst: &inst}).Do(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			b, err := os.ReadFile(filepath.Join(dir, "hosts"))
			if err != nil || !strings.Contains(string(b), "10.99.0.8\tweb\n") {
				t.Fatalf("hosts = %q, %v", b, err)
			}
			if phase != api.PhasePending {
				if undo != nil {
					t.Fatal("an adopted instance's files have an undo")
				}
				return
			}
			if err := undo(context.Background()); err != nil {
				t.Fatal(err)
			}
			for _, f := range []string{"hosts", "hostname", "resolv.conf"} {
				if _, err := os.Stat(filepath.Join(dir, f)); !os.IsNotExist(err) {
					t.Errorf("%s left after the undo: %v", f, err)
				}
			}
			if a.readNetID(r.uid) != "pool-x" {
				t.Error("the undo removed the sandbox record")
			}
		})
	}
}

// failStep fails; it stands for a later step (a fake: no containerd).
type failStep struct{ err error }

func (failStep) Name() string                             { return "containers" }
func (s failStep) Do(context.Context) (steps.Undo, error) { return nil, s.err }

// TestStartStepsUndoneOnFailure runs the real network, cgroup and files
// steps of a Pending instance, then a failing step in place of the
// containers: everything is undone, the error names the failed step, and
// a later teardown (the instance's delete) finds nothing left to break on.
func TestStartStepsUndoneOnFailure(t *testing.T) {
	if _, err := os.Stat(filepath.Join(cgroupV1Root, "memory")); err != nil {
		t.Skip("requires cgroup v1")
	}
	nw := &fakeStepNetwork{netns: testNetNS(t)}
	a, r := newStepRunner(t, nw, api.PhasePending)
	t.Cleanup(func() { removeCgroup(a.cgRoot) })
	inst, _ := r.snapshot()
	inst.Spec.Resources = api.Resources{CPU: "0.5", Memory: "64Mi", Pids: 20}
	cause := errors.New("image not found")
	err := r.stepRunner().Run(context.Background(),
		&networkStep{r: r, inst: &inst}, &cgroupStep{r: r, inst: &inst}, &filesStep{r: r, inst: &inst}, failStep{cause})
	var se *steps.Error
	if !errors.As(err, &se) || se.Step != "containers" || !errors.Is(err, cause) {
		t.Fatalf("Run: %v, want the containers step's failure", err)
	}
	if want := []string{"setup u-lc-1", "assign u-lc-1 acme", "teardown u-lc-1"}; !slices.Equal(nw.calls, want) {
		t.Errorf("network calls %q, want %q", nw.calls, want)
	}
	if _, err := os.Stat(filepath.Join(cgroupV1Root, "memory", a.instanceCgroup(r.uid))); !os.IsNotExist(err) {
		t.Errorf("the instance cgroup is left: %v", err)
	}
	if _, err := os.Stat(filepath.Join(a.sandboxDir(r.uid), "hosts")); !os.IsNotExist(err) {
		t.Errorf("the hosts file is left: %v", err)
	}
	if r.ip != "" || r.att != nil {
		t.Errorf("the runner still has address %q", r.ip)
	}
}

// TestCgroupStepAdoptedKeepsCgroup: a failure after the cgroup step of an
// instance an earlier agent started leaves its cgroup (its tasks run in
// it).
func TestCgroupStepAdoptedKeepsCgroup(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("requires root")
	}
	if _, err := os.Stat(filepath.Join(cgroupV1Root, "memory")); err != nil {
		t.Skip("requires cgroup v1")
	}
	a, r := newStepRunner(t, &fakeStepNetwork{}, api.PhaseRunning)
	t.Cleanup(func() { removeCgroup(a.cgRoot) })
	inst, _ := r.snapshot()
	err := r.stepRunner().Run(context.Background(), &cgroupStep{r: r, inst: &inst}, failStep{errors.New("no task")})
	if err == nil || err.Error() != "containers: no task" {
		t.Fatalf("Run: %v", err)
	}
	if _, err := os.Stat(filepath.Join(cgroupV1Root, "memory", a.instanceCgroup(r.uid))); err != nil {
		t.Errorf("the adopted instance's cgroup was removed: %v", err)
	}
}

func TestUnstartWithoutTask(t *testing.T) {
	_, r := newStepRunner(t, &fakeStepNetwork{}, api.PhasePending)
	c := &ctr{generation: 3, status: api.ContainerStatus{State: api.ContainerWaiting}}
	if err := r.unstart(context.Background(), c); err != nil || c.generation != 3 {
		t.Fatalf("unstart of a container with no task: %v, generation %d", err, c.generation)
	}
}
