package bench

import (
	"strings"
	"testing"
	"time"
)

func TestSummarizeCountsRetries(t *testing.T) {
	res := Result{Path: PathKanga, N: 4, Wall: time.Second, Samples: []Sample{
		{Total: time.Second, Retries: 3}, {Total: time.Second}, {Total: 2 * time.Second, Retries: 1},
	}, Errors: []string{"x: create: too many requests"}}
	s := Summarize([]Result{res}, "")[0]
	if s.Retries != 4 || s.RetriedStarts != 2 || s.Failed != 1 {
		t.Fatalf("retries %d over %d starts, %d failed; want 4 over 2, 1 failed", s.Retries, s.RetriedStarts, s.Failed)
	}
	var b strings.Builder
	if err := (Report{N: 4, Concurrency: 8, Paths: []Summary{s}}).WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "busy (429) 4 times; 2 of 3 starts retried") {
		t.Errorf("table does not report the retries:\n%s", b.String())
	}
}
