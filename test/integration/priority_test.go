package integration

import (
	"os"
	"strconv"
	"strings"
	"testing"
)

// statNice is the nice value (field 19) of a /proc/<pid>/stat line.
func statNice(t *testing.T, stat string) int {
	t.Helper()
	// The command name (field 2) may hold spaces; fields after it are
	// counted from its closing parenthesis.
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		t.Fatalf("not a stat line: %q", stat)
	}
	f := strings.Fields(stat[i+1:])
	if len(f) < 17 {
		t.Fatalf("short stat line: %q", stat)
	}
	n, err := strconv.Atoi(f[16])
	if err != nil {
		t.Fatalf("nice field of %q: %v", stat, err)
	}
	return n
}

// kanga up runs at a raised CPU priority (--nice, -5 by default), which
// containerd and its shims inherit; an instance's processes must not: they
// run at the kernel's default, nice 0.
func TestInstanceRunsAtDefaultNice(t *testing.T) {
	p := startPlatform(t)
	p.importImages()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(p.Pid()) + "/stat")
	if err != nil {
		t.Fatal(err)
	}
	if n := statNice(t, string(b)); n != -5 {
		t.Fatalf("kanga up runs at nice %d, want -5 (the default of --nice)", n)
	}
	p.must("run", "-d", "--name", "nice", "kanga.test/busybox:latest", "sh", "-c", "sleep 3600 & wait")
	for _, pid := range []string{"1", "$(pidof sleep)"} {
		out := p.must("exec", "nice", "sh", "-c", "cat /proc/"+pid+"/stat")
		if n := statNice(t, out); n != 0 {
			t.Errorf("the instance's process %s runs at nice %d, want 0: %s", pid, n, out)
		}
	}
}
