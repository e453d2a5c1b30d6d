package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
)

// HoldOptions tune HoldHost.
type HoldOptions struct {
	// Refresh, if set, brings the record up to date before the host is
	// registered again (its images, say).
	Refresh func(ctx context.Context, h *api.Host)
	// Lost, if set, hears of each lease lost while ctx lives: why, and
	// whether the record itself was gone.
	Lost func(err error)
	// Backoff is the pause after a lost lease before the next (default
	// 250 ms): etcd that has just failed is not hammered.
	Backoff time.Duration
}

// HoldHost registers h and keeps its lease of ttl in the background until
// ctx ends: the loop of a host whose lease is held in the store directly
// rather than through the agents' link. A lease lost (etcd unreachable for
// longer than ttl) is taken again; a host record that was removed is
// registered again. It returns once h is registered; done is closed when
// the loop has stopped after ctx ended.
func (s *Store) HoldHost(ctx context.Context, h api.Host, ttl time.Duration, o HoldOptions) (done <-chan struct{}, err error) {
	if err := s.RegisterHost(ctx, &h); err != nil {
		return nil, fmt.Errorf("registering host %s: %w", h.Name, err)
	}
	if o.Backoff <= 0 {
		o.Backoff = 250 * time.Millisecond
	}
	d := make(chan struct{})
	go func() {
		defer close(d)
		for ctx.Err() == nil {
			err := s.KeepHostAlive(ctx, h.Name, ttl)
			if ctx.Err() != nil {
				return
			}
			if o.Lost != nil {
				o.Lost(err)
			}
			if errors.Is(err, errdefs.ErrFailedPrecondition) {
				// The host record was removed: register again.
				if o.Refresh != nil {
					o.Refresh(ctx, &h)
				}
				if err := s.RegisterHost(ctx, &h); err != nil && o.Lost != nil {
					o.Lost(fmt.Errorf("registering host %s again: %w", h.Name, err))
				}
			}
			select {
			case <-ctx.Done():
			case <-time.After(o.Backoff):
			}
		}
	}()
	return d, nil
}
