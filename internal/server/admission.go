package server

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
)

// Admission of creates: a burst of creates must queue in front of the
// platform (429 with Retry-After, retried by the clients) instead of
// inside it, where hundreds of starts at once starve etcd, the hosts'
// lease keep-alives and the agents themselves (issue 22). A create is in
// flight from its admission until its instance is Running, terminal,
// waiting for resources (Unschedulable, InsufficientCPU: it costs no host
// anything), stopped, deleted or re-created; the bound is the ready,
// uncordoned hosts' start slots (api.HostCapacity.StartSlots), which are
// also how many starts each agent runs at once.
//
// The count is kept per API process, in memory: a restarted process
// starts from zero (the creates a previous one admitted and that are still
// starting are not counted, so for a minute after a restart the bound can
// be exceeded by what was in flight then), and N replicas admit up to N
// times the bound between them. Counting from the store instead would cost
// a read of every instance per create, or a second watch of all instances
// per replica, in exactly the moments the store is short of CPU. Every
// admitted create gives its slot back: at once when it is not recorded
// (any error, the client gone), otherwise when its record leaves flight,
// at the latest after admissionHold.

// admissionHold bounds how long one create counts as in flight, so that a
// missed watch event cannot shrink the bound for good.
const admissionHold = 2 * time.Minute

// limitTTL is how long the bound derived from the host records is reused:
// one read of the hosts per second, not one per create.
const limitTTL = time.Second

// retryAfter is the pause a refused create is told to take. Starts take
// a few hundred milliseconds each, so a slot frees within about a second;
// clients add jitter.
const retryAfter = time.Second

// HostLister lists the host records the bound is derived from.
type HostLister interface {
	ListHosts(ctx context.Context) ([]api.Host, error)
}

type admission struct {
	// max: see Options.MaxInflightCreates.
	max   int
	hosts HostLister
	now   func() time.Time

	mu       sync.Mutex
	inflight int
	// limit, why and at are the bound derived from the hosts, how, and
	// when; limit stays at its last non-zero value while no host is
	// ready, since hosts are not ready only for moments.
	limit int
	why   string
	at    time.Time
}

// busyError is a refusal that tells the client when to come back.
type busyError struct {
	error
	after time.Duration
}

func (e busyError) Unwrap() error             { return e.error }
func (e busyError) RetryAfter() time.Duration { return e.after }

// acquire admits one create, or refuses it with an ErrTooManyRequests
// error that names the bound. release gives the slot back; calling it
// more than once is harmless.
func (a *admission) acquire(ctx context.Context) (release func(), err error) {
	if a == nil || a.max == 0 {
		return func() {}, nil
	}
	limit, why := a.bound(ctx)
	a.mu.Lock()
	defer a.mu.Unlock()
	if limit > 0 && a.inflight >= limit {
		return nil, busyError{after: retryAfter, error: fmt.Errorf(
			"too many instance creates in flight: %d of at most %d (%s); retry after %s (the SDK, kanga run and the virtual node do): %w",
			a.inflight, limit, why, retryAfter, errdefs.ErrTooManyRequests)}
	}
	a.inflight++
	var once sync.Once
	return func() {
		once.Do(func() {
			a.mu.Lock()
			a.inflight--
			a.mu.Unlock()
		})
	}, nil
}

// inFlight returns the creates admitted and not yet released.
func (a *admission) inFlight() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.inflight
}

// bound returns the bound now and how it was set; 0 is none.
func (a *admission) bound(ctx context.Context) (int, string) {
	if a.max > 0 {
		return a.max, "--max-inflight-creates"
	}
	a.mu.Lock()
	fresh := !a.at.IsZero() && a.now().Sub(a.at) < limitTTL
	limit, why := a.limit, a.why
	a.mu.Unlock()
	if fresh {
		return limit, why
	}
	hosts, err := a.hosts.ListHosts(ctx)
	if err != nil {
		// The last bound stands; none before the first read.
		return limit, why
	}
	slots, ready := 0, 0
	for _, h := range hosts {
		if h.Status.Phase != api.HostReady || h.Cordoned {
			continue
		}
		ready++
		n := h.Capacity.StartSlots
		if n <= 0 {
			n = api.DefaultStartSlots(h.Capacity.CPUs)
		}
		slots += n
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.at = a.now()
	if slots > 0 {
		a.limit = slots
		a.why = fmt.Sprintf("the start slots of %d ready host%s", ready, plural(ready))
	}
	return a.limit, a.why
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// inFlightDone reports whether an instance created with uid no longer
// counts as in flight.
func inFlightDone(uid string) func(*api.Instance) bool {
	return func(i *api.Instance) bool {
		return i.UID != uid || i.StopRequested || i.DeletionRequested || unschedulable(i) ||
			(i.Status.Phase != api.PhasePending && i.Status.Phase != api.PhaseCreating)
	}
}

// holdAdmission keeps a recorded create's slot until its instance leaves
// flight (inFlightDone), it is gone, or admissionHold passes. ctx is the
// request's: only its values (the tenant) are used.
func (s *Server) holdAdmission(ctx context.Context, name, uid string, release func()) {
	defer release()
	hctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), admissionHold)
	defer cancel()
	_, _ = s.store.WaitInstance(hctx, name, inFlightDone(uid))
}

// setRetryAfter adds the Retry-After header (in whole seconds, at least
// one) to an error response that says when to retry.
func setRetryAfter(w http.ResponseWriter, err error, status int) {
	var ra interface{ RetryAfter() time.Duration }
	d := time.Duration(0)
	if errors.As(err, &ra) {
		d = ra.RetryAfter()
	} else if status != http.StatusTooManyRequests {
		return
	}
	secs := max(int(math.Ceil(d.Seconds())), 1)
	w.Header().Set("Retry-After", strconv.Itoa(secs))
}
