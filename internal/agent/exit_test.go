package agent

import (
	"testing"
	"time"

	"github.com/kanga-run/kanga/api"
)

func TestExitReason(t *testing.T) {
	for _, tc := range []struct {
		name      string
		stopping  bool
		code      int
		oomKilled bool
		want      string
	}{
		{"completed", false, 0, false, "Completed"},
		{"error", false, 1, false, "Error"},
		{"killed, not for memory", false, 137, false, "Error"},
		{"killed for memory", false, 137, true, "OOMKilled"},
		{"an OOM kill counts only for a kill's code", false, 1, true, "Error"},
		{"stopping wins over an error", true, 1, false, "Stopped"},
		{"stopping wins over a clean exit", true, 0, false, "Stopped"},
		{"stopping wins over an OOM kill", true, 137, true, "Stopped"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := exitReason(tc.stopping, tc.code, tc.oomKilled); got != tc.want {
				t.Errorf("exitReason(%v, %d, %v) = %q, want %q", tc.stopping, tc.code, tc.oomKilled, got, tc.want)
			}
		})
	}
}

func TestExitTime(t *testing.T) {
	now := time.Date(2026, 5, 6, 7, 8, 9, 0, time.UTC)
	at := time.Date(2026, 5, 6, 7, 0, 0, 0, time.FixedZone("CEST", 2*3600))
	for _, tc := range []struct {
		name string
		at   time.Time
		want time.Time
	}{
		{"reported, in UTC", at, at.UTC()},
		{"none reported", time.Time{}, now},
		{"the epoch of a shim that lost it", time.Unix(0, 0), now},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := exitTime(tc.at, now.In(time.Local))
			if !got.Equal(tc.want) || got.Location() != time.UTC {
				t.Errorf("exitTime(%s) = %s, want %s in UTC", tc.at, got, tc.want)
			}
		})
	}
}

func TestLastExit(t *testing.T) {
	t1 := time.Date(2026, 1, 1, 0, 0, 1, 0, time.UTC)
	t2 := t1.Add(time.Minute)
	fb := t1.Add(time.Hour)
	for _, tc := range []struct {
		name     string
		cs       []api.ContainerStatus
		fallback *time.Time
		want     time.Time
	}{
		{"the latest of the exits", []api.ContainerStatus{{FinishedAt: &t2}, {FinishedAt: &t1}, {}}, &fb, t2},
		{"none exited: the fallback", []api.ContainerStatus{{}, {}}, &fb, fb},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := lastExit(tc.cs, tc.fallback); !got.Equal(tc.want) {
				t.Errorf("lastExit = %s, want %s", got, tc.want)
			}
		})
	}
	// Neither: now.
	before := time.Now()
	if got := lastExit(nil, nil); got.Before(before) || got.After(time.Now()) {
		t.Errorf("lastExit(nil, nil) = %s, want now", got)
	}
}
