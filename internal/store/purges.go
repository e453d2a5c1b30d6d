package store

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/internal/errdefs"
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
//	/kanga/purges/<tenant>/<image or *>       JSON Purge
//	/kanga/purge-acks/<host>/<tenant>/<image or *>  the generation done
//
// A purge's generation is its key's etcd mod revision: unique, and higher
// for a later purge of the same thing.
const (
	purgesPrefix    = "/kanga/purges/"
	purgeAcksPrefix = "/kanga/purge-acks/"
	// allImages stands for the whole tenant; no image reference contains it.
	allImages = "*"
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

func purgeAckKey(host, tenantName, img string) string {
	return purgeAcksPrefix + host + "/" + purgeSuffix(tenantName, img)
}

func purgeOp(p Purge) (clientv3.Op, error) {
	if err := tenant.Validate(p.Tenant); err != nil {
		return clientv3.Op{}, err
	}
	if p.Image == allImages || strings.ContainsAny(p.Image, "\x00") {
		return clientv3.Op{}, fmt.Errorf("image %q: %w", p.Image, errdefs.ErrInvalidArgument)
	}
	p.Generation = 0
	b, err := json.Marshal(p)
	if err != nil {
		return clientv3.Op{}, err
	}
	return clientv3.OpPut(purgeKey(p.Tenant, p.Image), string(b)), nil
}

// RecordPurge stores p for every host to carry out and returns it with
// its generation.
func (s *Store) RecordPurge(ctx context.Context, p Purge) (Purge, error) {
	op, err := purgeOp(p)
	if err != nil {
		return Purge{}, err
	}
	resp, err := s.client.Do(ctx, op)
	if err != nil {
		return Purge{}, s.etcdErr(ctx, "record purge", err)
	}
	p.Generation = resp.Put().Header.Revision
	return p, nil
}

// Purges returns the purges host has not carried out yet, oldest first.
func (s *Store) Purges(ctx context.Context, host string) ([]Purge, error) {
	if err := checkHostName(host); err != nil {
		return nil, err
	}
	resp, err := s.client.Txn(ctx).Then(
		clientv3.OpGet(purgesPrefix, clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByModRevision, clientv3.SortAscend)),
		clientv3.OpGet(purgeAcksPrefix+host+"/", clientv3.WithPrefix()),
	).Commit()
	if err != nil {
		return nil, s.etcdErr(ctx, "list purges", err)
	}
	done := map[string]int64{}
	for _, kv := range resp.Responses[1].GetResponseRange().Kvs {
		gen, _ := strconv.ParseInt(string(kv.Value), 10, 64)
		done[strings.TrimPrefix(string(kv.Key), purgeAcksPrefix+host+"/")] = gen
	}
	var out []Purge
	for _, kv := range resp.Responses[0].GetResponseRange().Kvs {
		if done[strings.TrimPrefix(string(kv.Key), purgesPrefix)] >= kv.ModRevision {
			continue
		}
		var p Purge
		if err := json.Unmarshal(kv.Value, &p); err != nil {
			return nil, fmt.Errorf("store: decode purge %s: %w", kv.Key, err)
		}
		p.Generation = kv.ModRevision
		out = append(out, p)
	}
	return out, nil
}

// TenantPurgePending returns the Ready hosts that have not carried out the
// purge of the deleted tenant name yet (none if it was never deleted).
func (s *Store) TenantPurgePending(ctx context.Context, name string) ([]string, error) {
	resp, err := s.client.Txn(ctx).Then(
		clientv3.OpGet(purgeKey(name, "")),
		clientv3.OpGet(purgeAcksPrefix, clientv3.WithPrefix()),
	).Commit()
	if err != nil {
		return nil, s.etcdErr(ctx, "read purge", err)
	}
	kvs := resp.Responses[0].GetResponseRange().Kvs
	if len(kvs) == 0 {
		return nil, nil
	}
	gen := kvs[0].ModRevision
	suffix := "/" + purgeSuffix(name, "")
	done := map[string]bool{}
	for _, kv := range resp.Responses[1].GetResponseRange().Kvs {
		k := strings.TrimPrefix(string(kv.Key), purgeAcksPrefix)
		if host, ok := strings.CutSuffix(k, suffix); ok {
			g, _ := strconv.ParseInt(string(kv.Value), 10, 64)
			done[host] = g >= gen
		}
	}
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

// AckPurge records that host carried out p. Once every registered host
// has, the purge and its acknowledgements are removed.
func (s *Store) AckPurge(ctx context.Context, host string, p Purge) error {
	if err := checkHostName(host); err != nil {
		return err
	}
	if err := tenant.Validate(p.Tenant); err != nil {
		return err
	}
	suffix := purgeSuffix(p.Tenant, p.Image)
	if _, err := s.client.Put(ctx, purgeAckKey(host, p.Tenant, p.Image), strconv.FormatInt(p.Generation, 10)); err != nil {
		return s.etcdErr(ctx, "acknowledge purge", err)
	}
	// Collect the purge once no registered host needs it any more.
	resp, err := s.client.Txn(ctx).Then(
		clientv3.OpGet(purgesPrefix+suffix),
		clientv3.OpGet(purgeAcksPrefix, clientv3.WithPrefix()),
	).Commit()
	if err != nil {
		return s.etcdErr(ctx, "read purge", err)
	}
	kvs := resp.Responses[0].GetResponseRange().Kvs
	if len(kvs) == 0 {
		return nil
	}
	gen := kvs[0].ModRevision
	done := map[string]bool{}
	var ackKeys []string
	for _, kv := range resp.Responses[1].GetResponseRange().Kvs {
		k := strings.TrimPrefix(string(kv.Key), purgeAcksPrefix)
		if h, ok := strings.CutSuffix(k, "/"+suffix); ok && !strings.Contains(h, "/") {
			g, _ := strconv.ParseInt(string(kv.Value), 10, 64)
			done[h] = g >= gen
			ackKeys = append(ackKeys, string(kv.Key))
		}
	}
	hosts, err := s.ListHosts(ctx)
	if err != nil {
		return err
	}
	for _, h := range hosts {
		if !done[h.Name] {
			return nil
		}
	}
	ops := []clientv3.Op{clientv3.OpDelete(purgesPrefix + suffix)}
	for _, k := range ackKeys {
		ops = append(ops, clientv3.OpDelete(k))
	}
	// Only if no newer purge of the same thing came meanwhile.
	if _, err := s.client.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(purgesPrefix+suffix), "=", gen)).Then(ops...).Commit(); err != nil {
		return s.etcdErr(ctx, "collect purge", err)
	}
	return nil
}
