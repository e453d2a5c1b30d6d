package model

import (
	"errors"
	"strings"
	"testing"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
)

func TestValidateInitContainers(t *testing.T) {
	good := func() api.InstanceSpec {
		s := api.InstanceSpec{
			Containers:     []api.ContainerSpec{{Name: "app", Image: "kanga.test/busybox:latest"}},
			InitContainers: []api.ContainerSpec{{Name: "setup", Image: "kanga.test/busybox:latest", VolumeMounts: []api.VolumeMount{{Name: "work", MountPath: "/work"}}}},
			Volumes:        []api.Volume{{Name: "work", EmptyDir: &api.EmptyDirVolumeSource{}}},
		}
		Defaults(&s, "runc")
		return s
	}
	many := func(n int) []api.ContainerSpec {
		out := make([]api.ContainerSpec, n)
		for i := range out {
			out[i] = api.ContainerSpec{Name: "i" + strings.Repeat("x", i), Image: "kanga.test/busybox"}
		}
		return out
	}
	for _, tc := range []struct {
		name   string
		mutate func(*api.InstanceSpec)
		want   string // substring of the error; empty for valid
	}{
		{"valid", func(*api.InstanceSpec) {}, ""},
		{"no image", func(s *api.InstanceSpec) { s.InitContainers[0].Image = "" }, "spec.initContainers[0].image is empty"},
		{"bad name", func(s *api.InstanceSpec) { s.InitContainers[0].Name = "Setup_1" }, "spec.initContainers[0].name"},
		{"name of an app container", func(s *api.InstanceSpec) { s.InitContainers[0].Name = "app" }, "spec.containers[0].name \"app\" is used by another container"},
		{"two init containers of one name", func(s *api.InstanceSpec) {
			s.InitContainers = append(s.InitContainers, s.InitContainers[0])
		}, "spec.initContainers[1].name \"setup\" is used by another container"},
		{"bad env", func(s *api.InstanceSpec) { s.InitContainers[0].Env = []api.EnvVar{{Name: "1X"}} }, "spec.initContainers[0].env[0].name"},
		{"relative workdir", func(s *api.InstanceSpec) { s.InitContainers[0].WorkingDir = "tmp" }, "spec.initContainers[0].workingDir"},
		{"mount of no volume", func(s *api.InstanceSpec) { s.InitContainers[0].VolumeMounts[0].Name = "nope" }, "spec.initContainers[0].volumeMounts[0].name \"nope\""},
		{"bad capability", func(s *api.InstanceSpec) {
			s.InitContainers[0].SecurityContext = &api.SecurityContext{Capabilities: &api.Capabilities{Drop: []string{"NOT_A_CAP"}}}
		}, "spec.initContainers[0].securityContext.capabilities.drop[0]"},
		{"sidecar", func(s *api.InstanceSpec) { s.InitContainers[0].RestartPolicy = api.RestartAlways }, "spec.initContainers[0].restartPolicy \"Always\": sidecar init containers are not supported"},
		{"app container restart policy", func(s *api.InstanceSpec) { s.Containers[0].RestartPolicy = api.RestartNever }, "spec.containers[0].restartPolicy"},
		{"too many in all", func(s *api.InstanceSpec) { s.InitContainers = many(MaxContainers) }, "spec.initContainers has 20 containers, 21 with spec.containers"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := good()
			tc.mutate(&s)
			err := Validate(&s)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v does not mention %q", err, tc.want)
			}
			if !errors.Is(err, errdefs.ErrInvalidArgument) {
				t.Fatalf("error %v is not InvalidArgument", err)
			}
		})
	}
}

func TestInitContainerDefaultsAndOrder(t *testing.T) {
	s := api.InstanceSpec{
		Containers:     []api.ContainerSpec{{Image: "kanga.test/busybox"}},
		InitContainers: []api.ContainerSpec{{Image: "kanga.test/busybox"}, {Name: "second", Image: "kanga.test/busybox"}},
	}
	Defaults(&s, "runc")
	if s.InitContainers[0].Name != "init-0" || s.InitContainers[1].Name != "second" {
		t.Fatalf("init container names %q %q, want init-0 second", s.InitContainers[0].Name, s.InitContainers[1].Name)
	}
	var got []string
	for _, c := range AllContainers(&s) {
		got = append(got, c.Field+"="+c.Spec.Name)
	}
	want := "spec.initContainers[0]=init-0 spec.initContainers[1]=second spec.containers[0]=busybox"
	if strings.Join(got, " ") != want {
		t.Fatalf("AllContainers = %v, want %s", got, want)
	}
}

func TestCheckSecurityInitContainer(t *testing.T) {
	s := api.InstanceSpec{
		Containers:     []api.ContainerSpec{{Name: "app", Image: "x"}},
		InitContainers: []api.ContainerSpec{{Name: "setup", Image: "x", SecurityContext: &api.SecurityContext{Capabilities: &api.Capabilities{Add: []string{"SYS_ADMIN"}}}}},
	}
	err := CheckSecurity(&s, "acme", nil, SecurityBounds{})
	if err == nil || !strings.Contains(err.Error(), "spec.initContainers[0].securityContext.capabilities.add[0]") || !errors.Is(err, errdefs.ErrPermissionDenied) {
		t.Fatalf("CheckSecurity = %v, want a refusal naming spec.initContainers[0]", err)
	}
}

func TestInitPhaseAndReason(t *testing.T) {
	code := func(c int) *int { return &c }
	waiting := api.ContainerStatus{Name: "a", State: api.ContainerWaiting, Reason: ReasonPodInitializing}
	completed := func(n string) api.ContainerStatus {
		return api.ContainerStatus{Name: n, State: api.ContainerTerminated, ExitCode: code(0), Reason: "Completed"}
	}
	failed := api.ContainerStatus{Name: "b", State: api.ContainerTerminated, ExitCode: code(3), Reason: "Error", RestartCount: 1}
	running := func(n string) api.ContainerStatus { return api.ContainerStatus{Name: n, State: api.ContainerRunning} }
	app := []api.ContainerStatus{{Name: "app", State: api.ContainerWaiting, Reason: ReasonPodInitializing}}
	for _, tc := range []struct {
		name       string
		policy     api.RestartPolicy
		stopped    bool
		inits, cs  []api.ContainerStatus
		phase      api.Phase
		reason     string
		msgContent string
	}{
		{"first runs", api.RestartNever, false, []api.ContainerStatus{running("a"), {Name: "b", State: api.ContainerWaiting}}, app, api.PhaseCreating, "Init:0/2", ""},
		{"second runs", api.RestartNever, false, []api.ContainerStatus{completed("a"), running("b")}, app, api.PhaseCreating, "Init:1/2", ""},
		{"not started", api.RestartAlways, false, []api.ContainerStatus{waiting}, app, api.PhaseCreating, "Init:0/1", ""},
		{"failed under Never", api.RestartNever, false, []api.ContainerStatus{completed("a"), failed}, app, api.PhaseFailed, "Init:Error", "init container b exited with code 3"},
		{"backoff under OnFailure", api.RestartOnFailure, false, []api.ContainerStatus{completed("a"), failed}, app, api.PhaseCreating, "Init:CrashLoopBackOff", "init container b exited with code 3"},
		{"backoff under Always", api.RestartAlways, false, []api.ContainerStatus{failed}, app, api.PhaseCreating, "Init:CrashLoopBackOff", ""},
		{"stopped in backoff", api.RestartAlways, true, []api.ContainerStatus{failed}, app, api.PhaseFailed, "Init:Error", ""},
		{"oom killed", api.RestartNever, false, []api.ContainerStatus{{Name: "a", State: api.ContainerTerminated, ExitCode: code(137), Reason: "OOMKilled"}}, app, api.PhaseFailed, "Init:OOMKilled", ""},
		{"all done, app runs", api.RestartNever, false, []api.ContainerStatus{completed("a"), completed("b")}, []api.ContainerStatus{running("app")}, api.PhaseRunning, "", ""},
		{"all done, app succeeded", api.RestartNever, false, []api.ContainerStatus{completed("a")}, []api.ContainerStatus{completed("app")}, api.PhaseSucceeded, "", ""},
		{"no init containers", api.RestartNever, false, nil, []api.ContainerStatus{running("app")}, api.PhaseRunning, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := DeriveInstancePhase(tc.policy, tc.stopped, tc.inits, tc.cs); got != tc.phase {
				t.Errorf("phase %s, want %s", got, tc.phase)
			}
			reason, msg := InitReason(tc.policy, tc.stopped, tc.inits)
			if reason != tc.reason || !strings.Contains(msg, tc.msgContent) {
				t.Errorf("reason %q message %q, want %q with %q", reason, msg, tc.reason, tc.msgContent)
			}
		})
	}
}
