package integration

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/client"
	"github.com/kanga-run/kanga/internal/virtualnode"
)

// TestVirtualNodeNetworkPolicy: with --tenant-per-namespace, a real
// kube-apiserver's NetworkPolicies become the namespaces' tenants'
// network policies within seconds: egress to an ipBlock on ports,
// ingress from namespaces chosen by labels (following label changes), a
// deny-all egress policy given to a tenant the node creates for a
// namespace's first pod, the default again once the policies are
// deleted; a policy that selects only some pods gets a Warning event
// naming what Kanga cannot enforce.
func TestVirtualNodeNetworkPolicy(t *testing.T) {
	bin := k8sBinaries(t)
	p := startPlatform(t)
	cfg, err := client.LoadConfig(p.config)
	if err != nil {
		t.Fatal(err)
	}
	admin, err := client.New(cfg.Addr, cfg.Token)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	const prefix = "np-"
	tenantOf := func(ns string) string { return virtualnode.TenantName(prefix, ns) }
	for _, ns := range []string{"team-a", "team-b"} {
		if _, err := admin.CreateTenant(ctx, api.CreateTenantRequest{Name: tenantOf(ns)}); err != nil {
			t.Fatal(err)
		}
	}
	cp := startControlPlane(t, bin)
	kube := cp.client
	const node = "kanga-np"
	startVirtualNode(t, p, cp, node, "--tenant-per-namespace", "--tenant-prefix", prefix)
	for ns, lbls := range map[string]map[string]string{
		"team-a": {"team": "a"}, "team-b": {"team": "b", "access": "a"}, "team-c": {"team": "c"},
	} {
		if _, err := kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: lbls}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	policy := func(tn string) api.TenantNetworkPolicy {
		got, err := admin.GetTenantNetwork(ctx, tn)
		if err != nil {
			t.Fatalf("network policy of %s: %v", tn, err)
		}
		return got
	}
	within := func(what string, cond func() bool) {
		t.Helper()
		start := time.Now()
		waitFor(t, what, 30*time.Second, cond)
		t.Logf("%s after %.1fs", what, time.Since(start).Seconds())
	}

	tcp, udp := corev1.ProtocolTCP, corev1.ProtocolUDP
	p443, p53 := intstr.FromInt32(443), intstr.FromInt32(53)
	web := &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "team-a"},
		Spec: networkingv1.NetworkPolicySpec{
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{
				{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"access": "a"}}},
			}}},
			Egress: []networkingv1.NetworkPolicyEgressRule{
				{To: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "192.0.2.0/24"}}},
					Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &p443}}},
				{Ports: []networkingv1.NetworkPolicyPort{{Protocol: &udp, Port: &p53}}},
			},
		},
	}
	if _, err := kube.NetworkingV1().NetworkPolicies("team-a").Create(ctx, web, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	within("team-a's policy in Kanga", func() bool {
		got := policy(tenantOf("team-a"))
		return slices.Equal(got.EgressAllow, []string{"0.0.0.0/0:53/udp", "192.0.2.0/24:443/tcp"}) &&
			slices.Equal(got.IngressFrom, []string{tenantOf("team-b")}) && len(got.EgressDeny) == 0
	})
	// A label change lets team-c in too.
	nsC, err := kube.CoreV1().Namespaces().Get(ctx, "team-c", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	nsC.Labels["access"] = "a"
	if _, err := kube.CoreV1().Namespaces().Update(ctx, nsC, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	within("team-c let into team-a after its label changed", func() bool {
		return slices.Equal(policy(tenantOf("team-a")).IngressFrom, []string{tenantOf("team-b"), tenantOf("team-c")})
	})

	// A policy of some pods only: not enforced, and said so.
	some := &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "db-only", Namespace: "team-b"},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "db"}},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeEgress},
		},
	}
	if _, err := kube.NetworkingV1().NetworkPolicies("team-b").Create(ctx, some, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var warning string
	within("a Warning event on db-only", func() bool {
		evs, err := kube.CoreV1().Events("team-b").List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=db-only"})
		if err != nil {
			return false
		}
		for _, e := range evs.Items {
			if e.Type == corev1.EventTypeWarning && e.Reason == "KangaPolicyNotEnforced" {
				warning = e.Message
				return true
			}
		}
		return false
	})
	if !strings.Contains(warning, "podSelector app=db") {
		t.Errorf("warning on db-only: %q, want it to name the podSelector", warning)
	}
	if got := policy(tenantOf("team-b")); len(got.EgressAllow)+len(got.EgressDeny)+len(got.IngressFrom) != 0 {
		t.Errorf("team-b got %+v from a policy of some pods only", got)
	}
	evs, err := kube.CoreV1().Events("team-a").List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=web"})
	if err != nil || !slices.ContainsFunc(evs.Items, func(e corev1.Event) bool { return e.Reason == "KangaPolicyApplied" }) {
		t.Errorf("no KangaPolicyApplied event on team-a/web (%v)", err)
	}

	// team-c has no tenant yet: its first pod makes one, with the
	// namespace's deny-all egress policy from the start.
	denyAll := &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "no-egress", Namespace: "team-c"},
		Spec:       networkingv1.NetworkPolicySpec{PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}},
	}
	if _, err := kube.NetworkingV1().NetworkPolicies("team-c").Create(ctx, denyAll, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second) // the node's sync sees the policy
	pod := webPod("web-0", node)
	pod.Spec.Containers[0].Env = pod.Spec.Containers[0].Env[:1] // no ConfigMap in team-c
	if _, err := kube.CoreV1().Pods("team-c").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	within("team-c's tenant created with its policy", func() bool {
		tn, err := admin.GetTenant(ctx, tenantOf("team-c"))
		return err == nil && tn.Network != nil && slices.Equal(tn.Network.EgressDeny, []string{"0.0.0.0/0"})
	})
	t.Cleanup(func() {
		c := admin.ForTenant(tenantOf("team-c"))
		insts, _ := c.ListInstances(ctx)
		for _, i := range insts {
			_ = c.DeleteInstance(ctx, i.Name, true)
		}
	})

	// Deleting team-a's policy restores the default.
	if err := kube.NetworkingV1().NetworkPolicies("team-a").Delete(ctx, "web", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	within("team-a back to the default", func() bool {
		got := policy(tenantOf("team-a"))
		return len(got.EgressAllow)+len(got.EgressDeny)+len(got.IngressFrom) == 0
	})
}
