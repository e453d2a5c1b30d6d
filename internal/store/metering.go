package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
	"github.com/kanga-run/kanga/internal/tenant"
)

// Usage records are stored per tenant, ordered by the end of their
// interval, so that "since T" is one range read:
//
//	/kanga/metering/<tenant>/<end, unix seconds, 12 digits>/<uid>/<seq, 12 digits>
//
// The key is a function of the record, which a host fixes before it first
// sends it: a record sent again after a crash (of the host, the link or
// the control plane) lands on the same key with the same content and
// counts once. /kanga/metering-owners/<uid> names the host that reports an
// instance, so that a host can report only instances placed on it.
const (
	meteringPrefix       = "/kanga/metering/"
	meteringOwnersPrefix = "/kanga/metering-owners/"
	// meteringOwnerTTL keeps an ended instance's owner record this long, for
	// a host that resends its final record late.
	meteringOwnerTTL = 7 * 24 * time.Hour
	meteringBatch    = 100
)

func meteringKey(r *api.UsageRecord) string {
	return fmt.Sprintf("%s%s/%012d/%s/%012d", meteringPrefix, r.Tenant, r.End.Unix(), r.UID, r.Seq)
}

// UsageRefusal says why a record was not accepted; the host drops it.
type UsageRefusal struct {
	Index  int    `json:"index"`
	Reason string `json:"reason"`
}

// validUsageRecord checks a record's shape: nothing a host sends may be taken
// for more than it can be.
func validUsageRecord(r *api.UsageRecord) error {
	if err := tenant.Validate(r.Tenant); err != nil {
		return err
	}
	if r.UID == "" || len(r.UID) > 64 || strings.ContainsAny(r.UID, "/ ") {
		return fmt.Errorf("uid %q is not an instance UID", r.UID)
	}
	if r.Seq < 0 || r.CPUMilli < 0 || r.MemoryBytes < 0 || r.Devices < 0 {
		return fmt.Errorf("negative sequence number or resources")
	}
	if r.End.Before(r.Start) || r.Start.Year() < 2000 {
		return fmt.Errorf("interval %s to %s is not valid", r.Start, r.End)
	}
	var ms uint64
	for _, p := range r.Points {
		ms += p[0]
	}
	if want := uint64(r.End.Sub(r.Start).Milliseconds()); ms > want+uint64(len(r.Points)) || ms+uint64(len(r.Points)) < want {
		return fmt.Errorf("points cover %d ms, the interval %d ms", ms, want)
	}
	return nil
}

// PutUsage stores a host's usage records. A record of an instance that was
// never placed on host is refused (a host reports only its own
// instances); so is a malformed one. Refusals are final: the host drops
// those records. An error means nothing may have been stored: send again.
func (s *Store) PutUsage(ctx context.Context, host string, recs []api.UsageRecord) ([]UsageRefusal, error) {
	var refused []UsageRefusal
	owned := map[string]bool{} // uid -> owner key to create
	ok := make([]bool, len(recs))
	valid := make([]bool, len(recs))
	var uids []string
	for i := range recs {
		recs[i].Host = host
		if err := validUsageRecord(&recs[i]); err != nil {
			refused = append(refused, UsageRefusal{Index: i, Reason: err.Error()})
			continue
		}
		valid[i] = true
		uids = append(uids, recs[i].UID)
	}
	owners, err := s.meteringOwners(ctx, uids)
	if err != nil {
		return nil, err
	}
	decided := map[string][2]bool{} // uid -> mine, create
	for i := range recs {
		if !valid[i] {
			continue
		}
		r := &recs[i]
		d, seen := decided[r.UID]
		if !seen {
			mine, create, err := s.meteringOwner(ctx, host, r, owners)
			if err != nil {
				return nil, err
			}
			d = [2]bool{mine, create}
			if mine {
				decided[r.UID] = d // a refusal is decided per record
			}
		}
		mine, create := d[0], d[1]
		if !mine {
			refused = append(refused, UsageRefusal{Index: i, Reason: fmt.Sprintf("instance %s/%s (uid %s) was not placed on host %s", r.Tenant, r.Instance, r.UID, host)})
			continue
		}
		if create {
			owned[r.UID] = true
		}
		ok[i] = true
	}
	var lease clientv3.LeaseID
	var ops []clientv3.Op
	flush := func() error {
		if len(ops) == 0 {
			return nil
		}
		if _, err := s.client.Txn(ctx).Then(ops...).Commit(); err != nil {
			return s.etcdErr(ctx, "store usage records", err)
		}
		ops = ops[:0]
		return nil
	}
	for i := range recs {
		if !ok[i] {
			continue
		}
		r := &recs[i]
		b, err := json.Marshal(r)
		if err != nil {
			return nil, err
		}
		ops = append(ops, clientv3.OpPut(meteringKey(r), string(b)))
		switch {
		case r.Final:
			if lease == 0 {
				l, err := s.client.Grant(ctx, int64(meteringOwnerTTL/time.Second))
				if err != nil {
					return nil, s.etcdErr(ctx, "grant the usage owner lease", err)
				}
				lease = l.ID
			}
			ops = append(ops, clientv3.OpPut(meteringOwnersPrefix+r.UID, host, clientv3.WithLease(lease)))
			delete(owned, r.UID)
		case owned[r.UID]:
			ops = append(ops, clientv3.OpPut(meteringOwnersPrefix+r.UID, host))
			delete(owned, r.UID)
		}
		if len(ops) >= meteringBatch {
			if err := flush(); err != nil {
				return nil, err
			}
		}
	}
	if err := flush(); err != nil {
		return nil, err
	}
	return refused, nil
}

// meteringOwners reads the owner records of uids, in transactions of a
// batch's size: a host's flush costs a read per batch, not per instance.
func (s *Store) meteringOwners(ctx context.Context, uids []string) (map[string]string, error) {
	out := map[string]string{}
	seen := map[string]bool{}
	var ops []clientv3.Op
	read := func() error {
		if len(ops) == 0 {
			return nil
		}
		resp, err := s.client.Txn(ctx).Then(ops...).Commit()
		if err != nil {
			return s.etcdErr(ctx, "read the usage owners", err)
		}
		for _, r := range resp.Responses {
			for _, kv := range r.GetResponseRange().Kvs {
				out[strings.TrimPrefix(string(kv.Key), meteringOwnersPrefix)] = string(kv.Value)
			}
		}
		ops = ops[:0]
		return nil
	}
	for _, uid := range uids {
		if seen[uid] {
			continue
		}
		seen[uid] = true
		ops = append(ops, clientv3.OpGet(meteringOwnersPrefix+uid))
		if len(ops) == meteringBatch {
			if err := read(); err != nil {
				return nil, err
			}
		}
	}
	return out, read()
}

// meteringOwner reports whether host may report r's instance, and whether the
// owner record is still to be made.
func (s *Store) meteringOwner(ctx context.Context, host string, r *api.UsageRecord, owners map[string]string) (mine, create bool, err error) {
	if owner, ok := owners[r.UID]; ok {
		return owner == host, false, nil
	}
	inst, err := s.GetInstance(tenant.WithName(ctx, r.Tenant), r.Instance)
	switch {
	case err == nil && inst.UID == r.UID && inst.Status.Host == host:
		return true, true, nil
	case err != nil && !errors.Is(err, errdefs.ErrNotFound):
		return false, false, err
	}
	// Gone or moved: only a record stored already (sent again) passes.
	got, err := s.client.Get(ctx, meteringKey(r), clientv3.WithCountOnly())
	if err != nil {
		return false, false, s.etcdErr(ctx, "read a usage record", err)
	}
	return got.Count > 0, false, nil
}

// UsageQuery selects usage.
type UsageQuery struct {
	Tenant       string // empty: every tenant
	Since, Until time.Time
	ByInstance   bool
}

// Usage sums the usage records that overlap [Since, Until), clipped to it,
// per tenant or per instance. Points that straddle an edge count in
// proportion.
func (s *Store) Usage(ctx context.Context, q UsageQuery) ([]api.UsageItem, error) {
	if q.Tenant != "" {
		if err := tenant.Validate(q.Tenant); err != nil {
			return nil, err
		}
	}
	items := map[string]*api.UsageItem{}
	seen := map[string]bool{} // uid/seq: a record counts once whatever its key
	from := meteringPrefix
	if q.Tenant != "" {
		from = fmt.Sprintf("%s%s/%012d", meteringPrefix, q.Tenant, q.Since.Unix())
	}
	end := clientv3.GetPrefixRangeEnd(meteringPrefix)
	if q.Tenant != "" {
		end = clientv3.GetPrefixRangeEnd(meteringPrefix + q.Tenant + "/")
	}
	key := from
	for {
		resp, err := s.client.Get(ctx, key, clientv3.WithRange(end), clientv3.WithLimit(1000))
		if err != nil {
			return nil, s.etcdErr(ctx, "read usage", err)
		}
		for _, kv := range resp.Kvs {
			parts := strings.Split(strings.TrimPrefix(string(kv.Key), meteringPrefix), "/")
			if len(parts) != 4 {
				continue
			}
			if endSec, err := strconv.ParseInt(parts[1], 10, 64); err != nil || endSec < q.Since.Unix() {
				continue
			}
			var r api.UsageRecord
			if err := json.Unmarshal(kv.Value, &r); err != nil {
				s.logger.Warn("store: skipping an unreadable usage record", "key", string(kv.Key), "err", err)
				continue
			}
			id := r.UID + "/" + strconv.FormatInt(r.Seq, 10)
			if seen[id] {
				continue
			}
			seen[id] = true
			k := r.Tenant
			if q.ByInstance {
				k += "/" + r.UID
			}
			it := items[k]
			if it == nil {
				it = &api.UsageItem{Tenant: r.Tenant}
				if q.ByInstance {
					it.Instance, it.UID = r.Instance, r.UID
				}
				items[k] = it
			}
			if addUsageRecord(it, &r, q.Since, q.Until) {
				it.Records++
			}
			if q.ByInstance && r.Final {
				it.Final = true
			}
		}
		if !resp.More || len(resp.Kvs) == 0 {
			break
		}
		key = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
	out := make([]api.UsageItem, 0, len(items))
	for _, it := range items {
		if it.Records > 0 || it.Final {
			out = append(out, *it)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Tenant != out[j].Tenant {
			return out[i].Tenant < out[j].Tenant
		}
		if out[i].Instance != out[j].Instance {
			return out[i].Instance < out[j].Instance
		}
		return out[i].UID < out[j].UID
	})
	return out, nil
}

// addUsageRecord adds the part of r inside [since, until) to it; it reports
// whether any of r was inside.
func addUsageRecord(it *api.UsageItem, r *api.UsageRecord, since, until time.Time) bool {
	const gib = float64(1 << 30)
	any := false
	t := r.Start
	for _, p := range r.Points {
		d := p.Duration()
		ps, pe := t, t.Add(d)
		t = pe
		lo, hi := ps, pe
		if lo.Before(since) {
			lo = since
		}
		if hi.After(until) {
			hi = until
		}
		if !hi.After(lo) {
			continue
		}
		sec := hi.Sub(lo).Seconds()
		f := 1.0
		if d > 0 {
			f = float64(hi.Sub(lo)) / float64(d)
		}
		any = true
		it.Seconds += sec
		it.VCPUSecondsPromised += float64(r.CPUMilli) / 1000 * sec
		it.VCPUSecondsUsed += float64(p.CPUNanos()) / 1e9 * f
		it.GiBSecondsPromised += float64(r.MemoryBytes) / gib * sec
		it.GiBSecondsUsed += float64(p.MemoryBytes()) / gib * sec
		it.EgressBytes += uint64(float64(p.EgressBytes())*f + 0.5)
		it.DeviceSeconds += float64(r.Devices) * sec
		if it.First == nil || lo.Before(*it.First) {
			l := lo.UTC()
			it.First = &l
		}
		if it.Last == nil || hi.After(*it.Last) {
			h := hi.UTC()
			it.Last = &h
		}
	}
	return any
}

// UsageRecords returns an instance's stored records by sequence number
// (for tests and support: to see that nothing counts twice).
func (s *Store) UsageRecords(ctx context.Context, tenantName, uid string) ([]api.UsageRecord, error) {
	resp, err := s.client.Get(ctx, meteringPrefix+tenantName+"/", clientv3.WithPrefix())
	if err != nil {
		return nil, s.etcdErr(ctx, "read usage", err)
	}
	var out []api.UsageRecord
	for _, kv := range resp.Kvs {
		if !strings.Contains(string(kv.Key), "/"+uid+"/") {
			continue
		}
		var r api.UsageRecord
		if err := json.Unmarshal(kv.Value, &r); err != nil {
			return nil, fmt.Errorf("store: decode usage record %s: %w", kv.Key, err)
		}
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Seq < out[j].Seq })
	return out, nil
}
