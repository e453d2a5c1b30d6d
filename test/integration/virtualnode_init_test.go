package integration

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kanga-run/kanga/internal/virtualnode"
)

// TestVirtualNodeInitContainers runs pods with init containers through a
// real kube-apiserver on `kanga virtual-node`: they complete in order
// before the app container, and their statuses read as the kubelet's
// (initContainerStatuses, Initialized; Error under Never; CrashLoopBackOff
// with a restart count under OnFailure); kubectl logs reaches them.
func TestVirtualNodeInitContainers(t *testing.T) {
	bin := k8sBinaries(t)
	p := startPlatform(t)
	p.importImages()
	cp := startControlPlane(t, bin)
	ctx := context.Background()
	pods := cp.client.CoreV1().Pods("default")
	const node = "kanga-vn-init"
	startVirtualNode(t, p, cp, node)

	pod := func(name string, policy corev1.RestartPolicy, app string, inits ...string) *corev1.Pod {
		p := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: corev1.PodSpec{
				NodeName:      node,
				RestartPolicy: policy,
				Tolerations:   []corev1.Toleration{{Key: virtualnode.Taint.Key, Operator: corev1.TolerationOpEqual, Value: virtualnode.Taint.Value, Effect: virtualnode.Taint.Effect}},
				Containers:    []corev1.Container{{Name: "app", Image: "kanga.test/busybox", Command: []string{"sh", "-c", app}}},
			},
		}
		for i, script := range inits {
			p.Spec.InitContainers = append(p.Spec.InitContainers, corev1.Container{
				Name: "init-" + strconv.Itoa(i+1), Image: "kanga.test/busybox", Command: []string{"sh", "-c", script},
			})
		}
		return p
	}
	get := func(name string) *corev1.Pod {
		got, err := pods.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return &corev1.Pod{}
		}
		return got
	}
	for _, pd := range []*corev1.Pod{
		pod("init-ok", corev1.RestartPolicyAlways, "echo app-up; exec sleep 3600", "echo first-ran", "echo second-ran"),
		pod("init-never", corev1.RestartPolicyNever, "echo app-ran", "echo failing; exit 3"),
		pod("init-loop", corev1.RestartPolicyOnFailure, "echo app-ran", "exit 1"),
	} {
		if _, err := pods.Create(ctx, pd, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}

	waitFor(t, "init-ok Ready", 3*time.Minute, func() bool { return podReady(get("init-ok")) })
	ok := get("init-ok")
	if len(ok.Status.InitContainerStatuses) != 2 {
		t.Fatalf("init-ok initContainerStatuses %+v", ok.Status.InitContainerStatuses)
	}
	for _, c := range ok.Status.InitContainerStatuses {
		if term := c.State.Terminated; term == nil || term.ExitCode != 0 || term.Reason != "Completed" {
			t.Errorf("init container %s: %+v, want terminated Completed with code 0", c.Name, c.State)
		}
	}
	for _, c := range ok.Status.Conditions {
		if c.Type == corev1.PodInitialized && c.Status != corev1.ConditionTrue {
			t.Errorf("Initialized %s (%s) on a running pod", c.Status, c.Message)
		}
	}
	for c, want := range map[string]string{"init-1": "first-ran", "init-2": "second-ran", "app": "app-up"} {
		b, err := pods.GetLogs("init-ok", &corev1.PodLogOptions{Container: c}).DoRaw(ctx)
		if err != nil || strings.TrimSpace(string(b)) != want {
			t.Errorf("kubectl logs init-ok -c %s = %q, %v; want %q", c, b, err, want)
		}
	}

	waitFor(t, "init-never Failed", 3*time.Minute, func() bool { return get("init-never").Status.Phase == corev1.PodFailed })
	never := get("init-never")
	if len(never.Status.InitContainerStatuses) != 1 || never.Status.InitContainerStatuses[0].State.Terminated == nil ||
		never.Status.InitContainerStatuses[0].State.Terminated.ExitCode != 3 || never.Status.InitContainerStatuses[0].State.Terminated.Reason != "Error" {
		t.Errorf("init-never initContainerStatuses %+v, want terminated Error with code 3", never.Status.InitContainerStatuses)
	}
	if w := never.Status.ContainerStatuses[0].State.Waiting; w == nil || w.Reason != "PodInitializing" {
		t.Errorf("init-never app container %+v, want waiting PodInitializing", never.Status.ContainerStatuses[0].State)
	}

	waitFor(t, "init-loop in CrashLoopBackOff after a restart", 3*time.Minute, func() bool {
		st := get("init-loop").Status.InitContainerStatuses
		return len(st) == 1 && st[0].RestartCount >= 1 && st[0].State.Waiting != nil && st[0].State.Waiting.Reason == "CrashLoopBackOff"
	})
	loop := get("init-loop")
	if loop.Status.Phase != corev1.PodPending || loop.Status.InitContainerStatuses[0].LastTerminationState.Terminated == nil {
		t.Errorf("init-loop phase %s, init status %+v: want Pending with the last exit", loop.Status.Phase, loop.Status.InitContainerStatuses[0])
	}

	for _, name := range []string{"init-ok", "init-never", "init-loop"} {
		if err := pods.Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
			t.Error(err)
		}
	}
	waitFor(t, "the instances to be removed", 3*time.Minute, func() bool { return len(instanceNames(t, p)) == 0 })
}
