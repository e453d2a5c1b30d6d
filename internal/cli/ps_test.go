package cli

import (
	"strings"
	"testing"
	"time"

	"github.com/kanga-run/kanga/api"
)

var testNow = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

func at(d time.Duration) *time.Time {
	t := testNow.Add(-d)
	return &t
}

func intp(n int) *int { return &n }

// psFixture is one instance in each interesting state.
func psFixture() []api.Instance {
	return []api.Instance{
		{
			Name: "web", Tenant: "acme", CreatedAt: *at(5 * time.Minute),
			Spec: api.InstanceSpec{
				Containers: []api.ContainerSpec{{Name: "busybox", Image: "busybox:1.36"}},
				Ports:      []api.PortMapping{{HostPort: 8080, ContainerPort: 80}, {HostIP: "127.0.0.1", HostPort: 53, ContainerPort: 53, Protocol: "udp"}},
				Runtime:    "crun",
			},
			Status: api.InstanceStatus{
				Phase: api.PhaseRunning, Host: "host-1", IP: "10.88.0.2", StartedAt: at(4 * time.Minute),
				Containers: []api.ContainerStatus{{Name: "busybox", State: api.ContainerRunning, RestartCount: 2}},
			},
		},
		{
			Name: "job", Tenant: "acme", CreatedAt: *at(2 * time.Hour),
			Spec: api.InstanceSpec{Containers: []api.ContainerSpec{{Name: "a", Image: "alpine"}, {Name: "b", Image: "busybox"}}},
			Status: api.InstanceStatus{
				Phase: api.PhaseFailed, Host: "host-2", FinishedAt: at(90 * time.Second),
				Containers: []api.ContainerStatus{
					{Name: "a", State: api.ContainerTerminated, ExitCode: intp(0)},
					{Name: "b", State: api.ContainerTerminated, ExitCode: intp(3)},
				},
			},
		},
		{
			Name: "broken", Tenant: "acme", CreatedAt: *at(30 * time.Second),
			Spec: api.InstanceSpec{Containers: []api.ContainerSpec{{Name: "nope", Image: "nope"}}},
			Status: api.InstanceStatus{
				Phase: api.PhaseFailed, Reason: "ImagePullFailed", Message: "image nope not found", FinishedAt: at(20 * time.Second),
			},
		},
		{
			Name: "new", Tenant: "acme", CreatedAt: *at(time.Second),
			Spec:   api.InstanceSpec{Containers: []api.ContainerSpec{{Name: "busybox", Image: "busybox"}}},
			Status: api.InstanceStatus{Phase: api.PhasePending, Reason: "Scheduling"},
		},
	}
}

func TestWritePS(t *testing.T) {
	var b strings.Builder
	if err := writePS(&b, filterInstances(psFixture(), true), testNow, false); err != nil {
		t.Fatal(err)
	}
	want := `NAME     IMAGE          STATUS                                    IP          PORTS                                        CREATED
new      busybox        Pending (Scheduling)                                                                               1 second ago
broken   nope           Failed (ImagePullFailed) 20 seconds ago                                                            30 seconds ago
web      busybox:1.36   Up 4 minutes, 2 restarts                  10.88.0.2   0.0.0.0:8080->80/tcp, 127.0.0.1:53->53/udp   5 minutes ago
job      alpine (+1)    Exited (3) About a minute ago                                                                      2 hours ago
`
	if b.String() != want {
		t.Errorf("ps output:\n%s\nwant:\n%s", b.String(), want)
	}
}

func TestWritePSWide(t *testing.T) {
	var b strings.Builder
	if err := writePS(&b, filterInstances(psFixture(), false), testNow, true); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(lines) != 3 {
		t.Fatalf("ps without -a shows %d lines, want header + 2 live instances:\n%s", len(lines), b.String())
	}
	for _, col := range []string{"HOST", "RUNTIME", "RESTARTS", "TENANT"} {
		if !strings.Contains(lines[0], col) {
			t.Errorf("wide header %q lacks %s", lines[0], col)
		}
	}
	if f := strings.Fields(lines[2]); f[0] != "web" || f[len(f)-1] != "acme" || f[len(f)-2] != "2" || f[len(f)-3] != "crun" || f[len(f)-4] != "host-1" {
		t.Errorf("wide row %q", lines[2])
	}
}

func TestStatusText(t *testing.T) {
	base := api.Instance{Name: "x"}
	tests := []struct {
		name string
		mod  func(*api.Instance)
		want string
	}{
		{"unknown", func(i *api.Instance) {}, "Unknown"},
		{"creating", func(i *api.Instance) { i.Status.Phase = api.PhaseCreating }, "Creating"},
		{"running without start time", func(i *api.Instance) { i.Status.Phase = api.PhaseRunning }, "Up"},
		{"stopping", func(i *api.Instance) { i.Status.Phase = api.PhaseRunning; i.StopRequested = true }, "Stopping"},
		{"removing", func(i *api.Instance) { i.Status.Phase = api.PhaseRunning; i.DeletionRequested = true }, "Removing"},
		{"succeeded", func(i *api.Instance) {
			i.Status.Phase = api.PhaseSucceeded
			i.Status.Containers = []api.ContainerStatus{{ExitCode: intp(0), FinishedAt: at(3 * time.Hour)}}
		}, "Exited (0) 3 hours ago"},
		{"in restart backoff", func(i *api.Instance) {
			i.Status.Phase = api.PhaseRunning
			i.Spec.RestartPolicy = api.RestartAlways
			i.Status.StartedAt = at(time.Minute)
			i.Status.Containers = []api.ContainerStatus{{State: api.ContainerTerminated, ExitCode: intp(1), FinishedAt: at(4 * time.Second), RestartCount: 3}}
		}, "Restarting (1) 4 seconds ago, 3 restarts"},
		{"one container done, the policy keeps it so", func(i *api.Instance) {
			i.Status.Phase = api.PhaseRunning
			i.Spec.RestartPolicy = api.RestartOnFailure
			i.Status.Containers = []api.ContainerStatus{{State: api.ContainerTerminated, ExitCode: intp(0), FinishedAt: at(4 * time.Second)}, {State: api.ContainerRunning}}
		}, "Up"},
		{"failed without times", func(i *api.Instance) { i.Status.Phase = api.PhaseFailed }, "Failed"},
		{"init containers running", func(i *api.Instance) { i.Status.Phase = api.PhaseCreating; i.Status.Reason = "Init:1/2" }, "Init:1/2"},
		{"init container in backoff", func(i *api.Instance) {
			i.Status.Phase = api.PhaseCreating
			i.Status.Reason = "Init:CrashLoopBackOff"
			i.Status.InitContainers = []api.ContainerStatus{{Name: "i", State: api.ContainerTerminated, ExitCode: intp(1), RestartCount: 2}}
		}, "Init:CrashLoopBackOff, 2 restarts"},
		{"init container failed", func(i *api.Instance) {
			i.Status.Phase = api.PhaseFailed
			i.Status.Reason = "Init:Error"
			i.Status.InitContainers = []api.ContainerStatus{{Name: "i", State: api.ContainerTerminated, ExitCode: intp(3)}}
		}, "Failed (Init:Error)"},
	}
	for _, tt := range tests {
		inst := base
		tt.mod(&inst)
		if got := statusText(inst, testNow); got != tt.want {
			t.Errorf("%s: statusText = %q, want %q", tt.name, got, tt.want)
		}
	}
}

func TestWriteImages(t *testing.T) {
	var b strings.Builder
	images := []api.Image{
		{Name: "busybox:latest", Digest: "sha256:0123456789abcdef0123", Size: 2_150_000, CreatedAt: *at(72 * time.Hour)},
		{Name: "httpd:2", Digest: "sha256:abcdef0123456789abcd", Size: 1_000, CreatedAt: *at(72 * time.Hour), LastUsedAt: at(2 * time.Minute), Starts: 3},
	}
	if err := writeImages(&b, images, testNow); err != nil {
		t.Fatal(err)
	}
	want := "IMAGE            DIGEST         SIZE     CREATED      LAST STARTED\n" +
		"busybox:latest   0123456789ab   2.15MB   3 days ago   -\n" +
		"httpd:2          abcdef012345   1kB      3 days ago   2 minutes ago\n"
	if b.String() != want {
		t.Errorf("images output:\n%q\nwant\n%q", b.String(), want)
	}
}
