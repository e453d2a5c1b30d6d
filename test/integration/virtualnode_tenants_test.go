package integration

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/client"
	"github.com/kanga-run/kanga/internal/virtualnode"
)

// TestVirtualNodeTenantPerNamespace runs the pods of two namespaces through
// `kanga virtual-node --tenant-per-namespace`: each namespace runs in its
// own Kanga tenant and each tenant sees only its own instances. Images
// belong to tenants, so the test gives the two tenants theirs first (an
// operator would `kanga --tenant T image pull`); a third namespace shows
// the tenant created on demand.
func TestVirtualNodeTenantPerNamespace(t *testing.T) {
	bin := k8sBinaries(t)
	p := startPlatform(t)
	p.importImages()
	cfg, err := client.LoadConfig(p.config)
	if err != nil {
		t.Fatal(err)
	}
	// The token kanga up writes is an administrator's.
	admin, err := client.New(cfg.Addr, cfg.Token)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	const prefix = "vn-"
	namespaces := []string{"team-a", "team-b"}
	// Registered after the platform's cleanup, so it runs first: the
	// platform purges only its own tenant.
	t.Cleanup(func() {
		for _, ns := range namespaces {
			c := admin.ForTenant(virtualnode.TenantName(prefix, ns))
			insts, _ := c.ListInstances(ctx)
			for _, i := range insts {
				_ = c.DeleteInstance(ctx, i.Name, true)
			}
		}
	})

	for _, ns := range namespaces {
		tn := virtualnode.TenantName(prefix, ns)
		if _, err := admin.CreateTenant(ctx, api.CreateTenantRequest{Name: tn}); err != nil {
			t.Fatal(err)
		}
		p.must("--tenant", tn, "image", "import", p.imagePath("busybox.tar"))
	}

	cp := startControlPlane(t, bin)
	kube := cp.client
	const node = "kanga-vn"
	startVirtualNode(t, p, cp, node, "--tenant-per-namespace", "--tenant-prefix", prefix)

	for _, ns := range namespaces {
		if _, err := kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := kube.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: "web"},
			Data:       map[string]string{"greeting": "hi " + ns},
		}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 2; i++ {
			if _, err := kube.CoreV1().Pods(ns).Create(ctx, webPod(fmt.Sprintf("web-%d", i), node), metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, ns := range namespaces {
		waitFor(t, "2 pods Ready in "+ns, 3*time.Minute, func() bool {
			list, err := kube.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
			if err != nil {
				return false
			}
			n := 0
			for i := range list.Items {
				if podReady(&list.Items[i]) {
					n++
				}
			}
			return n == 2
		})
	}

	names := func(c *client.Client) []string {
		t.Helper()
		insts, err := c.ListInstances(ctx)
		if err != nil {
			t.Fatalf("list instances: %v", err)
		}
		var out []string
		for _, i := range insts {
			out = append(out, i.Tenant+"/"+i.Name)
		}
		sort.Strings(out)
		return out
	}
	for _, ns := range namespaces {
		tn := virtualnode.TenantName(prefix, ns)
		if _, err := admin.GetTenant(ctx, tn); err != nil {
			t.Errorf("tenant %s of namespace %s: %v", tn, ns, err)
		}
		want := []string{tn + "/" + virtualnode.InstanceName(ns, "web-0"), tn + "/" + virtualnode.InstanceName(ns, "web-1")}
		if got := names(admin.ForTenant(tn)); strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("tenant %s sees %v, want %v", tn, got, want)
		}
	}
	if got := instanceNames(t, p); len(got) != 0 {
		t.Errorf("the token's own tenant has instances %v, want none", got)
	}

	// Logs and exec reach the instance in its namespace's tenant.
	b, err := kube.CoreV1().Pods("team-b").GetLogs("web-1", &corev1.PodLogOptions{}).DoRaw(ctx)
	if err != nil || !strings.Contains(string(b), "hello from web-1") {
		t.Errorf("logs of team-b/web-1: %q, %v", b, err)
	}

	// A namespace with no tenant yet gets one on its first pod; it has no
	// images, and the pod's event says so.
	if _, err := kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "team-c"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	lone := webPod("web-0", node)
	lone.Spec.Containers[0].Env = lone.Spec.Containers[0].Env[:1]
	if _, err := kube.CoreV1().Pods("team-c").Create(ctx, lone, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a Warning event naming the missing image in tenant "+prefix+"team-c", 2*time.Minute, func() bool {
		evs, err := kube.CoreV1().Events("team-c").List(ctx, metav1.ListOptions{FieldSelector: "type=Warning"})
		if err != nil {
			return false
		}
		for _, e := range evs.Items {
			if strings.Contains(e.Message, "kanga.test/busybox") && strings.Contains(e.Message, "not found") {
				return true
			}
		}
		return false
	})
	if _, err := admin.GetTenant(ctx, virtualnode.TenantName(prefix, "team-c")); err != nil {
		t.Errorf("tenant of namespace team-c not created on demand: %v", err)
	}
	namespaces = append(namespaces, "team-c")

	// Deleting the pods deletes each tenant's instances.
	for _, ns := range namespaces {
		if err := kube.CoreV1().Pods(ns).DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for _, ns := range namespaces {
		c := admin.ForTenant(virtualnode.TenantName(prefix, ns))
		waitFor(t, "the instances of "+ns+" gone", 2*time.Minute, func() bool { return len(names(c)) == 0 })
	}
}
