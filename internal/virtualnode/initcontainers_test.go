package virtualnode

import (
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/internal/model"
)

// TestInstanceSpecInitContainers: init containers are mapped in order,
// with the pod's marker env, and count in the resources as the scheduler
// counts a pod's effective request: the larger of the app containers' sum
// and the largest init container.
func TestInstanceSpecInitContainers(t *testing.T) {
	pod := testPod() // app containers: 750m and 128Mi in all
	pod.Spec.InitContainers = []corev1.Container{
		{Name: "migrate", Image: "busybox", Command: []string{"sh", "-c", "true"},
			Resources: corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("2"), corev1.ResourceMemory: resource.MustParse("64Mi")}}},
		{Name: "wait", Image: "busybox", Env: []corev1.EnvVar{{Name: "K", Value: "V"}}},
	}
	spec, err := InstanceSpec(pod, "vn")
	if err != nil {
		t.Fatal(err)
	}
	if len(spec.InitContainers) != 2 || spec.InitContainers[0].Name != "migrate" || spec.InitContainers[1].Name != "wait" ||
		spec.InitContainers[0].Command[2] != "true" {
		t.Fatalf("init containers %+v", spec.InitContainers)
	}
	if spec.Resources.CPU != "2" || spec.Resources.Memory != "128Mi" {
		t.Errorf("resources cpu %q memory %q, want 2 (the largest init container) and 128Mi (the app containers' sum)", spec.Resources.CPU, spec.Resources.Memory)
	}
	env := map[string]string{}
	for _, e := range spec.InitContainers[1].Env {
		env[e.Name] = e.Value
	}
	if env["K"] != "V" || env[EnvPodUID] != "u1" {
		t.Errorf("init container env %v, want its own and the pod's marker", env)
	}
	if err := model.Validate(&spec); err != nil && !strings.Contains(err.Error(), "spec.runtime") {
		t.Errorf("the mapped spec does not validate: %v", err)
	}
}

// TestPodStatusInitContainers: initContainerStatuses and the Initialized
// condition as the kubelet reports them; the Init:... reasons are
// kubectl's to derive, not the pod's own reason.
func TestPodStatusInitContainers(t *testing.T) {
	now := time.Now().Truncate(time.Second)
	zero, one := 0, 1
	pod := testPod()
	pod.Spec.InitContainers = []corev1.Container{{Name: "i1", Image: "busybox"}, {Name: "i2", Image: "busybox"}}
	waitingApps := []api.ContainerStatus{
		{Name: "a", State: api.ContainerWaiting, Reason: model.ReasonPodInitializing},
		{Name: "b", State: api.ContainerWaiting, Reason: model.ReasonPodInitializing},
	}
	tests := []struct {
		name        string
		status      api.InstanceStatus
		phase       corev1.PodPhase
		initialized corev1.ConditionStatus
		states      string // of i1, i2 and a
		incomplete  string
	}{
		{
			name: "second running",
			status: api.InstanceStatus{Phase: api.PhaseCreating, Reason: "Init:1/2", InitContainers: []api.ContainerStatus{
				{Name: "i1", State: api.ContainerTerminated, ExitCode: &zero, Reason: "Completed", StartedAt: &now, FinishedAt: &now},
				{Name: "i2", State: api.ContainerRunning, StartedAt: &now},
			}, Containers: waitingApps},
			phase: corev1.PodPending, initialized: corev1.ConditionFalse,
			states: "terminated:Completed running waiting:PodInitializing", incomplete: "[i2]",
		},
		{
			name:   "not reported yet",
			status: api.InstanceStatus{Phase: api.PhaseCreating, Reason: "Init:0/2"},
			phase:  corev1.PodPending, initialized: corev1.ConditionFalse,
			states: "waiting:PodInitializing waiting:PodInitializing waiting:PodInitializing", incomplete: "[i1 i2]",
		},
		{
			name: "backoff",
			status: api.InstanceStatus{Phase: api.PhaseCreating, Reason: model.ReasonInitCrashLoop, Message: "init container i1 exited with code 1", InitContainers: []api.ContainerStatus{
				{Name: "i1", State: api.ContainerTerminated, ExitCode: &one, Reason: "Error", RestartCount: 2},
				{Name: "i2", State: api.ContainerWaiting, Reason: model.ReasonPodInitializing},
			}, Containers: waitingApps},
			phase: corev1.PodPending, initialized: corev1.ConditionFalse,
			states: "waiting:CrashLoopBackOff waiting:PodInitializing waiting:PodInitializing", incomplete: "[i1 i2]",
		},
		{
			name: "failed under Never",
			status: api.InstanceStatus{Phase: api.PhaseFailed, Reason: "Init:Error", Message: "init container i1 exited with code 1", InitContainers: []api.ContainerStatus{
				{Name: "i1", State: api.ContainerTerminated, ExitCode: &one, Reason: "Error"},
				{Name: "i2", State: api.ContainerWaiting, Reason: model.ReasonPodInitializing},
			}, Containers: waitingApps},
			phase: corev1.PodFailed, initialized: corev1.ConditionFalse,
			states: "terminated:Error waiting:PodInitializing waiting:PodInitializing", incomplete: "[i1 i2]",
		},
		{
			name: "all completed",
			status: api.InstanceStatus{Phase: api.PhaseRunning, InitContainers: []api.ContainerStatus{
				{Name: "i1", State: api.ContainerTerminated, ExitCode: &zero, Reason: "Completed"},
				{Name: "i2", State: api.ContainerTerminated, ExitCode: &zero, Reason: "Completed"},
			}, Containers: []api.ContainerStatus{{Name: "a", State: api.ContainerRunning, StartedAt: &now}, {Name: "b", State: api.ContainerRunning, StartedAt: &now}}},
			phase: corev1.PodRunning, initialized: corev1.ConditionTrue,
			states: "terminated:Completed terminated:Completed running",
		},
	}
	state := func(s corev1.ContainerState) string {
		switch {
		case s.Running != nil:
			return "running"
		case s.Terminated != nil:
			return "terminated:" + s.Terminated.Reason
		case s.Waiting != nil:
			return "waiting:" + s.Waiting.Reason
		}
		return "none"
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inst := api.Instance{UID: "iuid", CreatedAt: now, Status: tt.status}
			st := PodStatus(pod, &inst, "192.0.2.1")
			if st.Phase != tt.phase {
				t.Errorf("phase %s, want %s", st.Phase, tt.phase)
			}
			if strings.HasPrefix(st.Reason, "Init:") {
				t.Errorf("pod reason %q: the kubelet leaves Init:... to kubectl", st.Reason)
			}
			if len(st.InitContainerStatuses) != 2 {
				t.Fatalf("initContainerStatuses %+v", st.InitContainerStatuses)
			}
			got := state(st.InitContainerStatuses[0].State) + " " + state(st.InitContainerStatuses[1].State) + " " + state(st.ContainerStatuses[0].State)
			if got != tt.states {
				t.Errorf("states %q, want %q", got, tt.states)
			}
			for _, c := range st.Conditions {
				if c.Type != corev1.PodInitialized {
					continue
				}
				if c.Status != tt.initialized || (tt.incomplete != "" && !strings.Contains(c.Message, tt.incomplete)) {
					t.Errorf("Initialized %s %q, want %s naming %s", c.Status, c.Message, tt.initialized, tt.incomplete)
				}
			}
			if tt.name == "backoff" {
				i1 := st.InitContainerStatuses[0]
				if i1.LastTerminationState.Terminated == nil || i1.LastTerminationState.Terminated.ExitCode != 1 || i1.RestartCount != 2 {
					t.Errorf("i1 in backoff: %+v, want its last exit and restart count", i1)
				}
			}
			if again := PodStatus(pod, &inst, "192.0.2.1"); again.String() != st.String() {
				t.Error("status differs between two reads of the same instance")
			}
		})
	}
}
