package integration

import (
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kanga-run/kanga/api"
)

// TestHostCordonDrain: on kanga up's own host, a cordon keeps new
// instances Pending with the scheduler's reason, a drain re-creates the
// restartable instance (new UID) and the agent stops the old copy, and an
// uncordon lets both run.
func TestHostCordonDrain(t *testing.T) {
	p := startPlatform(t)
	p.importImages()
	p.must("run", "-d", "--restart", "always", "--name", "web", "kanga.test/busybox", "sleep", "1000")
	web := p.inspect("web")
	host, pid := web.Status.Host, web.Status.Containers[0].PID
	if host == "" || pid == 0 {
		t.Fatalf("web: host %q pid %d", host, pid)
	}
	if ls := p.must("host", "ls"); !strings.Contains(ls, host) || !strings.Contains(ls, "Ready") {
		t.Fatalf("kanga host ls:\n%s", ls)
	}

	p.must("host", "cordon", host)
	if ls := p.must("host", "ls"); !strings.Contains(ls, "Ready,Cordoned") {
		t.Fatalf("kanga host ls after cordon:\n%s", ls)
	}
	r := p.kanga("run", "-d", "--name", "waiting", "kanga.test/busybox", "true")
	w := p.inspect("waiting")
	if w.Status.Phase != api.PhasePending || w.Status.Host != "" || w.Status.Reason != "Unschedulable" ||
		w.Status.Message != "0/1 hosts available: 1 cordoned." {
		t.Fatalf("instance created on a cordoned host (run exit %d, %q): %+v", r.code, r.stderr, w.Status)
	}

	out := p.must("host", "drain", host)
	if !strings.Contains(out, "moved   default/web") {
		t.Fatalf("kanga host drain:\n%s", out)
	}
	moved := p.inspect("web")
	if moved.UID == web.UID || moved.Status.Host != "" || moved.Status.Phase != api.PhasePending {
		t.Fatalf("drained web: uid %s (was %s) host %q phase %s", moved.UID, web.UID, moved.Status.Host, moved.Status.Phase)
	}
	p.eventually("the agent to stop the drained copy", 30*time.Second, func() bool {
		return syscall.Kill(pid, 0) != nil && !strings.Contains(p.ctr("tasks", "ls"), web.UID)
	})

	p.must("host", "uncordon", host)
	p.eventually("web to run again and waiting to finish", 60*time.Second, func() bool {
		return p.inspect("web").Status.Phase == api.PhaseRunning && p.inspect("waiting").Status.Phase == api.PhaseSucceeded
	})
	again := p.inspect("web")
	if again.UID != moved.UID || again.Status.Containers[0].PID == pid {
		t.Fatalf("web after uncordon: uid %s pid %d; want uid %s and a new process", again.UID, again.Status.Containers[0].PID, moved.UID)
	}
	tasks := p.ctr("tasks", "ls")
	if strings.Count(tasks, moved.UID) != 1 || strings.Contains(tasks, web.UID) {
		t.Fatalf("tasks after the drain, want one of %s and none of %s:\n%s", moved.UID, web.UID, tasks)
	}
}
