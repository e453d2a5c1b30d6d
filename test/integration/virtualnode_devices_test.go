package integration

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kanga-run/kanga/internal/virtualnode"
)

// TestVirtualNodeDevices runs a pod with an extended resource
// (kanga.dev/mock: 1 in its limits) through a real kube-apiserver on
// `kanga virtual-node`: the node advertises the kind, and the pod's
// instance holds a device of it and opens its node.
func TestVirtualNodeDevices(t *testing.T) {
	bin := k8sBinaries(t)
	dir, _ := mockDevices(t)
	p := startPlatformWith(t, "--pool-max", "0", "--cdi-spec-dir", dir)
	p.importImages()
	cp := startControlPlane(t, bin)
	ctx := context.Background()
	pods := cp.client.CoreV1().Pods("default")
	const node = "kanga-vn-dev"
	startVirtualNode(t, p, cp, node, "--device", "kanga.dev/mock=2")

	n, err := cp.client.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if q := n.Status.Capacity["kanga.dev/mock"]; q.Value() != 2 {
		t.Fatalf("node capacity kanga.dev/mock = %s, want 2", q.String())
	}

	pod := webPod("gpu", node)
	pod.Spec.Containers[0].Env = nil
	pod.Spec.Containers[0].Command = []string{"sh", "-c", "exec 3<>/dev/kanga-mock && echo opened $KANGA_MOCK; exec sleep 3600"}
	pod.Spec.Containers[0].Resources.Limits = corev1.ResourceList{"kanga.dev/mock": resource.MustParse("1")}
	if _, err := pods.Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = pods.Delete(ctx, "gpu", metav1.DeleteOptions{})
		waitFor(t, "every instance gone", 2*time.Minute, func() bool { return len(instanceNames(t, p)) == 0 })
	})
	name := virtualnode.InstanceName("default", "gpu")
	waitFor(t, "the pod's instance running with a device", 2*time.Minute, func() bool {
		pod, err := pods.Get(ctx, "gpu", metav1.GetOptions{})
		return err == nil && pod.Status.Phase == corev1.PodRunning && len(p.inspect(name).Status.Devices) == 1
	})
	inst := p.inspect(name)
	if len(inst.Spec.Devices) != 1 || inst.Spec.Devices[0].Kind != "kanga.dev/mock" || inst.Spec.Devices[0].Count != 1 {
		t.Fatalf("the instance asks for %+v, want one kanga.dev/mock", inst.Spec.Devices)
	}
	waitFor(t, "the pod opening its device", time.Minute, func() bool {
		return strings.Contains(p.kanga("logs", name).stdout, "opened m")
	})
}
