package bench

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestRunPool(t *testing.T) {
	tests := []struct {
		name        string
		n, c        int
		wantMaxBusy int
	}{
		{"sequential", 5, 1, 1},
		{"parallel", 12, 4, 4},
		{"more workers than work", 2, 8, 2},
		{"zero concurrency means one", 3, 0, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var (
				mu      sync.Mutex
				seen    = map[int]int{}
				busy    atomic.Int32
				maxBusy atomic.Int32
				// gate holds every call until wantMaxBusy are in flight,
				// so the maximum is reached deterministically, not by luck.
				gate = make(chan struct{})
				once sync.Once
			)
			RunPool(context.Background(), tt.n, tt.c, func(ctx context.Context, i int) {
				b := busy.Add(1)
				for {
					m := maxBusy.Load()
					if b <= m || maxBusy.CompareAndSwap(m, b) {
						break
					}
				}
				if int(b) >= tt.wantMaxBusy {
					once.Do(func() { close(gate) })
				}
				<-gate
				mu.Lock()
				seen[i]++
				mu.Unlock()
				busy.Add(-1)
			})
			if len(seen) != tt.n {
				t.Fatalf("ran %d distinct iterations, want %d: %v", len(seen), tt.n, seen)
			}
			for i, k := range seen {
				if k != 1 {
					t.Errorf("iteration %d ran %d times", i, k)
				}
			}
			if got := int(maxBusy.Load()); got != tt.wantMaxBusy {
				t.Errorf("at most %d calls in flight, want %d", got, tt.wantMaxBusy)
			}
		})
	}
}

func TestRunPoolStopsOnCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var calls atomic.Int32
	wall := RunPool(ctx, 100, 2, func(ctx context.Context, i int) {
		if calls.Add(1) == 3 {
			cancel()
		}
	})
	// Up to one more iteration per worker may already have been handed out
	// when cancel happened.
	if got := calls.Load(); got < 3 || got > 5 {
		t.Errorf("ran %d iterations after cancelling at the 3rd, want 3..5", got)
	}
	if wall <= 0 || wall > time.Minute {
		t.Errorf("wall time %v is not plausible", wall)
	}
}
