package virtualnode

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/internal/model"
)

// A Kanga tenant has one network policy for all its instances: egress by
// destination CIDR and port, ingress from named tenants, and always its
// own instances reaching each other. With --tenant-per-namespace the
// NetworkPolicies of a namespace become its tenant's policy where they
// map onto that cleanly:
//
//   - a policy whose podSelector selects every pod ({}), or none at all;
//     one that selects some pods is not enforced (it would have to apply
//     to the whole namespace);
//   - egress to ipBlocks, with ports of TCP and UDP (numbers and ranges),
//     their except ranges refused for the whole namespace; egress to the
//     namespace's own pods (always allowed); a policy selecting Egress
//     with no rule denies all egress;
//   - ingress from namespaces chosen by namespaceSelector, when those are
//     namespaces of the node (their tenants are let in); from the own
//     namespace (always allowed).
//
// What does not map is reported as a Warning event on the NetworkPolicy
// naming it: named ports and SCTP, egress to other namespaces' pods (the
// other tenant's ingress decides), ingress from ipBlocks or from every
// source, ingress ports, podSelectors narrower than the namespace. Where
// Kanga then allows less than the policy asked, the event says so too.

// translation is what a namespace's NetworkPolicies come to.
type translation struct {
	policy *api.TenantNetworkPolicy // nil: the default
	// notes are what each policy (by name) could not have enforced.
	notes map[string][]string
}

// translateNetworkPolicies combines the policies of namespace ns;
// namespaces returns the namespaces (with their labels) a namespaceSelector
// may pick from, and tenantOf names the tenant of a namespace.
func translateNetworkPolicies(ns string, pols []*networkingv1.NetworkPolicy, namespaces []*corev1.Namespace, tenantOf func(string) string) translation {
	tr := translation{notes: map[string][]string{}}
	note := func(pol, format string, args ...any) {
		tr.notes[pol] = append(tr.notes[pol], fmt.Sprintf(format, args...))
	}
	var (
		egressSelected bool
		allow, deny    []string
		ingress        []string
	)
	sorted := slices.Clone(pols)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Name < sorted[j].Name })
	for _, pol := range sorted {
		name := pol.Name
		if !isEmptySelector(pol.Spec.PodSelector) {
			note(name, "podSelector %s selects only some pods, but Kanga applies one policy to all instances of namespace %s: the policy is not enforced",
				metav1.FormatLabelSelector(&pol.Spec.PodSelector), ns)
			continue
		}
		ingressType, egressType := policyTypes(pol)
		if egressType {
			egressSelected = true
			for i, r := range pol.Spec.Egress {
				ports, ok := portSpecs(r.Ports, func(f string, a ...any) { note(name, "egress[%d]: "+f, append([]any{i}, a...)...) })
				if !ok {
					continue
				}
				dests := []string{}
				if len(r.To) == 0 {
					dests = append(dests, "0.0.0.0/0")
				}
				for j, peer := range r.To {
					switch {
					case peer.IPBlock != nil:
						p, err := netip.ParsePrefix(peer.IPBlock.CIDR)
						if err != nil || !p.Addr().Is4() {
							note(name, "egress[%d].to[%d]: ipBlock %s is not an IPv4 CIDR (the instance network is IPv4 only): not allowed", i, j, peer.IPBlock.CIDR)
							continue
						}
						dests = append(dests, p.Masked().String())
						for _, ex := range peer.IPBlock.Except {
							if e, err := netip.ParsePrefix(ex); err == nil && e.Addr().Is4() {
								deny = append(deny, withPorts(e.Masked().String(), ports)...)
							}
						}
					case peer.NamespaceSelector != nil:
						note(name, "egress[%d].to[%d]: egress to pods of other namespaces is decided by their own policies (ingress from this namespace's tenant); not allowed from here", i, j)
					case peer.PodSelector != nil && !isEmptySelector(*peer.PodSelector):
						note(name, "egress[%d].to[%d]: podSelector %s: Kanga lets every instance of the namespace reach every other, not only the selected ones",
							i, j, metav1.FormatLabelSelector(peer.PodSelector))
					}
				}
				for _, d := range dests {
					allow = append(allow, withPorts(d, ports)...)
				}
			}
		}
		if ingressType {
			for i, r := range pol.Spec.Ingress {
				if len(r.Ports) > 0 {
					note(name, "ingress[%d]: ports are not enforced: the tenants let in reach every port of the namespace's instances", i)
				}
				if len(r.From) == 0 {
					note(name, "ingress[%d]: ingress from everywhere is not enforced: Kanga lets other namespaces' tenants in only by namespaceSelector", i)
				}
				for j, peer := range r.From {
					switch {
					case peer.IPBlock != nil:
						note(name, "ingress[%d].from[%d]: ingress from ipBlock %s is not enforced: outside the platform reaches instances only through published ports", i, j, peer.IPBlock.CIDR)
					case peer.NamespaceSelector != nil:
						sel, err := metav1.LabelSelectorAsSelector(peer.NamespaceSelector)
						if err != nil {
							note(name, "ingress[%d].from[%d]: namespaceSelector: %v", i, j, err)
							continue
						}
						if peer.PodSelector != nil && !isEmptySelector(*peer.PodSelector) {
							note(name, "ingress[%d].from[%d]: podSelector %s: every instance of the selected namespaces is let in, not only the selected pods",
								i, j, metav1.FormatLabelSelector(peer.PodSelector))
						}
						for _, n := range namespaces {
							if n.Name != ns && sel.Matches(labels.Set(n.Labels)) {
								ingress = append(ingress, tenantOf(n.Name))
							}
						}
					case peer.PodSelector != nil && !isEmptySelector(*peer.PodSelector):
						note(name, "ingress[%d].from[%d]: podSelector %s: every instance of the namespace reaches every other, not only the selected ones",
							i, j, metav1.FormatLabelSelector(peer.PodSelector))
					}
				}
			}
		}
	}
	p := &api.TenantNetworkPolicy{}
	if egressSelected {
		if len(allow) == 0 {
			// Selected for egress with nothing allowed: no egress at all.
			deny = []string{"0.0.0.0/0"}
		} else {
			p.EgressAllow = compact(allow)
		}
		p.EgressDeny = compact(deny)
	}
	p.IngressFrom = compact(ingress)
	if len(p.EgressAllow) > model.MaxEgressRules || len(p.EgressDeny) > model.MaxEgressRules {
		for _, pol := range sorted {
			note(pol.Name, "the namespace's policies come to more than %d egress destinations, more than a tenant holds: all egress is denied", model.MaxEgressRules)
		}
		p.EgressAllow, p.EgressDeny = nil, []string{"0.0.0.0/0"}
	}
	if len(p.IngressFrom) > model.MaxIngressFrom {
		p.IngressFrom = p.IngressFrom[:model.MaxIngressFrom]
		for _, pol := range sorted {
			note(pol.Name, "more than %d namespaces let in: only the first %d are", model.MaxIngressFrom, model.MaxIngressFrom)
		}
	}
	if len(p.EgressAllow)+len(p.EgressDeny)+len(p.IngressFrom) > 0 {
		tr.policy = p
	}
	return tr
}

// policyTypes follows the API's defaulting: Ingress always, Egress when
// the policy has egress rules, unless policyTypes says otherwise.
func policyTypes(pol *networkingv1.NetworkPolicy) (ingress, egress bool) {
	if len(pol.Spec.PolicyTypes) == 0 {
		return true, len(pol.Spec.Egress) > 0
	}
	for _, t := range pol.Spec.PolicyTypes {
		switch t {
		case networkingv1.PolicyTypeIngress:
			ingress = true
		case networkingv1.PolicyTypeEgress:
			egress = true
		}
	}
	return ingress, egress
}

func isEmptySelector(s metav1.LabelSelector) bool {
	return len(s.MatchLabels) == 0 && len(s.MatchExpressions) == 0
}

// portSpec is one port of a rule in Kanga's destination syntax.
type portSpec string

// portSpecs turns a rule's ports into ":PORT[-END]/proto" suffixes; none
// is every port. ok is false when the rule named ports and none of them
// can be enforced: the rule then allows nothing.
func portSpecs(ports []networkingv1.NetworkPolicyPort, note func(string, ...any)) ([]portSpec, bool) {
	if len(ports) == 0 {
		return nil, true
	}
	var out []portSpec
	for k, p := range ports {
		proto := corev1.ProtocolTCP
		if p.Protocol != nil {
			proto = *p.Protocol
		}
		if proto != corev1.ProtocolTCP && proto != corev1.ProtocolUDP {
			note("ports[%d]: protocol %s is not supported (TCP and UDP are): not allowed", k, proto)
			continue
		}
		if p.Port == nil {
			out = append(out, portSpec(":1-65535/"+strings.ToLower(string(proto))))
			continue
		}
		if p.Port.IntVal == 0 {
			note("ports[%d]: named port %q cannot be resolved outside the pods' specs: not allowed", k, p.Port.StrVal)
			continue
		}
		s := fmt.Sprintf(":%d", p.Port.IntVal)
		if p.EndPort != nil && *p.EndPort > p.Port.IntVal {
			s += fmt.Sprintf("-%d", *p.EndPort)
		}
		out = append(out, portSpec(s+"/"+strings.ToLower(string(proto))))
	}
	return out, len(out) > 0
}

func withPorts(dest string, ports []portSpec) []string {
	if len(ports) == 0 {
		return []string{dest}
	}
	out := make([]string, 0, len(ports))
	for _, p := range ports {
		out = append(out, dest+string(p))
	}
	return out
}

func compact(in []string) []string {
	if len(in) == 0 {
		return nil
	}
	out := slices.Clone(in)
	slices.Sort(out)
	return slices.Compact(out)
}
