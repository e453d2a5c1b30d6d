package agent

import (
	"testing"
	"time"

	"github.com/kanga-run/kanga/api"
)

func TestBackoffPolicyNext(t *testing.T) {
	s := time.Second
	for _, tc := range []struct {
		name      string
		p         backoffPolicy
		prev, ran time.Duration
		want      time.Duration
	}{
		{"first restart waits the minimum", restartBackoff, 0, 0, s},
		{"first restart after a long run", restartBackoff, 0, time.Hour, s},
		{"a crash loop doubles", restartBackoff, s, 2 * s, 2 * s},
		{"and doubles again", restartBackoff, 4 * s, 0, 8 * s},
		{"up to the maximum", restartBackoff, 16 * s, 0, 30 * s},
		{"and stays there", restartBackoff, 30 * s, 9 * s, 30 * s},
		{"a run just short of reset still doubles", restartBackoff, 8 * s, 10*s - time.Nanosecond, 16 * s},
		{"a run of reset starts over", restartBackoff, 30 * s, 10 * s, s},
		{"a longer run starts over", restartBackoff, 8 * s, time.Minute, s},
		{"without reset no run starts over", teardownBackoff, 4 * s, time.Hour, 8 * s},
		{"teardown's first retry", teardownBackoff, 0, 0, 500 * time.Millisecond},
		{"teardown's cap", teardownBackoff, 20 * s, 0, 30 * s},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.p.next(tc.prev, tc.ran); got != tc.want {
				t.Errorf("next(%s, %s) = %s, want %s", tc.prev, tc.ran, got, tc.want)
			}
		})
	}
}

// TestBackoffPolicySequence: the delays a crash loop sees, one after
// the other, as the runner feeds each back in.
func TestBackoffPolicySequence(t *testing.T) {
	for _, tc := range []struct {
		name string
		p    backoffPolicy
		ran  []time.Duration // how long each attempt ran
		want []time.Duration
	}{
		{
			name: "restart crash loop",
			p:    restartBackoff,
			ran:  []time.Duration{0, 0, 0, 0, 0, 0, 0},
			want: []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second, 30 * time.Second, 30 * time.Second},
		},
		{
			name: "a healthy run in between resets",
			p:    restartBackoff,
			ran:  []time.Duration{0, 0, 0, time.Minute, 0},
			want: []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, time.Second, 2 * time.Second},
		},
		{
			name: "teardown retries",
			p:    teardownBackoff,
			ran:  []time.Duration{0, 0, 0, 0, 0, 0, 0, 0},
			want: []time.Duration{500 * time.Millisecond, time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second, 30 * time.Second, 30 * time.Second},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var d time.Duration
			for i, ran := range tc.ran {
				d = tc.p.next(d, ran)
				if d != tc.want[i] {
					t.Fatalf("attempt %d: delay %s, want %s", i+1, d, tc.want[i])
				}
			}
		})
	}
}

func TestRanFor(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	t1 := t0.Add(90 * time.Second)
	for _, tc := range []struct {
		name string
		st   api.ContainerStatus
		want time.Duration
	}{
		{"never started", api.ContainerStatus{}, 0},
		{"still running", api.ContainerStatus{StartedAt: &t0}, 0},
		{"finished without a start (adopted exit)", api.ContainerStatus{FinishedAt: &t1}, 0},
		{"ran", api.ContainerStatus{StartedAt: &t0, FinishedAt: &t1}, 90 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := ranFor(tc.st); got != tc.want {
				t.Errorf("ranFor = %s, want %s", got, tc.want)
			}
		})
	}
}

// TestScheduleRestart: an exit schedules the restart after the backoff,
// grown from the container's previous one, and marks it terminated.
func TestScheduleRestart(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	short, long := t0.Add(time.Second), t0.Add(time.Minute)
	for _, tc := range []struct {
		name     string
		backoff  time.Duration
		finished *time.Time
		want     time.Duration
	}{
		{"first crash", 0, &short, time.Second},
		{"crash loop", 4 * time.Second, &short, 8 * time.Second},
		{"after a long run", 16 * time.Second, &long, time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &runner{}
			c := &ctr{backoff: tc.backoff, status: api.ContainerStatus{State: api.ContainerRunning, StartedAt: &t0, FinishedAt: tc.finished}}
			before := time.Now()
			r.scheduleRestart(c)
			if c.backoff != tc.want {
				t.Errorf("backoff = %s, want %s", c.backoff, tc.want)
			}
			if c.restartAt.Before(before.Add(tc.want)) || c.restartAt.After(time.Now().Add(tc.want)) {
				t.Errorf("restartAt = %s, want %s after the call", c.restartAt, tc.want)
			}
			if c.status.State != api.ContainerTerminated {
				t.Errorf("state = %s, want %s", c.status.State, api.ContainerTerminated)
			}
		})
	}
}
