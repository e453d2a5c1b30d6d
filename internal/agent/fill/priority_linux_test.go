package fill

import (
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

// niceOf reads the nice value (field 19 of /proc/PID/stat) a process
// started here sees for itself.
func niceOf(t *testing.T) int {
	t.Helper()
	out, err := exec.Command("cat", "/proc/self/stat").Output()
	if err != nil {
		t.Fatal(err)
	}
	s := string(out)
	// The command name is in parentheses and may hold spaces.
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	n, err := strconv.Atoi(fields[16]) // field 19 overall
	if err != nil {
		t.Fatalf("parsing %q: %v", s, err)
	}
	return n
}

// TestLowPriorityReachesChildren: processes started inside LowPriority run
// at fillNice, and the priority does not leak to processes started after.
func TestLowPriorityReachesChildren(t *testing.T) {
	before := niceOf(t)
	if before >= fillNice {
		t.Skipf("the test already runs at nice %d", before)
	}
	var inside int
	LowPriority(func() { inside = niceOf(t) })
	if inside != fillNice {
		t.Errorf("child inside LowPriority runs at nice %d, want %d", inside, fillNice)
	}
	for i := 0; i < 20; i++ { // on whatever threads the runtime picks
		if after := niceOf(t); after != before {
			t.Fatalf("child after LowPriority runs at nice %d, want %d as before", after, before)
		}
	}
}
