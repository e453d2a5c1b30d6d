package integration

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kanga-run/kanga/internal/virtualnode"
)

// TestVirtualNodeSecurityContext: a pod's securityContext (the pod's user,
// group, supplemental groups and fsGroup, the container's read-only root)
// and its labels and annotations reach its instance; the process runs as
// that user with those groups, / is read-only; kanga ps -l selects the
// instance by the pod's labels. (A privileged pod is refused by this
// control plane's API server itself, --allow-privileged=false; the
// virtual node's own refusal is TestInstanceSpecRefusesUnsupported's.)
func TestVirtualNodeSecurityContext(t *testing.T) {
	bin := k8sBinaries(t)
	p := startPlatform(t)
	p.importImages()
	cp := startControlPlane(t, bin)
	ctx := context.Background()
	pods := cp.client.CoreV1().Pods("default")
	const node = "kanga-vn-sec"
	startVirtualNode(t, p, cp, node)
	i64 := func(v int64) *int64 { return &v }
	yes := true
	pod := func(name string) *corev1.Pod {
		return &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app": "sec", "tier": "front"},
				Annotations: map[string]string{"example.com/owner": "ops"}},
			Spec: corev1.PodSpec{
				NodeName:    node,
				Tolerations: []corev1.Toleration{{Key: virtualnode.Taint.Key, Operator: corev1.TolerationOpEqual, Value: virtualnode.Taint.Value, Effect: virtualnode.Taint.Effect}},
				SecurityContext: &corev1.PodSecurityContext{RunAsUser: i64(1000), RunAsGroup: i64(1001), RunAsNonRoot: &yes,
					SupplementalGroups: []int64{3000}, FSGroup: i64(2000)},
				Containers: []corev1.Container{{
					Name: "main", Image: "kanga.test/busybox",
					Command:         []string{"sh", "-c", "id; touch /x 2>&1; echo ready; exec sleep 3600"},
					SecurityContext: &corev1.SecurityContext{ReadOnlyRootFilesystem: &yes, AllowPrivilegeEscalation: new(bool)},
				}},
			},
		}
	}
	if _, err := pods.Create(ctx, pod("sec"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var logs string
	waitFor(t, "the logs of pod sec", 3*time.Minute, func() bool {
		b, err := pods.GetLogs("sec", &corev1.PodLogOptions{}).DoRaw(ctx)
		logs = string(b)
		return err == nil && strings.Contains(logs, "ready")
	})
	for _, want := range []string{"uid=1000 gid=1001 groups=1001,2000,3000", "Read-only file system"} {
		if !strings.Contains(logs, want) {
			t.Errorf("pod sec's logs lack %q:\n%s", want, logs)
		}
	}
	name := virtualnode.InstanceName("default", "sec")
	inst := p.inspect(name)
	if inst.Labels["app"] != "sec" || inst.Annotations["example.com/owner"] != "ops" {
		t.Errorf("instance labels %v, annotations %v", inst.Labels, inst.Annotations)
	}
	if sc := inst.Spec.Containers[0].SecurityContext; sc == nil || !sc.ReadOnlyRootFilesystem || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot {
		t.Errorf("instance security context %+v", sc)
	}
	if got := strings.Fields(p.must("ps", "-q", "-l", "app=sec,tier in (front)")); len(got) != 1 || got[0] != name {
		t.Errorf("ps -l app=sec: %v, want [%s]", got, name)
	}
	if got := strings.Fields(p.must("ps", "-q", "-l", "app=other")); len(got) != 0 {
		t.Errorf("ps -l app=other: %v", got)
	}

	zero := int64(0)
	if err := pods.Delete(ctx, "sec", metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the instance to go with its pod", 2*time.Minute, func() bool {
		r := p.kanga("ps", "-a", "-q")
		return r.code == 0 && !strings.Contains(r.stdout, name)
	})
}
