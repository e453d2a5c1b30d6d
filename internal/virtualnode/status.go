package virtualnode

import (
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/internal/model"
)

// PodStatus is what the pod's status says about its Kanga instance. Ready
// means every container is running, not merely that the instance exists.
func PodStatus(pod *corev1.Pod, inst *api.Instance, hostIP string) corev1.PodStatus {
	st := corev1.PodStatus{
		Phase:    podPhase(inst.Status.Phase),
		Reason:   inst.Status.Reason,
		Message:  inst.Status.Message,
		HostIP:   hostIP,
		PodIP:    inst.Status.IP,
		QOSClass: pod.Status.QOSClass,
	}
	if hostIP != "" {
		st.HostIPs = []corev1.HostIP{{IP: hostIP}}
	}
	if inst.Status.IP != "" {
		st.PodIPs = []corev1.PodIP{{IP: inst.Status.IP}}
	}
	created := metav1.NewTime(inst.CreatedAt)
	st.StartTime = &created

	byName := make(map[string]api.ContainerStatus, len(inst.Status.Containers))
	for _, c := range inst.Status.Containers {
		byName[c.Name] = c
	}
	ready := inst.Status.Phase == api.PhaseRunning && !inst.DeletionRequested
	for _, c := range pod.Spec.Containers {
		cs := containerStatus(c, byName[c.Name], inst)
		if !cs.Ready {
			ready = false
		}
		st.ContainerStatuses = append(st.ContainerStatuses, cs)
	}

	readyStatus := corev1.ConditionFalse
	if ready {
		readyStatus = corev1.ConditionTrue
	}
	since := created
	if inst.Status.StartedAt != nil {
		since = metav1.NewTime(*inst.Status.StartedAt)
	}
	initialized := initStatuses(pod, inst, &st)
	if c, ok := instanceReady(inst); ok && !c.LastTransitionTime.IsZero() {
		// The host's own record of when readiness last changed: stable
		// between polls, and moves with a probe's verdict.
		since = metav1.NewTime(c.LastTransitionTime)
	}
	st.Conditions = []corev1.PodCondition{
		{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: created},
		initialized,
		{Type: corev1.ContainersReady, Status: readyStatus, LastTransitionTime: since},
		{Type: corev1.PodReady, Status: readyStatus, LastTransitionTime: since},
	}
	return st
}

// ApplyReadinessGates folds the pod's readiness gates into its status as
// the kubelet does: each gate's condition is carried over from live (the
// conditions the API server has, which the gate's controller sets), and
// the pod is Ready only when its containers are and every gate's
// condition is True.
func ApplyReadinessGates(st *corev1.PodStatus, pod *corev1.Pod, live []corev1.PodCondition) {
	if len(pod.Spec.ReadinessGates) == 0 {
		return
	}
	byType := make(map[corev1.PodConditionType]corev1.PodCondition, len(live))
	for _, c := range live {
		byType[c.Type] = c
	}
	var missing []string
	for _, g := range pod.Spec.ReadinessGates {
		c, ok := byType[g.ConditionType]
		if ok {
			st.Conditions = append(st.Conditions, c)
		}
		if !ok || c.Status != corev1.ConditionTrue {
			missing = append(missing, string(g.ConditionType))
		}
	}
	if len(missing) == 0 {
		return
	}
	for i := range st.Conditions {
		if c := &st.Conditions[i]; c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
			c.Status = corev1.ConditionFalse
			c.Reason = "ReadinessGatesNotReady"
			c.Message = "the status of pod readiness gates is not True: " + strings.Join(missing, ", ")
		}
	}
}

// initStatuses fills in the pod's initContainerStatuses as the kubelet
// reports them, and returns its Initialized condition: false, naming the
// init containers not yet completed, until they all completed. A failed
// init container that waits to run again is Waiting CrashLoopBackOff with
// its exit as the last state; kubectl derives Init:N/M, Init:Error and
// Init:CrashLoopBackOff from these, so the pod's own reason stays empty,
// as the kubelet leaves it.
func initStatuses(pod *corev1.Pod, inst *api.Instance, st *corev1.PodStatus) corev1.PodCondition {
	cond := corev1.PodCondition{Type: corev1.PodInitialized, Status: corev1.ConditionTrue, LastTransitionTime: metav1.NewTime(inst.CreatedAt)}
	if len(pod.Spec.InitContainers) == 0 {
		return cond
	}
	if strings.HasPrefix(st.Reason, "Init:") {
		st.Reason, st.Message = "", ""
	}
	byName := make(map[string]api.ContainerStatus, len(inst.Status.InitContainers))
	for _, c := range inst.Status.InitContainers {
		byName[c.Name] = c
	}
	var incomplete []string
	for _, c := range pod.Spec.InitContainers {
		ic := byName[c.Name]
		cs := containerStatus(c, ic, inst)
		cs.Ready = false
		switch {
		case ic.State == api.ContainerTerminated && ic.ExitCode != nil && *ic.ExitCode == 0:
			cs.Ready = true // the kubelet marks a completed init container ready
		case ic.State == api.ContainerTerminated && inst.Status.Reason == model.ReasonInitCrashLoop:
			cs.LastTerminationState.Terminated = cs.State.Terminated
			cs.State = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{
				Reason:  "CrashLoopBackOff",
				Message: inst.Status.Message,
			}}
			fallthrough
		default:
			incomplete = append(incomplete, c.Name)
		}
		if w := cs.State.Waiting; w != nil && ic.Reason == "" && w.Reason != "CrashLoopBackOff" {
			// Not reported yet: not the instance's Init:N/M, the kubelet's.
			w.Reason, w.Message = model.ReasonPodInitializing, ""
		}
		st.InitContainerStatuses = append(st.InitContainerStatuses, cs)
	}
	if len(incomplete) > 0 {
		cond.Status = corev1.ConditionFalse
		cond.Reason = "ContainersNotInitialized"
		cond.Message = fmt.Sprintf("containers with incomplete status: [%s]", strings.Join(incomplete, " "))
	}
	return cond
}

func podPhase(p api.Phase) corev1.PodPhase {
	switch p {
	case api.PhaseRunning:
		return corev1.PodRunning
	case api.PhaseSucceeded:
		return corev1.PodSucceeded
	case api.PhaseFailed:
		return corev1.PodFailed
	default: // Pending, Creating
		return corev1.PodPending
	}
}

func containerStatus(spec corev1.Container, c api.ContainerStatus, inst *api.Instance) corev1.ContainerStatus {
	cs := corev1.ContainerStatus{
		Name:         spec.Name,
		Image:        spec.Image,
		RestartCount: int32(c.RestartCount),
	}
	if inst.UID != "" {
		cs.ContainerID = "kanga://" + inst.UID + "/" + spec.Name
	}
	switch c.State {
	case api.ContainerRunning:
		// Never "now": the status must not change between two polls of
		// an unchanged instance, or every poll would update the pod.
		started := metav1.NewTime(inst.CreatedAt)
		if c.StartedAt != nil {
			started = metav1.NewTime(*c.StartedAt)
		}
		cs.State.Running = &corev1.ContainerStateRunning{StartedAt: started}
		cs.Ready = inst.Status.Phase == api.PhaseRunning && !inst.DeletionRequested
		if _, ok := instanceReady(inst); ok {
			// The host runs probes: ready is its verdict (started, and
			// passing the readiness probe), so Services route only to
			// ready pods.
			cs.Ready = cs.Ready && c.Ready
		}
		t := true
		cs.Started = &t
	case api.ContainerTerminated:
		cs.State.Terminated = terminated(c)
	default:
		reason := c.Reason
		if reason == "" {
			// Kanga's own reason (image pull, scheduling) is the best
			// explanation for a container that has not started.
			reason = inst.Status.Reason
		}
		if reason == "" {
			reason = "ContainerCreating"
		}
		if strings.HasPrefix(reason, "Init:") {
			reason = model.ReasonPodInitializing // the pod's Init:N/M is kubectl's
		}
		cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: reason, Message: inst.Status.Message}
	}
	return cs
}

func terminated(c api.ContainerStatus) *corev1.ContainerStateTerminated {
	t := &corev1.ContainerStateTerminated{Reason: c.Reason, Message: c.Message}
	if c.ExitCode != nil {
		t.ExitCode = int32(*c.ExitCode)
	}
	if t.Reason == "" {
		t.Reason = "Completed"
		if t.ExitCode != 0 {
			t.Reason = "Error"
		}
	}
	if c.StartedAt != nil {
		t.StartedAt = metav1.NewTime(*c.StartedAt)
	}
	if c.FinishedAt != nil {
		t.FinishedAt = metav1.NewTime(*c.FinishedAt)
	}
	return t
}

// deletedStatus is the status reported once a pod's instance was deleted:
// every container terminated, so that the pod controller removes the pod
// at once instead of waiting out its grace period.
func deletedStatus(pod *corev1.Pod, now time.Time) corev1.PodStatus {
	st := *pod.Status.DeepCopy()
	st.Phase = corev1.PodSucceeded
	st.Reason = "KangaInstanceDeleted"
	st.Message = "the Kanga instance was deleted"
	fin := metav1.NewTime(now)
	st.ContainerStatuses = nil
	for _, c := range pod.Spec.Containers {
		cs := corev1.ContainerStatus{
			Name:  c.Name,
			Image: c.Image,
			State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
				Reason:     "KangaInstanceDeleted",
				FinishedAt: fin,
			}},
		}
		for _, old := range pod.Status.ContainerStatuses {
			if old.Name == c.Name {
				cs.RestartCount = old.RestartCount
				cs.ContainerID = old.ContainerID
				if old.State.Running != nil {
					cs.State.Terminated.StartedAt = old.State.Running.StartedAt
				}
			}
		}
		st.ContainerStatuses = append(st.ContainerStatuses, cs)
	}
	for i := range st.Conditions {
		if st.Conditions[i].Type == corev1.PodReady || st.Conditions[i].Type == corev1.ContainersReady {
			st.Conditions[i].Status = corev1.ConditionFalse
			st.Conditions[i].LastTransitionTime = fin
		}
	}
	return st
}

// instanceReady is the instance's Ready condition; ok is false for an
// instance whose host's agent reports none (it predates probes): its
// running containers are then taken as ready.
func instanceReady(inst *api.Instance) (api.InstanceCondition, bool) {
	for _, c := range inst.Status.Conditions {
		if c.Type == api.InstanceReady {
			return c, true
		}
	}
	return api.InstanceCondition{}, false
}
