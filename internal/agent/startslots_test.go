package agent

import (
	"context"
	"testing"
)

func TestStartSlots(t *testing.T) {
	s := newStartSlots(2)
	ctx := context.Background()
	r1, ok1 := s.acquire(ctx)
	r2, ok2 := s.acquire(ctx)
	if !ok1 || !ok2 {
		t.Fatal("the first two starts did not get a slot")
	}
	// A third start waits; with its context ended it gives up.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, ok := s.acquire(cctx); ok {
		t.Fatal("a third start got a slot while both were taken")
	}
	r1()
	r3, ok3 := s.acquire(cctx)
	if !ok3 {
		// Both cases of the select may be ready; a cancelled context may
		// still win. Try again with a live one.
		r3, ok3 = s.acquire(ctx)
	}
	if !ok3 {
		t.Fatal("a start did not get the slot freed for it")
	}
	r2()
	r3()
	if len(s) != 0 {
		t.Errorf("%d slots still taken after every release", len(s))
	}
	if got := cap(newStartSlots(0)); got < 2 {
		t.Errorf("default slots = %d, want at least 2", got)
	}
}
