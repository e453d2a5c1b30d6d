package store

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
	"github.com/kanga-run/kanga/internal/tenant"
)

// Hosts keep what tenants put there (image records, warm containers);
// the control plane decides when it must go. A Purge records such a
// decision until every host has carried it out: a host that was down or
// cut off when it was made carries it out before it registers again, so
// nothing of a deleted tenant reaches a tenant created later under its
// name, and an image removed while a host was away does not come back
// with it.
//
//	/kanga/purges/<tenant>/<image or *>              JSON Purge
//	/kanga/purge-acks/<tenant>/<image or *>/<host>   the generation it did
//
// A purge's generation is its key's etcd mod revision: unique, and higher
// for a later purge of the same thing, which also clears the older one's
// acknowledgements. The costs stay per purge and per host: a host reads
// the pending purges and its own acknowledgement of each; an
// acknowledgement counts the others (and looks at them one by one only
// once there are as many as hosts).
const (
	purgesPrefix    = "/kanga/purges/"
	purgeAcksPrefix = "/kanga/purge-acks/"
	// allImages stands for the whole tenant; no image reference contains it.
	allImages = "*"
	// maxTxnOps stays under etcd's default limit of operations in one
	// transaction (128).
	maxTxnOps = 100
)

// Purge asks every host to drop what it keeps of a tenant (Image empty:
// the tenant was deleted) or of one of its images.
type Purge struct {
	Tenant string `json:"tenant"`
	// Image is the normalized reference of the removed image; empty for
	// the whole tenant.
	Image string    `json:"image,omitempty"`
	At    time.Time `json:"at"`
	// Generation is set by the store (the record's etcd revision).
	Generation int64 `json:"generation,omitempty"`
}

func purgeSuffix(tenantName, img string) string {
	if img == "" {
		img = allImages
	}
	return tenantName + "/" + img
}

func purgeKey(tenantName, img string) string { return purgesPrefix + purgeSuffix(tenantName, img) }

func purgeAcksOf(tenantName, img string) string {
	return purgeAcksPrefix + purgeSuffix(tenantName, img) + "/"
}

// purgeOps record p, replacing an older purge of the same thing and its
// acknowledgements.
func purgeOps(p Purge) ([]clientv3.Op, error) {
	if err := tenant.Validate(p.Tenant); err != nil {
		return nil, err
	}
	if p.Image == allImages || strings.ContainsAny(p.Image, "\x00") {
		return nil, fmt.Errorf("image %q: %w", p.Image, errdefs.ErrInvalidArgument)
	}
	p.Generation = 0
	b, err := json.Marshal(p)
	if err != nil {
		return nil, err
	}
	return []clientv3.Op{
		clientv3.OpPut(purgeKey(p.Tenant, p.Image), string(b)),
		clientv3.OpDelete(purgeAcksOf(p.Tenant, p.Image), clientv3.WithPrefix()),
	}, nil
}

// RecordPurge stores p for every host to carry out and returns it with
// its generation.
func (s *Store) RecordPurge(ctx context.Context, p Purge) (Purge, error) {
	ops, err := purgeOps(p)
	if err != nil {
		return Purge{}, err
	}
	resp, err := s.client.Txn(ctx).Then(ops...).Commit()
	if err != nil {
		return Purge{}, s.etcdErr(ctx, "record purge", err)
	}
	p.Generation = resp.Header.Revision
	return p, nil
}

// Purges returns the purges host has not carried out yet, oldest first.
func (s *Store) Purges(ctx context.Context, host string) ([]Purge, error) {
	if err := checkHostName(host); err != nil {
		return nil, err
	}
	resp, err := s.client.Get(ctx, purgesPrefix, clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByModRevision, clientv3.SortAscend))
	if err != nil {
		return nil, s.etcdErr(ctx, "list purges", err)
	}
	var all []Purge
	for _, kv := range resp.Kvs {
		var p Purge
		if err := json.Unmarshal(kv.Value, &p); err != nil {
			return nil, fmt.Errorf("store: decode purge %s: %w", kv.Key, err)
		}
		p.Generation = kv.ModRevision
		all = append(all, p)
	}
	var out []Purge
	for len(all) > 0 {
		batch := all[:min(len(all), maxTxnOps)]
		all = all[len(batch):]
		ops := make([]clientv3.Op, len(batch))
		for i, p := range batch {
			ops[i] = clientv3.OpGet(purgeAcksOf(p.Tenant, p.Image) + host)
		}
		acks, err := s.client.Txn(ctx).Then(ops...).Commit()
		if err != nil {
			return nil, s.etcdErr(ctx, "read purge acknowledgements", err)
		}
		for i, p := range batch {
			if kvs := acks.Responses[i].GetResponseRange().Kvs; len(kvs) > 0 {
				if g, _ := strconv.ParseInt(string(kvs[0].Value), 10, 64); g >= p.Generation {
					continue
				}
			}
			out = append(out, p)
		}
	}
	return out, nil
}

// TenantPurgePending returns the Ready hosts that have not carried out the
// purge of the deleted tenant name yet (none if it was never deleted).
func (s *Store) TenantPurgePending(ctx context.Context, name string) ([]string, error) {
	resp, err := s.client.Txn(ctx).Then(
		clientv3.OpGet(purgeKey(name, "")),
		clientv3.OpGet(purgeAcksOf(name, ""), clientv3.WithPrefix()),
	).Commit()
	if err != nil {
		return nil, s.etcdErr(ctx, "read purge", err)
	}
	kvs := resp.Responses[0].GetResponseRange().Kvs
	if len(kvs) == 0 {
		return nil, nil
	}
	done := acked(resp.Responses[1].GetResponseRange().Kvs, purgeAcksOf(name, ""), kvs[0].ModRevision)
	hosts, err := s.ListHosts(ctx)
	if err != nil {
		return nil, err
	}
	var pending []string
	for _, h := range hosts {
		if h.Status.Phase == api.HostReady && !done[h.Name] {
			pending = append(pending, h.Name)
		}
	}
	return pending, nil
}

// acked returns the hosts whose acknowledgement (under prefix) covers
// generation gen.
func acked(kvs []*mvccpb.KeyValue, prefix string, gen int64) map[string]bool {
	done := map[string]bool{}
	for _, kv := range kvs {
		if g, _ := strconv.ParseInt(string(kv.Value), 10, 64); g >= gen {
			done[strings.TrimPrefix(string(kv.Key), prefix)] = true
		}
	}
	return done
}

// AckPurge records that host carried out p (unless a newer purge of the
// same thing replaced it meanwhile). Once every registered host has, the
// purge and its acknowledgements are removed.
func (s *Store) AckPurge(ctx context.Context, host string, p Purge) error {
	if err := checkHostName(host); err != nil {
		return err
	}
	if err := tenant.Validate(p.Tenant); err != nil {
		return err
	}
	key, acks := purgeKey(p.Tenant, p.Image), purgeAcksOf(p.Tenant, p.Image)
	resp, err := s.client.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(key), "=", p.Generation)).
		Then(
			clientv3.OpPut(acks+host, strconv.FormatInt(p.Generation, 10)),
			clientv3.OpGet(acks, clientv3.WithPrefix(), clientv3.WithCountOnly()),
			clientv3.OpGet(hostsPrefix, clientv3.WithPrefix(), clientv3.WithCountOnly()),
		).Commit()
	if err != nil {
		return s.etcdErr(ctx, "acknowledge purge", err)
	}
	if !resp.Succeeded || resp.Responses[1].GetResponseRange().Count < resp.Responses[2].GetResponseRange().Count {
		return nil // replaced, or hosts still to go
	}
	// As many acknowledgements as hosts: collect the purge once each
	// registered host is among them.
	resp, err = s.client.Txn(ctx).Then(clientv3.OpGet(acks, clientv3.WithPrefix())).Commit()
	if err != nil {
		return s.etcdErr(ctx, "read purge acknowledgements", err)
	}
	done := acked(resp.Responses[0].GetResponseRange().Kvs, acks, p.Generation)
	hosts, err := s.ListHosts(ctx)
	if err != nil {
		return err
	}
	for _, h := range hosts {
		if !done[h.Name] {
			return nil
		}
	}
	if _, err := s.client.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", p.Generation)).
		Then(clientv3.OpDelete(key), clientv3.OpDelete(acks, clientv3.WithPrefix())).Commit(); err != nil {
		return s.etcdErr(ctx, "collect purge", err)
	}
	return nil
}
