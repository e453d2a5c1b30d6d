package agent

import (
	"errors"
	"slices"
	"testing"

	"github.com/kanga-run/kanga/errdefs"
)

func TestParseFormatCPUList(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    []int
		format  string
		wantErr bool
	}{
		{in: "0-1\n", want: []int{0, 1}, format: "0-1"},
		{in: "0", want: []int{0}, format: "0"},
		{in: "0-2,5,7-8", want: []int{0, 1, 2, 5, 7, 8}, format: "0-2,5,7-8"},
		{in: "3,1,1", want: []int{1, 3}, format: "1,3"},
		{in: "", want: nil, format: ""},
		{in: "2-1", wantErr: true},
		{in: "a", wantErr: true},
		{in: "1-", wantErr: true},
	} {
		got, err := parseCPUList(tc.in)
		if tc.wantErr {
			if err == nil {
				t.Errorf("parseCPUList(%q) = %v, want an error", tc.in, got)
			}
			continue
		}
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("parseCPUList(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
		if f := formatCPUList(got); f != tc.format {
			t.Errorf("formatCPUList(%v) = %q, want %q", got, f, tc.format)
		}
	}
}

func TestCPUAllocator(t *testing.T) {
	c := newCPUAllocator([]int{0, 1, 2, 3})
	step := func(what string, uid string, n int, want []int, wantOK bool) {
		t.Helper()
		got, ok, err := c.allocate(uid, n)
		if err != nil || ok != wantOK || !slices.Equal(got, want) {
			t.Fatalf("%s: allocate(%s, %d) = %v, %v, %v; want %v, %v", what, uid, n, got, ok, err, want, wantOK)
		}
	}
	step("first", "a", 1, []int{0}, true)
	step("second", "b", 2, []int{1, 2}, true)
	step("idempotent", "a", 1, []int{0}, true)
	step("not enough now", "c", 2, nil, false)
	if c.free() != 1 {
		t.Fatalf("free = %d, want 1", c.free())
	}
	if _, _, err := c.allocate("d", 5); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Fatalf("more cores than the host: err %v, want invalid argument", err)
	}

	wake := c.waitCh()
	c.release("b")
	select {
	case <-wake:
	default:
		t.Fatal("release did not wake waiters")
	}
	step("after release", "c", 2, []int{1, 2}, true)
	c.release("nobody") // no-op
	if got := c.holders(); !slices.Equal(got, []string{"a", "c"}) {
		t.Fatalf("holders = %v", got)
	}
}

func TestCPUAllocatorRestore(t *testing.T) {
	c := newCPUAllocator([]int{0, 1})
	if err := c.restore("a", []int{1}); err != nil {
		t.Fatal(err)
	}
	if err := c.restore("b", []int{1}); !errors.Is(err, errdefs.ErrConflict) {
		t.Fatalf("restoring a held core: %v, want conflict", err)
	}
	if err := c.restore("b", []int{7}); !errors.Is(err, errdefs.ErrConflict) {
		t.Fatalf("restoring a core the host lacks: %v, want conflict", err)
	}
	// A new instance gets what the restored one does not hold.
	got, ok, err := c.allocate("new", 1)
	if err != nil || !ok || !slices.Equal(got, []int{0}) {
		t.Fatalf("allocate after restore = %v, %v, %v; want [0]", got, ok, err)
	}
	if got, ok, _ := c.allocate("a", 1); !ok || !slices.Equal(got, []int{1}) {
		t.Fatalf("restored instance re-allocates %v, want its own [1]", got)
	}
}

func TestHostCPUs(t *testing.T) {
	if n := HostCPUs(); n < 1 {
		t.Fatalf("HostCPUs() = %d", n)
	}
}
