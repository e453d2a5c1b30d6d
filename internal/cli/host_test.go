package cli

import (
	"strings"
	"testing"

	"github.com/kanga-run/kanga/api"
)

func TestWriteHosts(t *testing.T) {
	var b strings.Builder
	err := writeHosts(&b, []api.Host{
		{Name: "h1", Labels: map[string]string{"zone": "a", "disk": "ssd"}, Cordoned: true, RuntimeClasses: []string{"runc", "crun"},
			Capacity: api.HostCapacity{CPUs: 8, MemoryBytes: 16 << 30, StartSlots: 5}, Status: api.HostStatus{Phase: api.HostReady},
			Images: []api.HostImage{{Tenant: "t", Name: "a:1", Hot: true, Starts: 3}, {Tenant: "t", Name: "b:1"}}},
		{Name: "h2", Capacity: api.HostCapacity{CPUs: 2, MemoryBytes: 1 << 30}, Status: api.HostStatus{Phase: api.HostNotReady}},
		{Name: "h3", Capacity: api.HostCapacity{CPUs: 2, MemoryBytes: 1 << 30}, Status: api.HostStatus{Phase: api.HostNotReady, Condition: api.HostLeaseLapsed}},
	})
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(lines) != 4 {
		t.Fatalf("output:\n%s", b.String())
	}
	for i, want := range [][]string{
		{"NAME", "STATUS", "CPUS", "MEMORY", "START SLOTS", "RUNTIMES", "LABELS", "IMAGES"},
		{"h1", "Ready,Cordoned", "8", " 5 ", "runc,crun", "disk=ssd,zone=a", "2 (1 hot)"},
		// An agent that does not report its slots has twice its cores.
		{"h2", "NotReady ", "2", " 4 ", "<none>", "<none>", "0 (0 hot)"},
		{"h3", "NotReady,LeaseLapsed", "2", " 4 "},
	} {
		for _, w := range want {
			if !strings.Contains(lines[i], w) {
				t.Errorf("line %d %q lacks %q", i, lines[i], w)
			}
		}
	}
}

func TestWriteDrain(t *testing.T) {
	var b strings.Builder
	writeDrain(&b, api.DrainReport{Host: "h1", Moved: []string{"acme/web"},
		Remaining: []api.DrainRemaining{{Instance: "acme/job", Reason: "restart policy Never"}}})
	want := "h1 cordoned; 1 instances moved, 1 stay\n  moved   acme/web\n  stays   acme/job: restart policy Never\n"
	if b.String() != want {
		t.Fatalf("drain output %q, want %q", b.String(), want)
	}
}
