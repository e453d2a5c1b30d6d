package store

import (
	"context"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/internal/tenant"
)

// ListWatchInstances lists the caller's tenant's instances and streams
// the versions written after that listing, with no gap between the two
// (the watch starts at the listing's revision). Deletions are not sent.
// The channel is closed when ctx ends or the watch breaks; a consumer that
// follows for long lists and watches again.
func (s *Store) ListWatchInstances(ctx context.Context) ([]api.Instance, <-chan *api.Instance, error) {
	t, err := tenant.Name(ctx)
	if err != nil {
		return nil, nil, err
	}
	resp, err := s.client.Get(ctx, tenantPrefix(t), clientv3.WithPrefix())
	if err != nil {
		return nil, nil, s.etcdErr(ctx, "list instances", err)
	}
	list := make([]api.Instance, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		inst, err := decodeInstance(kv)
		if err != nil {
			return nil, nil, err
		}
		list = append(list, *inst)
	}
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	wch := s.client.Watch(wctx, tenantPrefix(t), clientv3.WithPrefix(), clientv3.WithRev(resp.Header.Revision+1))
	out := make(chan *api.Instance, 16)
	go func() {
		defer cancel()
		defer close(out)
		for wr := range wch {
			if wr.Err() != nil {
				return
			}
			for _, ev := range wr.Events {
				if ev.Type == clientv3.EventTypeDelete {
					continue
				}
				inst, err := decodeInstance(ev.Kv)
				if err != nil {
					continue
				}
				select {
				case out <- inst:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return list, out, nil
}
