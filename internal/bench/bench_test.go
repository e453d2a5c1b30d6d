package bench

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeStarter records what Run asks of it. fail picks the ids whose start
// fails; removeErr fails every Remove.
type fakeStarter struct {
	prepareErr error
	removeErr  error
	fail       func(id string) bool
	// onStart runs inside Start, e.g. to cancel the run.
	onStart func(id string)

	mu       sync.Mutex
	prepared bool
	closed   bool
	started  []string
	removed  []string
	// removeCtxErr is the state of ctx seen by Remove: cleanup must not
	// inherit a cancelled run.
	removeCtxErr []error
}

func (f *fakeStarter) Path() string { return "fake" }

func (f *fakeStarter) Prepare(context.Context) error {
	f.prepared = true
	return f.prepareErr
}

func (f *fakeStarter) Start(ctx context.Context, id string) (Sample, error) {
	f.mu.Lock()
	f.started = append(f.started, id)
	f.mu.Unlock()
	if f.onStart != nil {
		f.onStart(id)
	}
	if f.fail != nil && f.fail(id) {
		return Sample{}, errors.New("boom")
	}
	return Sample{Total: 10 * time.Millisecond, Phases: []Phase{{Name: "only", Duration: 4 * time.Millisecond}}}, nil
}

func (f *fakeStarter) Remove(ctx context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.removed = append(f.removed, id)
	f.removeCtxErr = append(f.removeCtxErr, ctx.Err())
	return f.removeErr
}

func (f *fakeStarter) Close(context.Context) error {
	f.closed = true
	return nil
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

func TestRun(t *testing.T) {
	tests := []struct {
		name        string
		starter     *fakeStarter
		n, c        int
		wantOK      int
		wantErrs    int
		wantRemoved int
		wantErr     string
	}{
		{name: "all succeed", starter: &fakeStarter{}, n: 5, c: 1, wantOK: 5, wantRemoved: 5},
		{name: "concurrent", starter: &fakeStarter{}, n: 8, c: 3, wantOK: 8, wantRemoved: 8},
		{
			name:    "failed starts are counted and still removed",
			starter: &fakeStarter{fail: func(id string) bool { return id == "t-1" || id == "t-3" }},
			n:       5, c: 2, wantOK: 3, wantErrs: 2, wantRemoved: 5,
		},
		{
			name:    "prepare failure is reported, nothing started",
			starter: &fakeStarter{prepareErr: errors.New("no image")},
			n:       5, c: 1, wantOK: 0, wantErrs: 1, wantRemoved: 0,
		},
		{
			name:    "cleanup failure is the error",
			starter: &fakeStarter{removeErr: errors.New("stuck")},
			n:       2, c: 1, wantOK: 2, wantRemoved: 2, wantErr: "remove t-0: stuck",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := Run(context.Background(), tt.starter, Options{N: tt.n, Concurrency: tt.c, Prefix: "t-"})
			if tt.wantErr == "" && err != nil {
				t.Fatalf("Run: %v", err)
			}
			if tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("Run error = %v, want it to contain %q", err, tt.wantErr)
			}
			if res.N != tt.n || len(res.Samples) != tt.wantOK || len(res.Errors) != tt.wantErrs {
				t.Errorf("N=%d ok=%d errors=%d (%v), want N=%d ok=%d errors=%d", res.N, len(res.Samples), len(res.Errors), res.Errors, tt.n, tt.wantOK, tt.wantErrs)
			}
			if got := len(tt.starter.removed); got != tt.wantRemoved {
				t.Errorf("removed %d, want %d", got, tt.wantRemoved)
			}
			if !slices.Equal(sorted(tt.starter.removed), sorted(tt.starter.started)) {
				t.Errorf("removed %v, but started %v", tt.starter.removed, tt.starter.started)
			}
			if !tt.starter.closed {
				t.Error("Close was not called")
			}
			if res.Path != "fake" {
				t.Errorf("Path = %q", res.Path)
			}
		})
	}
}

func TestRunCleansUpAfterCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f := &fakeStarter{onStart: func(id string) {
		if id == "t-02" {
			cancel() // Ctrl-C in the middle of the batch
		}
	}}
	res, err := Run(ctx, f, Options{N: 20, Concurrency: 1, Prefix: "t-"})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if len(f.started) >= 20 {
		t.Fatalf("started all %d after cancel", len(f.started))
	}
	if !slices.Equal(sorted(f.removed), sorted(f.started)) {
		t.Errorf("removed %v, started %v", f.removed, f.started)
	}
	for i, e := range f.removeCtxErr {
		if e != nil {
			t.Errorf("Remove %d got a dead context: %v", i, e)
		}
	}
	if len(res.Errors) == 0 || !strings.Contains(res.Errors[len(res.Errors)-1], "interrupted") {
		t.Errorf("errors %v should say the run was interrupted", res.Errors)
	}
}

func TestRunIDsArePrefixFree(t *testing.T) {
	f := &fakeStarter{}
	if _, err := Run(context.Background(), f, Options{N: 12, Concurrency: 3, Prefix: "b-"}); err != nil {
		t.Fatal(err)
	}
	if len(f.started) != 12 {
		t.Fatalf("started %v", f.started)
	}
	for _, a := range f.started {
		for _, b := range f.started {
			if a != b && strings.HasPrefix(b, a) {
				t.Errorf("id %q is a prefix of %q", a, b)
			}
		}
	}
	if !slices.Contains(f.started, "b-00") || !slices.Contains(f.started, "b-11") {
		t.Errorf("ids %v are not zero-padded to two digits", f.started)
	}
}

func TestRunRejectsZeroN(t *testing.T) {
	if _, err := Run(context.Background(), &fakeStarter{}, Options{N: 0}); err == nil {
		t.Fatal("Run with n=0 succeeded")
	}
}

func TestRunTimeoutPerStart(t *testing.T) {
	f := &blockingStarter{}
	res, err := Run(context.Background(), f, Options{N: 2, Concurrency: 2, Timeout: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Errors) != 2 {
		t.Fatalf("errors = %v, want 2 timeouts", res.Errors)
	}
	for _, e := range res.Errors {
		if !strings.Contains(e, context.DeadlineExceeded.Error()) {
			t.Errorf("error %q is not a timeout", e)
		}
	}
}

// blockingStarter's starts never finish on their own.
type blockingStarter struct{ fakeStarter }

func (b *blockingStarter) Start(ctx context.Context, id string) (Sample, error) {
	<-ctx.Done()
	return Sample{}, fmt.Errorf("waiting: %w", ctx.Err())
}
