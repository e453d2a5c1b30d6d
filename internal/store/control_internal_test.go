package store

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/kanga-run/kanga/api"
)

// TestControlPathBesideFullDataPath: with every in-flight slot of the data
// connection taken (a burst of instance writes queued in front of etcd),
// a host still takes and keeps its lease and a replica still wins the
// control-plane election, because both use the control connection.
func TestControlPathBesideFullDataPath(t *testing.T) {
	s := openInternal(t)
	ctx := t.Context()
	const host = "ctl-host"
	if err := s.RegisterHost(ctx, &api.Host{Name: host}); err != nil {
		t.Fatal(err)
	}

	// Take every slot of the data connection.
	for range cap(s.slots) {
		s.slots <- struct{}{}
	}
	defer func() {
		for range cap(s.slots) {
			<-s.slots
		}
	}()
	// The data path is stuck now: a read waits for a slot until its
	// deadline.
	rctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	_, err := s.client.Get(rctx, hostKey(host))
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a read with every data slot taken = %v, want it to wait until its deadline", err)
	}

	// The control path is not: the election is won and the lease is
	// taken. The minute is a bound on a hang (a control path queued
	// behind the full data path waits forever), not a timing assertion.
	ctx, cancelAll := context.WithTimeout(ctx, time.Minute)
	defer cancelAll()
	l, err := s.Campaign(ctx, "ctl-test", "me", 2*time.Second)
	if err != nil {
		t.Fatalf("Campaign with the data path full: %v", err)
	}
	defer l.Resign(context.WithoutCancel(ctx))

	kctx, stop := context.WithCancel(ctx)
	kept := make(chan error, 1)
	go func() { kept <- s.KeepHostAlive(kctx, host, 2*time.Second) }()
	for {
		resp, err := s.ctl.Get(ctx, hostLeaseKey(host))
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Kvs) == 1 {
			break
		}
		select {
		case err := <-kept:
			t.Fatalf("KeepHostAlive with the data path full returned %v", err)
		case <-time.After(20 * time.Millisecond):
		}
	}
	stop()
	if err := <-kept; !errors.Is(err, context.Canceled) {
		t.Fatalf("KeepHostAlive after cancel = %v, want context.Canceled", err)
	}
}
