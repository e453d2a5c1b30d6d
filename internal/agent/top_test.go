package agent

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

func TestParseStat(t *testing.T) {
	// comm may hold spaces and parentheses: fields split after the last ')'.
	line := "42 (a) (b c) S 7 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0 1234 4096000 300 18446744073709551615\n"
	p, ppid, err := parseStat([]byte(line))
	if err != nil {
		t.Fatal(err)
	}
	want := int64(300 * os.Getpagesize())
	if p.State != "S" || ppid != 7 || p.CPUMillis != 3000 || p.RSSBytes != want || !slices.Equal(p.Command, []string{"a) (b c"}) {
		t.Errorf("parseStat = %+v, ppid %d", p, ppid)
	}
	for _, bad := range []string{"", "42 no-comm S 1", "42 (x) S"} {
		if _, _, err := parseStat([]byte(bad)); err == nil {
			t.Errorf("parseStat(%q) did not fail", bad)
		}
	}
}

func TestInCgroup(t *testing.T) {
	text := []byte("12:pids:/kanga/t/uid1/web\n4:memory,foo:/kanga/t/uid1/web\n0::/\n")
	for _, tt := range []struct {
		controller, cg string
		want           bool
	}{
		{"pids", "/kanga/t/uid1/web", true},
		{"memory", "/kanga/t/uid1/web", true},
		// Another instance's container of the same name, a parent, a
		// controller the text lacks.
		{"pids", "/kanga/t/uid2/web", false},
		{"pids", "/kanga/t/uid1", false},
		{"cpu", "/kanga/t/uid1/web", false},
	} {
		if got := inCgroup(text, tt.controller, tt.cg); got != tt.want {
			t.Errorf("inCgroup(%s, %s) = %v, want %v", tt.controller, tt.cg, got, tt.want)
		}
	}
}

func TestMapID(t *testing.T) {
	m := []byte("         0     100000      65536\n")
	for _, tt := range []struct{ host, want uint32 }{{100000, 0}, {101000, 1000}, {0, 65534}, {165536, 65534}} {
		if got := mapID(m, tt.host); got != tt.want {
			t.Errorf("mapID(%d) = %d, want %d", tt.host, got, tt.want)
		}
	}
	if got := mapID([]byte("0 0 4294967295\n"), 1000); got != 1000 {
		t.Errorf("identity map: %d", got)
	}
}

// TestCgroupProcesses lists this test's own process through a cgroup.procs
// file that names it, with the real /proc.
func TestCgroupProcesses(t *testing.T) {
	self, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		t.Skip(err)
	}
	var cg string
	for _, l := range strings.Split(string(self), "\n") {
		if parts := strings.SplitN(l, ":", 3); len(parts) == 3 && slices.Contains(strings.Split(parts[1], ","), "pids") {
			cg = parts[2]
		}
	}
	if cg == "" {
		t.Skip("no v1 pids hierarchy")
	}
	hier := t.TempDir()
	list := func(cg string, pids string) {
		dir := filepath.Join(hier, cg)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(pids), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	pid := os.Getpid()
	list(cg, strconv.Itoa(pid)+"\n999999999\n")
	procs, err := cgroupProcesses("/proc", hier, cg)
	if err != nil {
		t.Fatal(err)
	}
	// The pid that does not exist is left out.
	if len(procs) != 1 {
		t.Fatalf("procs = %+v, want this process only", procs)
	}
	p := procs[0]
	if !strings.HasSuffix(p.Command[0], filepath.Base(os.Args[0])) || p.UID != uint32(os.Geteuid()) || p.RSSBytes == 0 || p.State == "" {
		t.Errorf("process = %+v; want this test binary run by uid %d", p, os.Geteuid())
	}
	// Its parent (go test) is outside the listed set: 0.
	if p.PPID != 0 {
		t.Errorf("PPID = %d, want 0 for a parent outside the cgroup", p.PPID)
	}
	// A pid listed under a cgroup it is not in is never read: the case of
	// a pid reused by another cgroup's process.
	other := "/kanga-test-not-ours"
	list(other, strconv.Itoa(pid)+"\n")
	if procs, err := cgroupProcesses("/proc", hier, other); err != nil || len(procs) != 0 {
		t.Errorf("a process of another cgroup was listed: %+v, %v", procs, err)
	}
	// A cgroup that does not exist (a container not started).
	if _, err := cgroupProcesses("/proc", hier, "/nowhere"); !os.IsNotExist(err) {
		t.Errorf("missing cgroup: %v, want not-exist", err)
	}
}
