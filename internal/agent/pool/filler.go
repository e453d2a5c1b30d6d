package pool

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/kanga-run/kanga/internal/atomicfile"
)

// filler is the loop the network pool and the warm containers share: it
// runs every job next says is due, each in its own goroutine (next
// accounts for them, so it returns nil once its Parallel slots are
// taken), and looks again when a job ends, when poked, and once a second,
// since targets shrink with time alone.
type filler struct {
	wake chan struct{}
}

func newFiller() filler { return filler{wake: make(chan struct{}, 1)} }

// poke makes run look for due jobs now.
func (f filler) poke() {
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

// run loops until ctx ends, then waits for the jobs in flight (jobs cut
// short by ctx undo themselves) and calls drain, which must not depend on
// ctx. status runs after every round.
func (f filler) run(ctx context.Context, next func() func(context.Context), status func(), drain func(context.Context)) {
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
				f.poke()
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

// writeStatusFile replaces path with b atomically, so a reader never sees
// half a status.
func writeStatusFile(path string, b []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	// Not fsynced: a report for operators, written again at every change.
	return atomicfile.WriteNoSync(path, append(b, '\n'), 0o644)
}
