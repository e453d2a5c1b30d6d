package steps

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
)

// fakeStep records what the runner did with it.
type fakeStep struct {
	name    string
	log     *[]string
	fail    error // Do fails with it
	undoErr error // its undo fails with it
	noUndo  bool  // Do returns a nil undo
	undoCtx *context.Context
}

func (s fakeStep) Name() string { return s.name }

func (s fakeStep) Do(ctx context.Context) (Undo, error) {
	*s.log = append(*s.log, "do "+s.name)
	if s.fail != nil {
		return nil, s.fail
	}
	if s.noUndo {
		return nil, nil
	}
	return func(ctx context.Context) error {
		if s.undoCtx != nil {
			*s.undoCtx = ctx
		}
		*s.log = append(*s.log, "undo "+s.name)
		return s.undoErr
	}, nil
}

func TestRunOrderAndReverseUndo(t *testing.T) {
	cause := errors.New("boom")
	names := []string{"network", "cgroup", "files", "container", "task"}
	tests := []struct {
		name     string
		failAt   int // -1: none fails
		noUndo   []int
		undoErrs []int
		want     []string
	}{
		{name: "all succeed", failAt: -1,
			want: []string{"do network", "do cgroup", "do files", "do container", "do task"}},
		{name: "first fails", failAt: 0,
			want: []string{"do network"}},
		{name: "second fails", failAt: 1,
			want: []string{"do network", "do cgroup", "undo network"}},
		{name: "middle fails", failAt: 2,
			want: []string{"do network", "do cgroup", "do files", "undo cgroup", "undo network"}},
		{name: "fourth fails", failAt: 3,
			want: []string{"do network", "do cgroup", "do files", "do container", "undo files", "undo cgroup", "undo network"}},
		{name: "last fails", failAt: 4,
			want: []string{"do network", "do cgroup", "do files", "do container", "do task", "undo container", "undo files", "undo cgroup", "undo network"}},
		{name: "nil undos are skipped", failAt: 4, noUndo: []int{1, 3},
			want: []string{"do network", "do cgroup", "do files", "do container", "do task", "undo files", "undo network"}},
		{name: "failing undos do not stop the others", failAt: 3, undoErrs: []int{0, 2},
			want: []string{"do network", "do cgroup", "do files", "do container", "undo files", "undo cgroup", "undo network"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			var logs bytes.Buffer
			var ss []Step
			for i, n := range names {
				s := fakeStep{name: n, log: &got, noUndo: slices.Contains(tt.noUndo, i)}
				if i == tt.failAt {
					s.fail = cause
				}
				if slices.Contains(tt.undoErrs, i) {
					s.undoErr = fmt.Errorf("undo %s broke", n)
				}
				ss = append(ss, s)
			}
			r := Runner{Log: slog.New(slog.NewTextHandler(&logs, nil))}
			err := r.Run(context.Background(), ss...)
			if !slices.Equal(got, tt.want) {
				t.Errorf("calls:\n got %q\nwant %q", got, tt.want)
			}
			if tt.failAt < 0 {
				if err != nil {
					t.Fatalf("Run: %v", err)
				}
				return
			}
			var se *Error
			if !errors.As(err, &se) || se.Step != names[tt.failAt] {
				t.Fatalf("error %v does not name step %s", err, names[tt.failAt])
			}
			if !errors.Is(err, cause) {
				t.Errorf("error %v does not wrap the cause", err)
			}
			if want := names[tt.failAt] + ": boom"; err.Error() != want {
				t.Errorf("error text %q, want %q", err.Error(), want)
			}
			for _, i := range tt.undoErrs {
				if want := fmt.Sprintf("undo %s broke", names[i]); !strings.Contains(logs.String(), want) {
					t.Errorf("the failed undo of %s is not logged: %s", names[i], logs.String())
				}
			}
			if len(tt.undoErrs) == 0 && logs.Len() > 0 {
				t.Errorf("unexpected log: %s", logs.String())
			}
		})
	}
}

func TestRunCancelled(t *testing.T) {
	for _, keep := range []bool{true, false} {
		t.Run(fmt.Sprintf("KeepOnCancel=%v", keep), func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			var got []string
			var undoCtx context.Context
			first := fakeStep{name: "network", log: &got, undoCtx: &undoCtx}
			// The failure is the cancellation itself, as when the agent
			// stops mid-start.
			second := Func("cgroup", func(context.Context) (Undo, error) {
				got = append(got, "do cgroup")
				cancel()
				return nil, context.Canceled
			})
			err := Runner{KeepOnCancel: keep}.Run(ctx, first, second)
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("Run: %v", err)
			}
			want := []string{"do network", "do cgroup"}
			if !keep {
				want = append(want, "undo network")
			}
			if !slices.Equal(got, want) {
				t.Fatalf("calls %q, want %q", got, want)
			}
			if !keep && undoCtx.Err() != nil {
				t.Errorf("the undo ran with a cancelled context: %v", undoCtx.Err())
			}
		})
	}
}

func TestKeepOnCancelStillUndoesOrdinaryFailures(t *testing.T) {
	var got []string
	err := Runner{KeepOnCancel: true}.Run(context.Background(),
		fakeStep{name: "network", log: &got},
		fakeStep{name: "cgroup", log: &got, fail: errors.New("no memory controller")})
	if err == nil || err.Error() != "cgroup: no memory controller" {
		t.Fatalf("Run: %v", err)
	}
	if want := []string{"do network", "do cgroup", "undo network"}; !slices.Equal(got, want) {
		t.Fatalf("calls %q, want %q", got, want)
	}
}
