package hostlink

import (
	"github.com/kanga-run/kanga/internal/hostcontract"
	"github.com/kanga-run/kanga/internal/store"
)

// Conversions at the link's two edges: the server turns the store's types
// into the wire's, the agent the wire's into the host contract's. Neither
// end's types are the wire format, so each can change without changing
// what the other reads.

// wireEvent is the line the server sends for a store event.
func wireEvent(ev store.InstanceEvent) WatchEvent {
	return WatchEvent{Instance: ev.Instance, Deleted: ev.Deleted, Tenant: ev.Tenant, Name: ev.Name, Revision: ev.Revision}
}

// ForHost is the event as the agent takes it.
func (ev WatchEvent) ForHost() hostcontract.InstanceEvent {
	return hostcontract.InstanceEvent{Instance: ev.Instance, Deleted: ev.Deleted, Tenant: ev.Tenant, Name: ev.Name, Revision: ev.Revision}
}

func wirePurge(p store.Purge) Purge {
	return Purge{Tenant: p.Tenant, Image: p.Image, At: p.At, Generation: p.Generation}
}

func (p Purge) stored() store.Purge {
	return store.Purge{Tenant: p.Tenant, Image: p.Image, At: p.At, Generation: p.Generation}
}

func purgeFromHost(p hostcontract.Purge) Purge {
	return Purge{Tenant: p.Tenant, Image: p.Image, At: p.At, Generation: p.Generation}
}

// ForHost is the purge as the agent takes it.
func (p Purge) ForHost() hostcontract.Purge {
	return hostcontract.Purge{Tenant: p.Tenant, Image: p.Image, At: p.At, Generation: p.Generation}
}

func wireRefusals(rs []store.UsageRefusal) []UsageRefusal {
	out := make([]UsageRefusal, len(rs))
	for i, r := range rs {
		out[i] = UsageRefusal{Index: r.Index, Reason: r.Reason}
	}
	return out
}

func refusalsForHost(rs []UsageRefusal) []hostcontract.UsageRefusal {
	out := make([]hostcontract.UsageRefusal, len(rs))
	for i, r := range rs {
		out[i] = hostcontract.UsageRefusal{Index: r.Index, Reason: r.Reason}
	}
	return out
}

func wireNetUpdate(u hostcontract.NetUpdate) NetViewUpdate {
	out := NetViewUpdate{Reset: u.Reset, Tenants: make([]NetTenant, len(u.Tenants)), Subnets: u.Subnets, Set: u.Set, Del: u.Del}
	for i, t := range u.Tenants {
		out.Tenants[i] = NetTenant{Name: t.Name, Network: t.Network}
	}
	if out.Subnets == nil {
		out.Subnets = []string{}
	}
	return out
}

// ForHost is the update as the agent takes it.
func (u NetViewUpdate) ForHost() hostcontract.NetUpdate {
	out := hostcontract.NetUpdate{Reset: u.Reset, Tenants: make([]hostcontract.NetTenant, len(u.Tenants)), Subnets: u.Subnets, Set: u.Set, Del: u.Del}
	for i, t := range u.Tenants {
		out.Tenants[i] = hostcontract.NetTenant{Name: t.Name, Network: t.Network}
	}
	return out
}

// WireImageConfig is the host API's answer for an image configuration.
func WireImageConfig(c hostcontract.ImageConfig) ImageConfig {
	return ImageConfig{Entrypoint: c.Entrypoint, Cmd: c.Cmd}
}

// ForHost is the configuration as the control plane takes it.
func (c ImageConfig) ForHost() hostcontract.ImageConfig {
	return hostcontract.ImageConfig{Entrypoint: c.Entrypoint, Cmd: c.Cmd}
}
