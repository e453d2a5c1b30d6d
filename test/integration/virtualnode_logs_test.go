package integration

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kanga-run/kanga/internal/virtualnode"
)

// TestVirtualNodePreviousLogs checks kubectl logs --previous and --tail
// through the API server, the virtual node and the agent: a container that
// fails on its first run and then stays up is restarted in place (same
// root filesystem), and each run's output is served on its own.
func TestVirtualNodePreviousLogs(t *testing.T) {
	bin := k8sBinaries(t)
	p := startPlatform(t)
	p.importImages()
	cp := startControlPlane(t, bin)
	ctx := context.Background()
	pods := cp.client.CoreV1().Pods("default")
	const node = "kanga-vn-logs"
	startVirtualNode(t, p, cp, node)
	if _, err := cp.client.CoreV1().ConfigMaps("default").Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "web"}, Data: map[string]string{"greeting": "hi"},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	steady := webPod("steady", node)
	crashy := webPod("crashy", node)
	crashy.Spec.RestartPolicy = corev1.RestartPolicyAlways
	crashy.Spec.Containers[0].Command = []string{"sh", "-c",
		"if [ -e /seen ]; then echo second run; exec sleep 3600; fi; touch /seen; echo first run; exit 1"}
	for _, pod := range []*corev1.Pod{steady, crashy} {
		if _, err := pods.Create(ctx, pod, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		_ = pods.DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{})
		waitFor(t, "every instance gone", 2*time.Minute, func() bool { return len(instanceNames(t, p)) == 0 })
	})

	// As kubectl logs reads them: a stream, whose error carries the
	// server's message.
	logs := func(name string, opts corev1.PodLogOptions) (string, error) {
		rc, err := pods.GetLogs(name, &opts).Stream(ctx)
		if err != nil {
			return "", err
		}
		defer rc.Close()
		b, err := io.ReadAll(rc)
		return string(b), err
	}
	waitFor(t, "crashy Ready after one restart", 2*time.Minute, func() bool {
		pod, err := pods.Get(ctx, "crashy", metav1.GetOptions{})
		if err != nil || !podReady(pod) || len(pod.Status.ContainerStatuses) != 1 {
			return false
		}
		return pod.Status.ContainerStatuses[0].RestartCount == 1
	})
	// The current run's first line may still be on its way to the log.
	waitFor(t, "the second run's output", 30*time.Second, func() bool {
		out, err := logs("crashy", corev1.PodLogOptions{})
		return err == nil && strings.Contains(out, "second run")
	})

	tests := []struct {
		name string
		opts corev1.PodLogOptions
		want string
	}{
		{"every run", corev1.PodLogOptions{}, "first run\nsecond run\n"},
		{"previous", corev1.PodLogOptions{Previous: true}, "first run\n"},
		{"tail", corev1.PodLogOptions{TailLines: ptr(int64(1))}, "second run\n"},
	}
	for _, tt := range tests {
		out, err := logs("crashy", tt.opts)
		if err != nil || out != tt.want {
			t.Errorf("kubectl logs crashy (%s) = %q, %v; want %q", tt.name, out, err, tt.want)
		}
	}
	// The Kanga CLI reads the same previous run.
	if out := p.must("logs", "-p", virtualnode.InstanceName("default", "crashy")); out != "first run\n" {
		t.Errorf("kanga logs -p = %q, want %q", out, "first run\n")
	}

	// A container that never restarted has no previous run: an error,
	// not an empty log.
	waitFor(t, "steady Ready", time.Minute, func() bool {
		pod, err := pods.Get(ctx, "steady", metav1.GetOptions{})
		return err == nil && podReady(pod)
	})
	if out, err := logs("steady", corev1.PodLogOptions{Previous: true}); err == nil || !strings.Contains(err.Error(), "has not restarted") {
		t.Errorf("kubectl logs --previous of a container that never restarted = %q, %v; want an error saying it has not restarted", out, err)
	} else {
		t.Logf("kubectl logs --previous steady: %v", err)
	}
}

func ptr[T any](v T) *T { return &v }
