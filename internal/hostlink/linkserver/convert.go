// Conversions at the server's edge of the link: the store's types to the
// wire's (and an acknowledged purge back).
package linkserver

import (
	"github.com/kanga-run/kanga/internal/hostlink"
	"github.com/kanga-run/kanga/internal/store"
)

// wireEvent is the line the server sends for a store event.
func wireEvent(ev store.InstanceEvent) hostlink.WatchEvent {
	return hostlink.WatchEvent{Instance: ev.Instance, Deleted: ev.Deleted, Tenant: ev.Tenant, Name: ev.Name, Revision: ev.Revision}
}

func wirePurge(p store.Purge) hostlink.Purge {
	return hostlink.Purge{Tenant: p.Tenant, Image: p.Image, At: p.At, Generation: p.Generation}
}

func storedPurge(p hostlink.Purge) store.Purge {
	return store.Purge{Tenant: p.Tenant, Image: p.Image, At: p.At, Generation: p.Generation}
}

func wireRefusals(rs []store.UsageRefusal) []hostlink.UsageRefusal {
	out := make([]hostlink.UsageRefusal, len(rs))
	for i, r := range rs {
		out[i] = hostlink.UsageRefusal{Index: r.Index, Reason: r.Reason}
	}
	return out
}
