package store

import (
	"context"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/internal/hostcontract"
)

// HostView is the store as the agent of one host sees it when both run in
// the same process (kanga up): the instances of every tenant, the host's
// pending purges and a place for its usage records, in the host
// contract's types. A remote agent sees the same through the host link.
type HostView struct {
	s    *Store
	host string
}

// ForHost returns the view of the named host's agent.
func (s *Store) ForHost(host string) HostView { return HostView{s: s, host: host} }

// ListAllInstances returns every tenant's instances and the revision of
// that listing.
func (v HostView) ListAllInstances(ctx context.Context) ([]api.Instance, int64, error) {
	return v.s.ListAllInstances(ctx)
}

// WatchAllInstances follows the instances after fromRevision, as
// Store.WatchAllInstances, converted to the contract's events. The channel
// closes when the store's does.
func (v HostView) WatchAllInstances(ctx context.Context, fromRevision int64) <-chan hostcontract.InstanceEvent {
	in := v.s.WatchAllInstances(ctx, fromRevision)
	out := make(chan hostcontract.InstanceEvent, cap(in))
	go func() {
		defer close(out)
		for ev := range in {
			select {
			case out <- ev.ForHost():
			case <-ctx.Done():
				// Drain, so that the store's watcher never blocks on us.
				for range in {
				}
				return
			}
		}
	}()
	return out
}

// UpdateInstance writes an instance of the tenant in ctx.
func (v HostView) UpdateInstance(ctx context.Context, name string, fn func(*api.Instance) error) (*api.Instance, error) {
	return v.s.UpdateInstance(ctx, name, fn)
}

// DeleteInstance deletes an instance of the tenant in ctx.
func (v HostView) DeleteInstance(ctx context.Context, name string) error {
	return v.s.DeleteInstance(ctx, name)
}

// TenantQuota is the tenant's quota (nil: none).
func (v HostView) TenantQuota(ctx context.Context, name string) (*api.Quota, error) {
	return v.s.TenantQuota(ctx, name)
}

// PutUsage stores the host's usage records.
func (v HostView) PutUsage(ctx context.Context, host string, recs []api.UsageRecord) ([]hostcontract.UsageRefusal, error) {
	refused, err := v.s.PutUsage(ctx, host, recs)
	out := make([]hostcontract.UsageRefusal, len(refused))
	for i, r := range refused {
		out[i] = hostcontract.UsageRefusal{Index: r.Index, Reason: r.Reason}
	}
	return out, err
}

// Purges lists the purges the host has not carried out yet.
func (v HostView) Purges(ctx context.Context) ([]hostcontract.Purge, error) {
	ps, err := v.s.Purges(ctx, v.host)
	if err != nil {
		return nil, err
	}
	out := make([]hostcontract.Purge, len(ps))
	for i, p := range ps {
		out[i] = p.ForHost()
	}
	return out, nil
}

// AckPurge records that the host carried p out.
func (v HostView) AckPurge(ctx context.Context, p hostcontract.Purge) error {
	return v.s.AckPurge(ctx, v.host, PurgeFromHost(p))
}

// ForHost is the event as the host contract carries it.
func (ev InstanceEvent) ForHost() hostcontract.InstanceEvent {
	return hostcontract.InstanceEvent{Instance: ev.Instance, Deleted: ev.Deleted, Tenant: ev.Tenant, Name: ev.Name, Revision: ev.Revision}
}

// ForHost is the purge as the host contract carries it.
func (p Purge) ForHost() hostcontract.Purge {
	return hostcontract.Purge{Tenant: p.Tenant, Image: p.Image, At: p.At, Generation: p.Generation}
}

// PurgeFromHost is the stored purge a host acknowledges.
func PurgeFromHost(p hostcontract.Purge) Purge {
	return Purge{Tenant: p.Tenant, Image: p.Image, At: p.At, Generation: p.Generation}
}

// InstanceFiles answers what the host needs of the secrets and configs of
// its instance name (tenant in ctx) with uid (Store.InstanceFiles).
func (v HostView) InstanceFiles(ctx context.Context, name, uid string) (hostcontract.InstanceFiles, error) {
	return v.s.InstanceFiles(ctx, v.host, name, uid)
}
