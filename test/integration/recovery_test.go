package integration

import (
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kanga-run/kanga/api"
)

// TestUpKilledAndRestarted: SIGKILL of kanga up loses nothing. Running
// instances keep running and are re-adopted (same process, one task),
// finished ones are still listed, and new work runs afterwards.
func TestUpKilledAndRestarted(t *testing.T) {
	p := startPlatform(t)
	p.importImages()
	p.must("run", "-d", "--name", "survivor", "kanga.test/busybox", "sleep", "1000")
	p.must("run", "--name", "finished", "kanga.test/busybox", "true")
	before := p.summary()
	pid := p.inspect("survivor").Status.Containers[0].PID
	if pid == 0 {
		t.Fatal("running container reports no pid")
	}

	p.crash()
	if syscall.Kill(pid, 0) != nil {
		t.Fatal("the container died with kanga up")
	}
	p.start()

	after := p.summary()
	if after != before {
		t.Fatalf("ps -a changed across the restart:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	inst := p.inspect("survivor")
	if inst.Status.Phase != api.PhaseRunning || inst.Status.Containers[0].PID != pid || inst.Status.Containers[0].RestartCount != 0 {
		t.Fatalf("survivor after restart: phase %s pid %d (was %d) restarts %d",
			inst.Status.Phase, inst.Status.Containers[0].PID, pid, inst.Status.Containers[0].RestartCount)
	}
	if n := strings.Count(p.ctr("tasks", "ls"), inst.UID); n != 1 {
		t.Fatalf("%d tasks for the survivor after restart, want exactly 1", n)
	}
	// The adopted container is still under control: exec, stop, remove.
	if out := p.must("exec", "survivor", "echo", "adopted"); out != "adopted\n" {
		t.Fatalf("exec after adoption: %q", out)
	}
	p.must("rm", "-f", "survivor")
	if syscall.Kill(pid, 0) == nil {
		t.Fatal("rm -f after adoption left the process running")
	}
	r := p.kanga("run", "--rm", "kanga.test/busybox", "echo", "fresh")
	if r.code != 0 || r.stdout != "fresh\n" {
		t.Fatalf("run after restart: %d %q %q", r.code, r.stdout, r.stderr)
	}

	// A graceful stop keeps instances too.
	p.must("run", "-d", "--name", "survivor2", "kanga.test/busybox", "sleep", "1000")
	pid = p.inspect("survivor2").Status.Containers[0].PID
	p.stop()
	p.start()
	if inst := p.inspect("survivor2"); inst.Status.Phase != api.PhaseRunning || inst.Status.Containers[0].PID != pid {
		t.Fatalf("after a graceful restart: phase %s pid %d, want Running pid %d", inst.Status.Phase, inst.Status.Containers[0].PID, pid)
	}
}

// TestContainerdKilled: containerd dies under the agent; the agent
// restarts it, instances keep running, and the platform keeps working.
func TestContainerdKilled(t *testing.T) {
	p := startPlatform(t)
	p.importImages()
	p.must("run", "-d", "--name", "steady", "kanga.test/busybox", "sleep", "1000")
	pid := p.inspect("steady").Status.Containers[0].PID
	old := p.containerdPID()
	if old == 0 {
		t.Fatal("no containerd pid")
	}
	_ = syscall.Kill(old, syscall.SIGKILL)
	p.eventually("containerd to be restarted", 60*time.Second, func() bool {
		n := p.containerdPID()
		return n != 0 && n != old
	})
	if syscall.Kill(pid, 0) != nil {
		t.Fatal("the container died with containerd")
	}
	p.eventually("exec to work again", 30*time.Second, func() bool {
		return p.kanga("exec", "steady", "true").code == 0
	})
	if inst := p.inspect("steady"); inst.Status.Phase != api.PhaseRunning || inst.Status.Containers[0].RestartCount != 0 {
		t.Fatalf("steady after containerd restart: %s restarts %d", inst.Status.Phase, inst.Status.Containers[0].RestartCount)
	}
	// Exits are still seen after the restart.
	p.must("stop", "-t", "1", "steady")
	if r := p.kanga("run", "--rm", "kanga.test/busybox", "sh", "-c", "exit 4"); r.code != 4 {
		t.Fatalf("run after containerd restart exited %d, want 4: %s", r.code, r.stderr)
	}
}
