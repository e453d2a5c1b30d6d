package store

import (
	"context"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kanga-run/kanga/api"
)

// InstancesAt lists all instances as they were at revision rev (an error
// if it was compacted away). The agents' link (package hostlink) uses it to
// know which instances were on a host when the host's watch resumes, so
// that it forwards the event that moves one away without forwarding every
// other instance's.
func (s *Store) InstancesAt(ctx context.Context, rev int64) ([]api.Instance, error) {
	resp, err := s.client.Get(ctx, instancesPrefix, clientv3.WithPrefix(), clientv3.WithRev(rev))
	if err != nil {
		return nil, s.etcdErr(ctx, "list instances at a revision", err)
	}
	out := make([]api.Instance, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		inst, err := decodeInstance(kv)
		if err != nil {
			return nil, err
		}
		out = append(out, *inst)
	}
	return out, nil
}
