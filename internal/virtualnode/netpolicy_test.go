package virtualnode

import (
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/kanga-run/kanga/api"
)

func TestTranslateNetworkPolicies(t *testing.T) {
	tcp, udp, sctp := corev1.ProtocolTCP, corev1.ProtocolUDP, corev1.ProtocolSCTP
	port := func(p corev1.Protocol, n int32) networkingv1.NetworkPolicyPort {
		v := intstr.FromInt32(n)
		return networkingv1.NetworkPolicyPort{Protocol: &p, Port: &v}
	}
	named := func(s string) networkingv1.NetworkPolicyPort {
		v := intstr.FromString(s)
		return networkingv1.NetworkPolicyPort{Port: &v}
	}
	end := int32(8100)
	ranged := port(tcp, 8000)
	ranged.EndPort = &end
	ipb := func(cidr string, except ...string) networkingv1.NetworkPolicyPeer {
		return networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{CIDR: cidr, Except: except}}
	}
	nsSel := func(kv ...string) networkingv1.NetworkPolicyPeer {
		return networkingv1.NetworkPolicyPeer{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{kv[0]: kv[1]}}}
	}
	egress := func(name string, rules ...networkingv1.NetworkPolicyEgressRule) *networkingv1.NetworkPolicy {
		return &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "a"},
			Spec: networkingv1.NetworkPolicySpec{PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}, Egress: rules}}
	}
	ingress := func(name string, rules ...networkingv1.NetworkPolicyIngressRule) *networkingv1.NetworkPolicy {
		return &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "a"},
			Spec: networkingv1.NetworkPolicySpec{Ingress: rules}}
	}
	namespaces := []*corev1.Namespace{
		{ObjectMeta: metav1.ObjectMeta{Name: "a", Labels: map[string]string{"team": "x"}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "b", Labels: map[string]string{"team": "x", "env": "prod"}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "c", Labels: map[string]string{"env": "prod"}}},
	}
	narrow := egress("narrow", networkingv1.NetworkPolicyEgressRule{To: []networkingv1.NetworkPolicyPeer{ipb("10.0.0.0/8")}})
	narrow.Spec.PodSelector = metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}

	for _, c := range []struct {
		name  string
		pols  []*networkingv1.NetworkPolicy
		want  *api.TenantNetworkPolicy
		notes []string // substrings of the notes, in any policy
	}{
		{name: "none", want: nil},
		{name: "deny all egress", pols: []*networkingv1.NetworkPolicy{egress("deny")},
			want: &api.TenantNetworkPolicy{EgressDeny: []string{"0.0.0.0/0"}}},
		{name: "egress ipBlock with ports and except",
			pols: []*networkingv1.NetworkPolicy{egress("web", networkingv1.NetworkPolicyEgressRule{
				To:    []networkingv1.NetworkPolicyPeer{ipb("0.0.0.0/0", "10.0.0.0/8"), ipb("192.0.2.7/24")},
				Ports: []networkingv1.NetworkPolicyPort{port(tcp, 443), ranged, port(udp, 53)},
			})},
			want: &api.TenantNetworkPolicy{
				EgressAllow: []string{"0.0.0.0/0:443/tcp", "0.0.0.0/0:53/udp", "0.0.0.0/0:8000-8100/tcp",
					"192.0.2.0/24:443/tcp", "192.0.2.0/24:53/udp", "192.0.2.0/24:8000-8100/tcp"},
				EgressDeny: []string{"10.0.0.0/8:443/tcp", "10.0.0.0/8:53/udp", "10.0.0.0/8:8000-8100/tcp"},
			}},
		{name: "two policies add up",
			pols: []*networkingv1.NetworkPolicy{
				egress("one", networkingv1.NetworkPolicyEgressRule{To: []networkingv1.NetworkPolicyPeer{ipb("10.1.0.0/16")}}),
				egress("two", networkingv1.NetworkPolicyEgressRule{Ports: []networkingv1.NetworkPolicyPort{port(udp, 53)}}),
			},
			want: &api.TenantNetworkPolicy{EgressAllow: []string{"0.0.0.0/0:53/udp", "10.1.0.0/16"}}},
		{name: "unenforceable ports",
			pols: []*networkingv1.NetworkPolicy{egress("odd", networkingv1.NetworkPolicyEgressRule{
				To: []networkingv1.NetworkPolicyPeer{ipb("10.0.0.0/8"), nsSel("team", "x")}, Ports: []networkingv1.NetworkPolicyPort{named("http"), port(sctp, 9)},
			})},
			want:  &api.TenantNetworkPolicy{EgressDeny: []string{"0.0.0.0/0"}},
			notes: []string{`named port "http"`, "protocol SCTP"}},
		{name: "ingress from namespaces",
			pols: []*networkingv1.NetworkPolicy{ingress("in",
				networkingv1.NetworkPolicyIngressRule{From: []networkingv1.NetworkPolicyPeer{nsSel("env", "prod"), ipb("1.2.3.0/24")},
					Ports: []networkingv1.NetworkPolicyPort{port(tcp, 80)}},
			)},
			want:  &api.TenantNetworkPolicy{IngressFrom: []string{"k8s-b", "k8s-c"}},
			notes: []string{"ports are not enforced", "ipBlock 1.2.3.0/24 is not enforced"}},
		{name: "ingress from everywhere", pols: []*networkingv1.NetworkPolicy{ingress("all", networkingv1.NetworkPolicyIngressRule{})},
			want: nil, notes: []string{"from everywhere"}},
		{name: "some pods only", pols: []*networkingv1.NetworkPolicy{narrow},
			want: nil, notes: []string{"podSelector app=web selects only some pods"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			tr := translateNetworkPolicies("a", c.pols, namespaces, func(ns string) string { return TenantName("k8s-", ns) })
			if (tr.policy == nil) != (c.want == nil) || tr.policy != nil && (!slices.Equal(tr.policy.EgressAllow, c.want.EgressAllow) ||
				!slices.Equal(tr.policy.EgressDeny, c.want.EgressDeny) || !slices.Equal(tr.policy.IngressFrom, c.want.IngressFrom)) {
				t.Errorf("policy %+v, want %+v", tr.policy, c.want)
			}
			var all []string
			for _, n := range tr.notes {
				all = append(all, n...)
			}
			joined := strings.Join(all, "\n")
			for _, n := range c.notes {
				if !strings.Contains(joined, n) {
					t.Errorf("notes lack %q:\n%s", n, joined)
				}
			}
			if len(c.notes) == 0 && len(all) > 0 {
				t.Errorf("unexpected notes:\n%s", joined)
			}
		})
	}
}
