package store_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
	"github.com/kanga-run/kanga/internal/store"
)

// TestHoldHost: the host is registered when HoldHost returns, becomes
// Ready once its lease is taken, and stays registered after the loop
// stops (the lease is left to run out, as after a crash); a bad record is
// refused before anything runs.
func TestHoldHost(t *testing.T) {
	s := open(t, store.Config{DataDir: t.TempDir()})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var lost []error
	done, err := s.HoldHost(ctx, api.Host{Name: "held", Capacity: api.HostCapacity{CPUs: 2}}, 5*time.Second,
		store.HoldOptions{Lost: func(err error) { lost = append(lost, err) }})
	if err != nil {
		t.Fatalf("HoldHost: %v", err)
	}
	if h, err := s.GetHost(ctx, "held"); err != nil || h.Capacity.CPUs != 2 {
		t.Fatalf("GetHost after HoldHost = %+v, %v; want the record", h, err)
	}
	wctx, stop := context.WithTimeout(ctx, time.Minute)
	ready := false
	for hs := range s.WatchHosts(wctx) {
		if len(hs) == 1 && hs[0].Name == "held" && hs[0].Status.Phase == api.HostReady {
			ready = true
			break
		}
	}
	stop()
	if !ready {
		t.Fatal("the held host did not become Ready")
	}
	cancel()
	<-done
	if len(lost) != 0 {
		t.Errorf("leases lost while etcd ran: %v", lost)
	}
	if _, err := s.GetHost(t.Context(), "held"); err != nil {
		t.Errorf("GetHost after the loop stopped: %v", err)
	}

	if _, err := s.HoldHost(t.Context(), api.Host{Name: "a/b"}, time.Second, store.HoldOptions{}); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("HoldHost(bad name) = %v, want ErrInvalidArgument", err)
	}
}
