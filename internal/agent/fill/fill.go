// Package fill is what the agent's pools of things made ahead of demand
// share: the sizing Policy, the loop that fills them one job at a time
// (Filler), the lowered CPU priority the fills run at while starts are
// under way (LowPriority), and their status files. The network sandbox
// pool (package pool) and the warm containers (package warm) use it.
package fill

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/kanga-run/kanga/internal/atomicfile"
)

// BusyFor is how long after a take the host counts as busy starting
// instances: about one start's time on a 2-core host. Fills started then
// run at low priority (LowPriority).
const BusyFor = 250 * time.Millisecond

// Filler is the loop the network pool and the warm containers share: it
// runs every job next says is due, each in its own goroutine (next
// accounts for them, so it returns nil once its Parallel slots are
// taken), and looks again when a job ends, when poked, and once a second,
// since targets shrink with time alone.
type Filler struct {
	wake chan struct{}
}

// NewFiller returns a Filler; it loops once Run runs.
func NewFiller() Filler { return Filler{wake: make(chan struct{}, 1)} }

// Poke makes Run look for due jobs now.
func (f Filler) Poke() {
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

// Run loops until ctx ends, then waits for the jobs in flight (jobs cut
// short by ctx undo themselves) and calls drain, which must not depend on
// ctx. status runs after every round.
func (f Filler) Run(ctx context.Context, next func() func(context.Context), status func(), drain func(context.Context)) {
	var wg sync.WaitGroup
	defer func() {
		wg.Wait()
		drain(context.WithoutCancel(ctx))
	}()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		for {
			job := next()
			if job == nil {
				break
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				job(ctx)
				f.Poke()
			}()
		}
		status()
		select {
		case <-ctx.Done():
			return
		case <-f.wake:
		case <-tick.C:
		}
	}
}

// WriteStatusFile replaces path with b atomically, so a reader never sees
// half a status.
func WriteStatusFile(path string, b []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	// Not fsynced: a report for operators, written again at every change.
	return atomicfile.WriteNoSync(path, append(b, '\n'), 0o644)
}
