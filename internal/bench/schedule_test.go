package bench

import "testing"

// TestScheduleSmall runs `kanga bench schedule` at a size a test affords:
// simulated hosts over the real link, every instance placed and reported
// Running.
func TestScheduleSmall(t *testing.T) {
	rep, err := Schedule(t.Context(), ScheduleConfig{Hosts: 3, HostCPUs: 8, Instances: 12, CPU: 1, Concurrency: 4,
		DataDir: t.TempDir()})
	if err != nil {
		t.Fatalf("Schedule: %v (%+v)", err, rep)
	}
	if rep.Unplaced != 0 || rep.RunningDone <= 0 || rep.PlacedDone <= 0 {
		t.Fatalf("report %+v: want every instance placed and Running", rep)
	}
}
