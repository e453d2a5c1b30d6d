package client

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// A server at its limit of work in flight refuses a request with 429 Too
// Many Requests and a Retry-After header (errdefs.ErrTooManyRequests); it
// did nothing, so the request is sent again after that pause, with jitter
// so that a burst of refused clients does not come back at once. Retries
// stop at the context's deadline (a wait that would pass it is not
// started) or, without one, after the client's retry budget
// (WithBusyRetry).

// DefaultBusyRetry is how long a client keeps retrying refused requests
// when the context has no deadline.
const DefaultBusyRetry = 5 * time.Minute

// defaultRetryAfter is the pause when a 429 does not say.
const defaultRetryAfter = time.Second

// WithBusyRetry sets how long the client keeps retrying requests the
// server refused with 429 when the request's context has no deadline
// (DefaultBusyRetry by default); 0 turns the retries off, so that a 429
// is returned at once.
func WithBusyRetry(d time.Duration) Option {
	return func(c *Client) { c.busyRetry = &d }
}

// Retry describes one retry of a request the server refused for now.
type Retry struct {
	Method, Path string
	// Attempt counts the retries of the request, from 1.
	Attempt int
	// Wait is the pause before this retry.
	Wait time.Duration
	// Err is the server's refusal.
	Err error
}

type retryObserverKey struct{}

// WithRetryObserver returns a context whose requests report each retry
// to fn before its pause, so that a caller (the CLI, a benchmark) can
// count and show them. fn must be safe for concurrent use when the
// context is shared by concurrent requests.
func WithRetryObserver(ctx context.Context, fn func(Retry)) context.Context {
	if prev, ok := ctx.Value(retryObserverKey{}).(func(Retry)); ok {
		next := fn
		fn = func(r Retry) { prev(r); next(r) }
	}
	return context.WithValue(ctx, retryObserverKey{}, fn)
}

func observeRetry(ctx context.Context, r Retry) {
	if fn, ok := ctx.Value(retryObserverKey{}).(func(Retry)); ok {
		fn(r)
	}
}

// retryable returns the pause the server asked for if err is its refusal
// of a request that may be sent again.
func retryable(err error) (time.Duration, bool) {
	ae, ok := errorsAsAPI(err)
	if !ok || ae.StatusCode != http.StatusTooManyRequests {
		return 0, false
	}
	if ae.RetryAfter > 0 {
		return ae.RetryAfter, true
	}
	return defaultRetryAfter, true
}

// retryPause is after plus up to half of it again, at random.
func retryPause(after time.Duration) time.Duration {
	return after + time.Duration(rand.Int64N(int64(after/2)+1))
}

// waitRetry decides whether to retry a refused request after attempt
// retries, started at begun, and sleeps the pause. It returns the error
// to give up with, or nil to send the request again.
func (c *Client) waitRetry(ctx context.Context, method, path string, err error, attempt int, begun time.Time) error {
	after, ok := retryable(err)
	if !ok {
		return err
	}
	budget := DefaultBusyRetry
	if c.busyRetry != nil {
		budget = *c.busyRetry
	}
	if budget <= 0 {
		return err
	}
	pause := retryPause(after)
	deadline, hasDeadline := ctx.Deadline()
	if !hasDeadline {
		deadline = begun.Add(budget)
	}
	if time.Now().Add(pause).After(deadline) {
		if attempt == 0 {
			return err
		}
		return &gaveUp{err: err, retries: attempt}
	}
	observeRetry(ctx, Retry{Method: method, Path: path, Attempt: attempt + 1, Wait: pause, Err: err})
	t := time.NewTimer(pause)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// gaveUp is a refusal after retries: the server's error, with how many.
type gaveUp struct {
	err     error
	retries int
}

func (g *gaveUp) Error() string {
	return fmt.Sprintf("%v (gave up after %d retries: the next would pass the request's deadline)", g.err, g.retries)
}
func (g *gaveUp) Unwrap() error { return g.err }

// parseRetryAfter reads a Retry-After header: delay-seconds or an
// HTTP-date (RFC 9110, 10.2.3); 0 when absent or unreadable.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if secs, err := strconv.Atoi(v); err == nil {
		if secs < 0 {
			return 0
		}
		return time.Duration(secs) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(t.Sub(now), 0)
	}
	return 0
}

// Retries reports how many retries err went through before the client
// gave up (0 when it did not retry).
func Retries(err error) int {
	var g *gaveUp
	if errors.As(err, &g) {
		return g.retries
	}
	return 0
}
