package agent

import (
	"context"
	"runtime"

	"github.com/kanga-run/kanga/api"
)

// startSlots bounds the instance starts the agent runs at once. A start is
// CPU work for the agent, containerd, the runtime and CNI; a burst of
// hundreds of them at once leaves nothing for etcd and the lease
// keep-alives on a small host, and each start gets slower rather than the
// burst getting done sooner. The starts beyond the slots wait their turn
// in FIFO-ish order (a buffered channel's waiters), still Pending.
type startSlots chan struct{}

func newStartSlots(n int) startSlots {
	if n <= 0 {
		n = api.DefaultStartSlots(runtime.NumCPU())
	}
	return make(startSlots, n)
}

// acquire takes a slot, or returns false when ctx ends first. release
// gives it back; it is safe to call once.
func (s startSlots) acquire(ctx context.Context) (release func(), ok bool) {
	select {
	case s <- struct{}{}:
		return func() { <-s }, true
	case <-ctx.Done():
		return nil, false
	}
}

// StartSlots is how many starts the agent runs at once (Config.StartSlots,
// or api.DefaultStartSlots of the host's cores); the host reports it in its
// capacity, and the API admits creates up to the ready hosts' sum.
func (a *Agent) StartSlots() int { return cap(a.starts) }
