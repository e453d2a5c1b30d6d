package store

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kanga-run/kanga/api"
)

// WatchTenants sends the list of every tenant (as ListTenants) now and
// again after each change, at most every 100 ms while changes keep
// coming; a list the consumer has not taken yet is replaced by a newer
// one. The channel is closed when ctx ends or the store closes.
func (s *Store) WatchTenants(ctx context.Context) <-chan []api.Tenant {
	out := make(chan []api.Tenant, 1)
	go func() {
		defer close(out)
		send := func(ts []api.Tenant) bool {
			select {
			case <-out: // drop the stale list
			default:
			}
			select {
			case out <- ts:
				return true
			case <-ctx.Done():
				return false
			}
		}
		for ctx.Err() == nil && s.client.Ctx().Err() == nil {
			wctx, cancel := context.WithCancel(ctx)
			ts, rev, err := s.listTenantsRev(wctx)
			if err != nil {
				cancel()
				s.logger.Warn("watch tenants: cannot list; retrying", "error", err)
				if s.pause(ctx) != nil {
					return
				}
				continue
			}
			if !send(ts) {
				cancel()
				return
			}
			wch := s.client.Watch(clientv3.WithRequireLeader(wctx), tenantsPrefix, clientv3.WithPrefix(), clientv3.WithRev(rev+1))
			broken := false
			for !broken {
				select {
				case wr, ok := <-wch:
					if !ok || wr.Err() != nil {
						broken = true
						break
					}
					// Coalesce a burst of changes into one list.
					timer := time.NewTimer(100 * time.Millisecond)
				drain:
					for {
						select {
						case wr, ok := <-wch:
							if !ok || wr.Err() != nil {
								broken = true
								break drain
							}
						case <-timer.C:
							break drain
						}
					}
					timer.Stop()
					if ts, _, err := s.listTenantsRev(wctx); err == nil {
						if !send(ts) {
							cancel()
							return
						}
					} else {
						broken = true
					}
				case <-ctx.Done():
					cancel()
					return
				}
			}
			cancel()
		}
	}()
	return out
}

func (s *Store) listTenantsRev(ctx context.Context) ([]api.Tenant, int64, error) {
	resp, err := s.client.Get(ctx, tenantsPrefix, clientv3.WithPrefix())
	if err != nil {
		return nil, 0, s.etcdErr(ctx, "list tenants", err)
	}
	out := make([]api.Tenant, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		var t api.Tenant
		if err := json.Unmarshal(kv.Value, &t); err != nil {
			return nil, 0, fmt.Errorf("store: decode tenant %s: %w", kv.Key, err)
		}
		out = append(out, t)
	}
	return out, resp.Header.Revision, nil
}
