package bench

import (
	"context"
	"sync"
	"time"
)

// RunPool calls fn(ctx, i) for i in [0, n) on at most concurrency
// goroutines and returns how long the whole batch took. It stops handing
// out new iterations once ctx ends; iterations already running get ctx and
// decide for themselves. fn must be safe for concurrent use. RunPool
// returns only after every call of fn has returned.
func RunPool(ctx context.Context, n, concurrency int, fn func(ctx context.Context, i int)) time.Duration {
	if concurrency < 1 {
		concurrency = 1
	}
	if concurrency > n {
		concurrency = n
	}
	next := make(chan int)
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < concurrency; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				fn(ctx, i)
			}
		}()
	}
feed:
	for i := 0; i < n; i++ {
		// Checked first so that a cancelled batch hands out nothing more
		// even when a worker is ready at the same moment.
		if ctx.Err() != nil {
			break
		}
		select {
		case next <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	return time.Since(start)
}
