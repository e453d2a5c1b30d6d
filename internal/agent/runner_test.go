package agent

import (
	"testing"
	"time"
)

// TestNextDeadline: the loop's timer is set for the earliest of what the
// runner waits for, and for nothing when it waits for nothing.
func TestNextDeadline(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	for _, tc := range []struct {
		name     string
		killAt   time.Time
		deadline time.Time
		ctrs     []*ctr
		inits    []*ctr
		want     time.Time
	}{
		{name: "nothing pending", ctrs: []*ctr{{}, {}}},
		{name: "the instance's deadline", deadline: at(50), ctrs: []*ctr{{}}, want: at(50)},
		{name: "a kill before the deadline", killAt: at(10), deadline: at(50), want: at(10)},
		{name: "a restart before the kill", killAt: at(10), ctrs: []*ctr{{restartAt: at(30)}, {restartAt: at(5)}}, want: at(5)},
		{name: "a container's own kill", deadline: at(50), ctrs: []*ctr{{killAt: at(7)}, {restartAt: at(8)}}, want: at(7)},
		{name: "an init container's restart counts", deadline: at(50), inits: []*ctr{{init: true, restartAt: at(3)}}, ctrs: []*ctr{{restartAt: at(4)}}, want: at(3)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &runner{killAt: tc.killAt, deadline: tc.deadline, ctrs: tc.ctrs, inits: tc.inits}
			if got := r.nextDeadline(); !got.Equal(tc.want) {
				t.Errorf("nextDeadline = %s, want %s", got, tc.want)
			}
		})
	}
}
