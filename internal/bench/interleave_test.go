package bench

import (
	"context"
	"reflect"
	"sync"
	"testing"
	"time"
)

// logStarter is a fake Starter that logs its starts, across starters.
type logStarter struct {
	path string
	mu   *sync.Mutex
	log  *[]string
}

func (s *logStarter) Path() string                  { return s.path }
func (s *logStarter) Prepare(context.Context) error { return nil }
func (s *logStarter) Close(context.Context) error   { return nil }
func (s *logStarter) Remove(context.Context, string) error {
	return nil
}
func (s *logStarter) Start(_ context.Context, id string) (Sample, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	*s.log = append(*s.log, s.path+":"+id)
	return Sample{Total: time.Millisecond}, nil
}

// TestRunInterleaved: the paths take turns batch by batch, each with
// names of its own, and each gets its n starts in its result.
func TestRunInterleaved(t *testing.T) {
	var mu sync.Mutex
	var log []string
	a := &logStarter{path: "a", mu: &mu, log: &log}
	b := &logStarter{path: "b", mu: &mu, log: &log}
	res, errs := runInterleaved(t.Context(), []Starter{a, b}, Config{N: 3, Concurrency: 1}, "p-")
	if len(errs) != 0 {
		t.Fatal(errs)
	}
	want := []string{"a:p-a0-0", "b:p-b0-0", "a:p-a1-0", "b:p-b1-0", "a:p-a2-0", "b:p-b2-0"}
	if !reflect.DeepEqual(log, want) {
		t.Errorf("starts = %v, want %v", log, want)
	}
	for i, r := range res {
		if r.Path != []string{"a", "b"}[i] || r.N != 3 || len(r.Samples) != 3 {
			t.Errorf("result %d = %s n=%d samples=%d, want n=3 of its own", i, r.Path, r.N, len(r.Samples))
		}
	}
}
