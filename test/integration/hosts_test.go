package integration

import (
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

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

// TestHostLostAndBack: kanga up's host loses its lease while its agent
// lives on (as behind a network partition). Its restartable instance is
// re-created on the other host of the pool, a simulated one, and the real
// agent, finding the instance assigned elsewhere, stops its copy: no
// duplicate keeps running. Its finished instance stays as it was, and the
// host becomes Ready again with its next lease. kanga up keeps its own
// host while the process lives (TestUpLeaseLapseKeepsInstances), so the
// partition is played with the failure detector's safeguards off, as a
// cluster's leader treats a host that no longer answers.
func TestHostLostAndBack(t *testing.T) {
	p := startPlatformWith(t, "--pool-max", "0", "--failure-safeguards=false")
	p.importImages()
	p.must("run", "-d", "--restart", "always", "--name", "web", "kanga.test/busybox", "sleep", "1000")
	p.must("run", "--name", "done", "kanga.test/busybox", "true")
	web := p.inspect("web")
	host, pid := web.Status.Host, web.Status.Containers[0].PID

	// A second, simulated host joins through kanga up's own etcd.
	endpoints := []string{"unix://" + filepath.Join(p.dataDir, "etcd.sock")}
	startSimHost(t, endpoints, 8)
	// The real host is cordoned so that the re-created instance can only
	// land on the simulated one.
	p.must("host", "cordon", host)

	// Revoke the host's lease behind its back.
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	resp, err := cli.Get(t.Context(), "/kanga/hostleases/"+host)
	if err != nil || len(resp.Kvs) != 1 || resp.Kvs[0].Lease == 0 {
		t.Fatalf("lease key of %s: %+v, %v", host, resp, err)
	}
	if _, err := cli.Revoke(t.Context(), clientv3.LeaseID(resp.Kvs[0].Lease)); err != nil {
		t.Fatal(err)
	}

	p.eventually("web to run on the simulated host", 30*time.Second, func() bool {
		w := p.inspect("web")
		return w.Status.Host == "fake" && w.Status.Phase == api.PhaseRunning
	})
	moved := p.inspect("web")
	if moved.UID == web.UID {
		t.Fatalf("re-created web kept its UID %s", web.UID)
	}
	p.eventually("the real agent to stop its copy of web", 30*time.Second, func() bool {
		return syscall.Kill(pid, 0) != nil && !strings.Contains(p.ctr("tasks", "ls"), web.UID)
	})
	if d := p.inspect("done"); d.Status.Phase != api.PhaseSucceeded || d.Status.Host != host {
		t.Fatalf("finished instance after the host was lost: %s on %q", d.Status.Phase, d.Status.Host)
	}
	p.eventually("the host to be Ready again", 30*time.Second, func() bool {
		return strings.Contains(p.must("host", "ls"), "Ready,Cordoned")
	})
	// Removed while the simulated host still answers.
	p.must("rm", "-f", "web")
}
