package virtualnode

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/client"
	"github.com/kanga-run/kanga/errdefs"
)

// Event reasons on NetworkPolicies.
const (
	reasonPolicyApplied     = "KangaPolicyApplied"
	reasonPolicyNotEnforced = "KangaPolicyNotEnforced"
)

// netPolicies keeps each namespace tenant's Kanga network policy in step
// with the namespace's NetworkPolicies (see netpolicy.go), following
// NetworkPolicies and Namespaces (whose labels namespaceSelectors match).
// It only sets the policy of tenants that exist; one the node creates
// later gets its policy at creation (policyFor).
type netPolicies struct {
	kanga  *client.Client
	prefix string
	log    *slog.Logger

	pols     func() ([]*networkingv1.NetworkPolicy, error)
	nss      func() ([]*corev1.Namespace, error)
	recorder record.EventRecorder

	start func(ctx context.Context) // the informers

	wake chan struct{}

	mu      sync.Mutex
	dirty   map[string]bool                     // namespaces to sync
	want    map[string]*api.TenantNetworkPolicy // by namespace, as translated
	applied map[string]string                   // by namespace: the policy last set, as a string
	noted   map[string]string                   // by policy uid: the notes last reported
}

// newNetPolicies starts informers on kube for NetworkPolicies and
// Namespaces; Run syncs.
func newNetPolicies(kube kubernetes.Interface, kanga *client.Client, prefix, node string, log *slog.Logger) *netPolicies {
	f := informers.NewSharedInformerFactory(kube, 10*time.Minute)
	polInf := f.Networking().V1().NetworkPolicies()
	nsInf := f.Core().V1().Namespaces()
	b := record.NewBroadcaster()
	b.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: kube.CoreV1().Events("")})
	n := &netPolicies{
		kanga: kanga, prefix: prefix, log: log.With("component", "networkpolicy"),
		pols:     func() ([]*networkingv1.NetworkPolicy, error) { return polInf.Lister().List(labels.Everything()) },
		nss:      func() ([]*corev1.Namespace, error) { return nsInf.Lister().List(labels.Everything()) },
		recorder: b.NewRecorder(scheme.Scheme, corev1.EventSource{Component: node + "/networkpolicy"}),
		wake:     make(chan struct{}, 1),
		dirty:    map[string]bool{}, want: map[string]*api.TenantNetworkPolicy{},
		applied: map[string]string{}, noted: map[string]string{},
	}
	onPolicy := func(obj any) {
		if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = tomb.Obj
		}
		if p, ok := obj.(*networkingv1.NetworkPolicy); ok {
			n.mark(p.Namespace)
		}
	}
	_, _ = polInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: onPolicy, DeleteFunc: onPolicy,
		UpdateFunc: func(_, obj any) { onPolicy(obj) },
	})
	// A namespace's labels decide which policies let it in: any change
	// may matter to every namespace.
	onNamespace := func(any) { n.mark("") }
	_, _ = nsInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: onNamespace, DeleteFunc: onNamespace,
		UpdateFunc: func(old, obj any) {
			o, ok1 := old.(*corev1.Namespace)
			c, ok2 := obj.(*corev1.Namespace)
			if !ok1 || !ok2 || !labels.Equals(o.Labels, c.Labels) {
				onNamespace(obj)
			}
		},
	})
	n.start = func(ctx context.Context) {
		f.Start(ctx.Done())
		f.WaitForCacheSync(ctx.Done())
	}
	return n
}

// mark queues namespace ns for a sync ("" for every namespace).
func (n *netPolicies) mark(ns string) {
	n.mu.Lock()
	n.dirty[ns] = true
	n.mu.Unlock()
	select {
	case n.wake <- struct{}{}:
	default:
	}
}

// policyFor is the translated policy of namespace ns, for a tenant the
// node is about to create.
func (n *netPolicies) policyFor(ns string) *api.TenantNetworkPolicy {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.want[ns]
}

// Run syncs until ctx ends: every namespace once the informers are
// synced, then those that change; tenants that did not exist are tried
// again every half minute (the node creates them on a first pod).
func (n *netPolicies) Run(ctx context.Context) {
	n.start(ctx)
	n.mark("")
	retry := time.NewTicker(30 * time.Second)
	defer retry.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-n.wake:
		case <-retry.C:
			n.mark("")
			continue
		}
		n.mu.Lock()
		dirty := n.dirty
		n.dirty = map[string]bool{}
		n.mu.Unlock()
		n.sync(ctx, dirty)
	}
}

func (n *netPolicies) sync(ctx context.Context, dirty map[string]bool) {
	pols, err := n.pols()
	if err != nil {
		return
	}
	nss, err := n.nss()
	if err != nil {
		return
	}
	byNS := map[string][]*networkingv1.NetworkPolicy{}
	for _, p := range pols {
		byNS[p.Namespace] = append(byNS[p.Namespace], p)
	}
	names := map[string]bool{}
	for _, ns := range nss {
		names[ns.Name] = true
	}
	n.mu.Lock()
	for ns := range n.want {
		names[ns] = true // a namespace gone keeps nothing
	}
	n.mu.Unlock()
	for ns := range names {
		if !dirty[""] && !dirty[ns] {
			continue
		}
		tr := translateNetworkPolicies(ns, byNS[ns], nss, func(x string) string { return TenantName(n.prefix, x) })
		n.mu.Lock()
		n.want[ns] = tr.policy
		n.mu.Unlock()
		n.apply(ctx, ns, tr, byNS[ns])
	}
}

// apply sets the tenant's policy if it changed and reports what could not
// be enforced, once per change, on the policies concerned.
func (n *netPolicies) apply(ctx context.Context, ns string, tr translation, pols []*networkingv1.NetworkPolicy) {
	tenantName := TenantName(n.prefix, ns)
	key := policyString(tr.policy)
	n.mu.Lock()
	last, known := n.applied[ns]
	n.mu.Unlock()
	if !known || last != key {
		p := api.TenantNetworkPolicy{}
		if tr.policy != nil {
			p = *tr.policy
		}
		_, err := n.kanga.SetTenantNetwork(ctx, tenantName, p)
		switch {
		case errors.Is(err, errdefs.ErrNotFound):
			// No tenant yet: it gets the policy when the node creates it.
			return
		case err != nil:
			n.log.Warn("setting a namespace tenant's network policy failed", "namespace", ns, "tenant", tenantName, "err", err)
			n.mark(ns)
			return
		}
		n.mu.Lock()
		n.applied[ns] = key
		n.mu.Unlock()
		n.log.Info("namespace network policy applied", "namespace", ns, "tenant", tenantName, "policy", key)
		for _, pol := range pols {
			n.recorder.Eventf(pol, corev1.EventTypeNormal, reasonPolicyApplied,
				"applied to Kanga tenant %s (with the namespace's other policies): %s", tenantName, key)
		}
	}
	for _, pol := range pols {
		notes := strings.Join(tr.notes[pol.Name], "; ")
		n.mu.Lock()
		seen := n.noted[string(pol.UID)] == notes+"@"+pol.ResourceVersion
		n.noted[string(pol.UID)] = notes + "@" + pol.ResourceVersion
		n.mu.Unlock()
		if notes != "" && !seen {
			n.recorder.Event(pol, corev1.EventTypeWarning, reasonPolicyNotEnforced, "Kanga cannot enforce: "+notes)
		}
	}
}

func policyString(p *api.TenantNetworkPolicy) string {
	if p == nil {
		return "default (instances reach each other and the outside, no other tenant)"
	}
	list := func(l []string, none string) string {
		if len(l) == 0 {
			return none
		}
		return strings.Join(slices.Clone(l), ",")
	}
	return "egress allow " + list(p.EgressAllow, "all") + "; egress deny " + list(p.EgressDeny, "none") +
		"; ingress from " + list(p.IngressFrom, "the namespace only")
}
