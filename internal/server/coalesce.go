package server

import (
	"context"
	"sync"
	"time"
)

// coalescer merges concurrent identical reads: under 200 concurrent lists
// of one tenant, the etcd reads behind them (the token's record, the
// tenant's instances) were most of what a request cost, each one the same
// read of the same values. A caller joins only a batch that has not
// started reading yet, so its result still reflects every write that
// finished before the caller arrived (the reads stay linearizable): per
// key, at most one batch reads while the next gathers the callers that
// come meanwhile.
type coalescer[T any] struct {
	mu   sync.Mutex
	keys map[string]*coalesced[T]
}

type coalesced[T any] struct {
	running bool
	next    *batch[T]
}

type batch[T any] struct {
	done    chan struct{}
	callers int
	val     T // shared by every caller of the batch: read only
	err     error
}

// coalescedReadTimeout bounds a batch's read, which no single caller's
// cancellation ends.
const coalescedReadTimeout = 30 * time.Second

// do returns the result of fn, run for a batch of callers of key that
// arrived before it started. fn runs with ctx's values (the tenant) but
// not its cancellation: other callers wait for the same read. A batch
// may run with another caller's fn and ctx, so what fn reads must depend
// on key alone (and on what ctx holds that key determines).
func (c *coalescer[T]) do(ctx context.Context, key string, fn func(context.Context) (T, error)) (T, error) {
	c.mu.Lock()
	if c.keys == nil {
		c.keys = map[string]*coalesced[T]{}
	}
	k := c.keys[key]
	if k == nil {
		k = &coalesced[T]{}
		c.keys[key] = k
	}
	if k.next == nil {
		k.next = &batch[T]{done: make(chan struct{})}
	}
	b := k.next
	b.callers++
	if !k.running {
		c.start(ctx, key, k, fn)
	}
	c.mu.Unlock()
	select {
	case <-b.done:
		return b.val, b.err
	case <-ctx.Done():
		var zero T
		return zero, ctx.Err()
	}
}

// start runs k's gathering batch; c.mu is held.
func (c *coalescer[T]) start(ctx context.Context, key string, k *coalesced[T], fn func(context.Context) (T, error)) {
	b := k.next
	k.next, k.running = nil, true
	go func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), coalescedReadTimeout)
		b.val, b.err = fn(rctx)
		cancel()
		close(b.done)
		c.mu.Lock()
		defer c.mu.Unlock()
		k.running = false
		if k.next != nil {
			c.start(ctx, key, k, fn)
		} else {
			delete(c.keys, key)
		}
	}()
}
