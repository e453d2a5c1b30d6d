package hostlink

import (
	"github.com/kanga-run/kanga/internal/hostcontract"
)

// Conversions at the link's two edges: the server turns the store's types
// into the wire's, the agent the wire's into the host contract's. Neither
// end's types are the wire format, so each can change without changing
// what the other reads.

// ForHost is the event as the agent takes it.
func (ev WatchEvent) ForHost() hostcontract.InstanceEvent {
	return hostcontract.InstanceEvent{Instance: ev.Instance, Deleted: ev.Deleted, Tenant: ev.Tenant, Name: ev.Name, Revision: ev.Revision}
}

// PurgeFromHost is the acknowledgement of a purge the agent carried out.
func PurgeFromHost(p hostcontract.Purge) Purge {
	return Purge{Tenant: p.Tenant, Image: p.Image, At: p.At, Generation: p.Generation}
}

// ForHost is the purge as the agent takes it.
func (p Purge) ForHost() hostcontract.Purge {
	return hostcontract.Purge{Tenant: p.Tenant, Image: p.Image, At: p.At, Generation: p.Generation}
}

// RefusalsForHost are the refusals as the agent takes them.
func RefusalsForHost(rs []UsageRefusal) []hostcontract.UsageRefusal {
	out := make([]hostcontract.UsageRefusal, len(rs))
	for i, r := range rs {
		out[i] = hostcontract.UsageRefusal{Index: r.Index, Reason: r.Reason}
	}
	return out
}

// WireNetUpdate is the line the server sends for a network view update.
func WireNetUpdate(u hostcontract.NetUpdate) NetViewUpdate {
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

// WireInstanceFiles is the server's answer for an instance's files.
func WireInstanceFiles(f hostcontract.InstanceFiles) InstanceFiles {
	out := InstanceFiles{Volumes: make([]VolumeFiles, len(f.Volumes)), Env: f.Env}
	for i, v := range f.Volumes {
		wv := VolumeFiles{Name: v.Name, Secret: v.Secret, Files: make([]File, len(v.Files))}
		for j, fl := range v.Files {
			wv.Files[j] = File{Path: fl.Path, Mode: fl.Mode, Data: fl.Data}
		}
		out.Volumes[i] = wv
	}
	return out
}

// ForHost is the instance's files as the agent takes them.
func (f InstanceFiles) ForHost() hostcontract.InstanceFiles {
	out := hostcontract.InstanceFiles{Env: f.Env}
	for _, v := range f.Volumes {
		hv := hostcontract.VolumeFiles{Name: v.Name, Secret: v.Secret, Files: make([]hostcontract.File, len(v.Files))}
		for j, fl := range v.Files {
			hv.Files[j] = hostcontract.File{Path: fl.Path, Mode: fl.Mode, Data: fl.Data}
		}
		out.Volumes = append(out.Volumes, hv)
	}
	return out
}
