package store

import (
	"context"
	"encoding/json"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// clusterCAKey holds the cluster CA (see package pki): its certificate,
// key and the join token's secret. It lives in etcd, not in a server's
// data dir, so that every control-plane replica on the cluster signs with
// the same CA and accepts the same join token.
const clusterCAKey = "/kanga/pki/ca"

// ClusterCA is what EnsureClusterCA stores.
type ClusterCA struct {
	CertPEM    []byte `json:"cert"`
	KeyPEM     []byte `json:"key"`
	JoinSecret string `json:"joinSecret"`
}

// EnsureClusterCA stores ca unless a CA is stored already, and returns
// the one stored: the first replica to start makes the cluster's CA, the
// others adopt it (a create-if-absent transaction, so two replicas starting
// together agree).
func (s *Store) EnsureClusterCA(ctx context.Context, ca ClusterCA) (ClusterCA, error) {
	val, err := json.Marshal(ca)
	if err != nil {
		return ClusterCA{}, err
	}
	resp, err := s.client.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(clusterCAKey), "=", 0)).
		Then(clientv3.OpPut(clusterCAKey, string(val))).
		Else(clientv3.OpGet(clusterCAKey)).
		Commit()
	if err != nil {
		return ClusterCA{}, s.etcdErr(ctx, "store the cluster CA", err)
	}
	if resp.Succeeded {
		return ca, nil
	}
	kvs := resp.Responses[0].GetResponseRange().Kvs
	if len(kvs) == 0 {
		return ClusterCA{}, fmt.Errorf("store: cluster CA vanished while read")
	}
	var got ClusterCA
	if err := json.Unmarshal(kvs[0].Value, &got); err != nil {
		return ClusterCA{}, fmt.Errorf("store: decode cluster CA: %w", err)
	}
	return got, nil
}
