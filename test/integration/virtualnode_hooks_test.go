package integration

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kanga-run/kanga/internal/virtualnode"
)

// TestVirtualNodeHooksAndTerminationMessage: a pod's postStart hook runs
// in its container on the virtual node, and the termination message the
// container writes to the API server's default file reaches the pod's
// status.
func TestVirtualNodeHooksAndTerminationMessage(t *testing.T) {
	bin := k8sBinaries(t)
	p := startPlatform(t)
	p.importImages()
	cp := startControlPlane(t, bin)
	ctx := context.Background()
	pods := cp.client.CoreV1().Pods("default")
	const node = "kanga-vn-hooks"
	startVirtualNode(t, p, cp, node)

	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "hooked"},
		Spec: corev1.PodSpec{
			NodeName:      node,
			RestartPolicy: corev1.RestartPolicyNever,
			Tolerations:   []corev1.Toleration{{Key: virtualnode.Taint.Key, Operator: corev1.TolerationOpEqual, Value: virtualnode.Taint.Value, Effect: virtualnode.Taint.Effect}},
			Containers: []corev1.Container{{
				Name: "main", Image: "kanga.test/busybox",
				// Waits for the hook's file, then ends with it as its
				// message (the API server defaults the message's path).
				Command: []string{"sh", "-c", "while [ ! -f /tmp/hook ]; do sleep 0.1; done; cat /tmp/hook > /dev/termination-log; exit 3"},
				Lifecycle: &corev1.Lifecycle{PostStart: &corev1.LifecycleHandler{Exec: &corev1.ExecAction{
					Command: []string{"sh", "-c", "echo from-poststart > /tmp/hook"},
				}}},
			}},
		},
	}
	created, err := pods.Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := created.Spec.Containers[0].TerminationMessagePath; got != "/dev/termination-log" {
		t.Fatalf("the API server defaulted terminationMessagePath to %q", got)
	}
	var term *corev1.ContainerStateTerminated
	waitFor(t, "pod hooked to end", 3*time.Minute, func() bool {
		got, err := pods.Get(ctx, "hooked", metav1.GetOptions{})
		if err != nil || len(got.Status.ContainerStatuses) == 0 {
			return false
		}
		term = got.Status.ContainerStatuses[0].State.Terminated
		return term != nil && got.Status.Phase == corev1.PodFailed
	})
	if term.ExitCode != 3 || term.Message != "from-poststart\n" {
		t.Errorf("terminated state %+v, want exit code 3 and message from-poststart", term)
	}
	zero := int64(0)
	if err := pods.Delete(ctx, "hooked", metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
		t.Fatal(err)
	}
}
