// Package netview keeps, on the control plane, the part of the platform's
// state that every host's tenant isolation needs: which tenant each
// instance address belongs to (on any host), every host's instance
// subnet, and the tenants' network policies. Hosts follow it as a stream
// of hostcontract.NetUpdates: a full state first, then only the addresses that changed,
// so a busy pool costs each host what changed, not its size.
//
// An agent learns the addresses and tenant names of the whole pool this
// way, as every node of a Kubernetes cluster learns the pod addresses and
// identities its network plugin enforces policy with: enforcing at the
// sending host needs it.
package netview

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/internal/hostcontract"
	"github.com/kanga-run/kanga/internal/store"
)

// Source is the state the view follows (*store.Store).
type Source interface {
	ListAllInstances(ctx context.Context) ([]api.Instance, int64, error)
	WatchAllInstances(ctx context.Context, fromRevision int64) <-chan store.InstanceEvent
	WatchTenants(ctx context.Context) <-chan []api.Tenant
	WatchHosts(ctx context.Context) <-chan []api.Host
}

// logSize bounds the address changes kept for subscribers that are
// behind; one further behind gets a full state again.
const logSize = 50_000

// coalesce is how long a subscriber waits after a change for more, so a
// burst of creates makes one update.
const coalesce = 50 * time.Millisecond

type change struct {
	seq  int64
	addr string
	ten  string // "" removed
}

type owner struct{ addr, tenant string }

// View is the control plane's copy. Run must be running for it to fill;
// Subscribe may be called before.
type View struct {
	src Source
	log *slog.Logger

	mu      sync.Mutex
	ready   bool
	changed chan struct{} // closed and replaced on every change
	byKey   map[string]owner
	owners  map[string]map[string]string // address -> instance key -> tenant
	addrs   map[string]string            // address -> its one tenant
	tenants []hostcontract.NetTenant
	subnets []string
	seq     int64
	first   int64 // the oldest seq changes covers
	changes []change
}

// New returns a view of src.
func New(src Source, log *slog.Logger) *View {
	if log == nil {
		log = slog.Default()
	}
	return &View{src: src, log: log, changed: make(chan struct{}),
		byKey: map[string]owner{}, owners: map[string]map[string]string{}, addrs: map[string]string{}}
}

// counts says whether an instance's address is in use for its tenant: it
// has one, runs or starts on a host, and is not being removed (the host
// may give the address to the next instance as soon as it is gone).
func counts(in *api.Instance) bool {
	return in != nil && in.Status.IP != "" && in.Status.Host != "" && !in.DeletionRequested && !in.Status.Phase.Terminal()
}

// Run follows the source until ctx ends.
func (v *View) Run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		for ts := range v.src.WatchTenants(ctx) {
			v.setTenants(ts)
		}
	}()
	go func() {
		defer wg.Done()
		for hs := range v.src.WatchHosts(ctx) {
			v.setHosts(hs)
		}
	}()
	for {
		insts, rev, err := v.src.ListAllInstances(ctx)
		if err != nil {
			v.log.Warn("network view: listing instances failed; retrying", "err", err)
			select {
			case <-ctx.Done():
				wg.Wait()
				return
			case <-time.After(time.Second):
				continue
			}
		}
		for i := range insts {
			v.apply(&insts[i], false)
		}
		v.mu.Lock()
		v.ready = true
		v.bump()
		v.mu.Unlock()
		// The store's watch survives etcd trouble and compaction; it ends
		// only with ctx.
		for ev := range v.src.WatchAllInstances(ctx, rev) {
			v.apply(ev.Instance, ev.Deleted)
		}
		break
	}
	wg.Wait()
}

// bump wakes the subscribers; v.mu is held.
func (v *View) bump() {
	close(v.changed)
	v.changed = make(chan struct{})
}

func (v *View) setTenants(ts []api.Tenant) {
	var out []hostcontract.NetTenant
	for _, t := range ts {
		if t.Network != nil {
			out = append(out, hostcontract.NetTenant{Name: t.Name, Network: *t.Network})
		}
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if !slices.EqualFunc(out, v.tenants, func(a, b hostcontract.NetTenant) bool {
		return a.Name == b.Name && slices.Equal(a.Network.EgressDeny, b.Network.EgressDeny) &&
			slices.Equal(a.Network.EgressAllow, b.Network.EgressAllow) && slices.Equal(a.Network.IngressFrom, b.Network.IngressFrom)
	}) {
		v.tenants = out
		v.bump()
	}
}

func (v *View) setHosts(hs []api.Host) {
	var out []string
	for _, h := range hs {
		if h.Subnet != "" {
			out = append(out, h.Subnet)
		}
	}
	slices.Sort(out)
	out = slices.Compact(out)
	v.mu.Lock()
	defer v.mu.Unlock()
	if !slices.Equal(out, v.subnets) {
		v.subnets = out
		v.bump()
	}
}

// apply folds one instance version into the addresses.
func (v *View) apply(in *api.Instance, deleted bool) {
	if in == nil {
		return
	}
	key := in.Tenant + "/" + in.Name
	var now owner
	if !deleted && counts(in) {
		now = owner{addr: in.Status.IP, tenant: in.Tenant}
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	old := v.byKey[key]
	if old == now {
		return
	}
	if old.addr != "" {
		delete(v.owners[old.addr], key)
		if len(v.owners[old.addr]) == 0 {
			delete(v.owners, old.addr)
		}
	}
	if now.addr != "" {
		if v.owners[now.addr] == nil {
			v.owners[now.addr] = map[string]string{}
		}
		v.owners[now.addr][key] = now.tenant
		v.byKey[key] = now
	} else {
		delete(v.byKey, key)
	}
	changed := false
	for _, a := range []string{old.addr, now.addr} {
		if a != "" && v.settle(a) {
			changed = true
		}
	}
	if changed && v.ready {
		v.bump()
	}
}

// settle recomputes the tenant of address a: the one tenant of all the
// instances that claim it, or none when they disagree (an address handed
// from one instance to the next before the first's record is gone):
// unknown addresses reach nothing. It logs the change; v.mu is held.
func (v *View) settle(a string) bool {
	ten := ""
	for _, t := range v.owners[a] {
		if ten == "" {
			ten = t
		} else if ten != t {
			ten = ""
			break
		}
	}
	if v.addrs[a] == ten {
		return false
	}
	if ten == "" {
		delete(v.addrs, a)
	} else {
		v.addrs[a] = ten
	}
	v.seq++
	v.changes = append(v.changes, change{seq: v.seq, addr: a, ten: ten})
	if len(v.changes) > logSize {
		drop := len(v.changes) - logSize/2
		v.changes = append([]change(nil), v.changes[drop:]...)
	}
	if len(v.changes) > 0 {
		v.first = v.changes[0].seq
	}
	return true
}

// Subscribe streams updates until ctx ends: a full state once the view
// is loaded, then a delta after each change (bursts coalesced).
func (v *View) Subscribe(ctx context.Context) <-chan hostcontract.NetUpdate {
	out := make(chan hostcontract.NetUpdate, 1)
	go func() {
		defer close(out)
		sent := int64(-1)
		var lastTenants []hostcontract.NetTenant
		var lastSubnets []string
		for {
			v.mu.Lock()
			wake := v.changed
			ready := v.ready
			v.mu.Unlock()
			if ready {
				u, seq, ok := v.next(sent, lastTenants, lastSubnets)
				if ok {
					select {
					case out <- u:
					case <-ctx.Done():
						return
					}
					sent, lastTenants, lastSubnets = seq, u.Tenants, u.Subnets
				}
			}
			select {
			case <-wake:
			case <-ctx.Done():
				return
			}
			select {
			case <-time.After(coalesce):
			case <-ctx.Done():
				return
			}
		}
	}()
	return out
}

// next builds the update after seq sent; ok is false when nothing
// changed.
func (v *View) next(sent int64, tenants []hostcontract.NetTenant, subnets []string) (hostcontract.NetUpdate, int64, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	u := hostcontract.NetUpdate{Tenants: slices.Clone(v.tenants), Subnets: slices.Clone(v.subnets)}
	if u.Tenants == nil {
		u.Tenants = []hostcontract.NetTenant{}
	}
	if u.Subnets == nil {
		u.Subnets = []string{}
	}
	if sent < 0 || (len(v.changes) > 0 && sent+1 < v.first) {
		u.Reset = true
		u.Set = make(map[string]string, len(v.addrs))
		for a, t := range v.addrs {
			u.Set[a] = t
		}
		return u, v.seq, true
	}
	if sent == v.seq && slices.Equal(subnets, v.subnets) && slices.EqualFunc(tenants, v.tenants, func(a, b hostcontract.NetTenant) bool {
		return a.Name == b.Name && slices.Equal(a.Network.EgressDeny, b.Network.EgressDeny) &&
			slices.Equal(a.Network.EgressAllow, b.Network.EgressAllow) && slices.Equal(a.Network.IngressFrom, b.Network.IngressFrom)
	}) {
		return u, sent, false
	}
	last := map[string]string{}
	i, _ := slices.BinarySearchFunc(v.changes, sent+1, func(c change, s int64) int { return int(c.seq - s) })
	for _, c := range v.changes[i:] {
		last[c.addr] = c.ten
	}
	for a, t := range last {
		if t == "" {
			u.Del = append(u.Del, a)
		} else {
			if u.Set == nil {
				u.Set = map[string]string{}
			}
			u.Set[a] = t
		}
	}
	slices.Sort(u.Del)
	return u, v.seq, true
}
