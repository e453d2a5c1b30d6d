package agent

import (
	"context"
	"log/slog"
	"net/netip"

	"github.com/kanga-run/kanga/internal/agent/network"
	"github.com/kanga-run/kanga/internal/hostcontract"
	"github.com/kanga-run/kanga/internal/model"
)

// followNetView keeps the host's tenant isolation told what the rest of
// the platform looks like (other hosts' instances and subnets, tenants'
// policies) until ctx ends: policy changes reach running instances within
// the stream's delay, a fraction of a second.
func (a *Agent) followNetView(ctx context.Context) {
	if a.cfg.NetView == nil {
		return
	}
	var addrs map[string]string
	for u := range a.cfg.NetView(ctx) {
		addrs = hostcontract.ApplyNetUpdate(addrs, u)
		if err := a.cfg.Network.SetView(ctx, toNetworkView(u, addrs, a.log)); err != nil && ctx.Err() == nil {
			a.log.Warn("applying the network view failed", "err", err)
		}
	}
}

// toNetworkView turns the wire form into what the network enforces.
// Policies were validated by the API; one this agent cannot read (from a
// newer control plane) denies the tenant all egress rather than none.
func toNetworkView(u hostcontract.NetUpdate, addrs map[string]string, log *slog.Logger) network.View {
	v := network.View{Addresses: make(map[netip.Addr]string, len(addrs))}
	for a, t := range addrs {
		if ip, err := netip.ParseAddr(a); err == nil {
			v.Addresses[ip] = t
		}
	}
	for _, s := range u.Subnets {
		if p, err := netip.ParsePrefix(s); err == nil {
			v.Subnets = append(v.Subnets, p.Masked())
		}
	}
	for _, t := range u.Tenants {
		p := network.TenantPolicy{Name: t.Name, IngressFrom: t.Network.IngressFrom}
		deny, err1 := model.ParseEgressRules("egressDeny", t.Network.EgressDeny)
		allow, err2 := model.ParseEgressRules("egressAllow", t.Network.EgressAllow)
		if err1 != nil || err2 != nil {
			log.Warn("a tenant's network policy is unreadable here; denying its egress", "tenant", t.Name, "err", err1, "err2", err2)
			all, _ := model.ParseEgressRule("0.0.0.0/0")
			deny, allow = []model.EgressRule{all}, nil
		}
		p.EgressDeny, p.EgressAllow = deny, allow
		v.Tenants = append(v.Tenants, p)
	}
	return v
}
