package integration

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/internal/testenv/harness"
)

// TestInitContainers runs instances with init containers on a real kanga
// up: they run in order, to completion, in the instance's sandbox (its
// emptyDir and network namespace) before the app container; a failure
// fails the instance under Never and is retried under OnFailure; a kill -9
// of kanga up while one runs neither runs a completed one again nor leaves
// the instance stuck.
func TestInitContainers(t *testing.T) {
	p := startPlatform(t)
	p.importImages()
	const busybox = "kanga.test/busybox"
	sh := func(name, script string) api.ContainerSpec {
		return api.ContainerSpec{Name: name, Image: busybox, Command: []string{"sh", "-c", script},
			VolumeMounts: []api.VolumeMount{{Name: "work", MountPath: "/work"}}}
	}
	// specFile writes the request that `kanga run -f` reads.
	specFile := func(name string, policy api.RestartPolicy, app api.ContainerSpec, inits ...api.ContainerSpec) string {
		t.Helper()
		req := api.CreateInstanceRequest{Name: name, Spec: api.InstanceSpec{
			Containers:     []api.ContainerSpec{app},
			InitContainers: inits,
			RestartPolicy:  policy,
			Volumes:        []api.Volume{{Name: "work", EmptyDir: &api.EmptyDirVolumeSource{}}},
		}}
		b, err := json.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		f := filepath.Join(t.TempDir(), name+".json")
		if err := os.WriteFile(f, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return f
	}
	phase := func(name string, want api.Phase) func() bool {
		return func() bool { return p.inspect(name).Status.Phase == want }
	}

	t.Run("OrderSharedVolumeAndNetns", func(t *testing.T) {
		f := specFile("init-order", api.RestartNever,
			sh("app", `cat /work/order; [ "$(readlink /proc/self/ns/net)" = "$(cat /work/netns)" ] && echo same-netns`),
			sh("first", `echo first >> /work/order; readlink /proc/self/ns/net > /work/netns; echo log-of-first`),
			sh("second", `[ "$(cat /work/order)" = first ] || exit 9; echo second >> /work/order; echo log-of-second`))
		p.must("run", "-d", "-f", f)
		p.eventually("init-order to succeed", 90*time.Second, phase("init-order", api.PhaseSucceeded))
		if out := p.must("logs", "init-order"); out != "first\nsecond\nsame-netns\n" {
			t.Errorf("the app container printed %q; want both init containers' lines in order and the same network namespace", out)
		}
		for _, c := range []string{"first", "second"} {
			if out := p.must("logs", "init-order", "-c", c); out != "log-of-"+c+"\n" {
				t.Errorf("logs -c %s = %q", c, out)
			}
		}
		inst := p.inspect("init-order")
		if len(inst.Status.InitContainers) != 2 {
			t.Fatalf("status.initContainers = %+v, want two", inst.Status.InitContainers)
		}
		for _, c := range inst.Status.InitContainers {
			if c.State != api.ContainerTerminated || c.ExitCode == nil || *c.ExitCode != 0 || c.Reason != "Completed" || c.RestartCount != 0 {
				t.Errorf("init container %s: %+v, want Completed with code 0 and no restart", c.Name, c)
			}
		}
		second, app := inst.Status.InitContainers[1], inst.Status.Containers[0]
		if app.StartedAt == nil || second.FinishedAt == nil || app.StartedAt.Before(*second.FinishedAt) {
			t.Errorf("the app container started at %v, before the last init container finished at %v", app.StartedAt, second.FinishedAt)
		}
		// A completed init container's task is deleted (its shim goes).
		if tasks := p.ctr("tasks", "ls"); strings.Contains(tasks, inst.UID+"-first") || strings.Contains(tasks, inst.UID+"-second") {
			t.Errorf("completed init containers still have tasks:\n%s", tasks)
		}
		p.must("rm", "init-order")
		// Teardown takes the init containers with the others.
		p.eventually("the containers of init-order to go", 60*time.Second, func() bool {
			return !strings.Contains(p.ctr("containers", "ls", "-q"), inst.UID)
		})
	})

	t.Run("RuntimeClasses", func(t *testing.T) {
		// Under every class the app container, started after an init
		// container in the same network namespace, still has the
		// instance's address (gVisor's netstack would take it with the
		// first sandbox: init containers count as containers of a
		// multi-container instance) and serves what the init container
		// wrote.
		offered := p.offered()
		for _, class := range []string{"runc", "crun", "gvisor"} {
			t.Run(class, func(t *testing.T) {
				if !offered[class] {
					t.Skipf("no host offers runtime class %s", class)
				}
				name := "init-" + class
				req := api.CreateInstanceRequest{Name: name, Spec: api.InstanceSpec{
					Runtime:        class,
					Containers:     []api.ContainerSpec{sh("web", "exec httpd -f -p 8080 -h /work")},
					InitContainers: []api.ContainerSpec{sh("page", "echo page-of-"+class+" > /work/index.html")},
					Volumes:        []api.Volume{{Name: "work", EmptyDir: &api.EmptyDirVolumeSource{}}},
				}}
				p.runSpec(req)
				inst := p.running(name)
				var got string
				p.eventually(name+" to serve", 60*time.Second, func() bool {
					resp, err := http.Get("http://" + net.JoinHostPort(inst.Status.IP, "8080") + "/index.html")
					if err != nil {
						return false
					}
					defer resp.Body.Close()
					b, _ := io.ReadAll(resp.Body)
					got = strings.TrimSpace(string(b))
					return resp.StatusCode == http.StatusOK
				})
				if got != "page-of-"+class {
					t.Errorf("%s served %q, want the page its init container wrote", name, got)
				}
				p.must("rm", "-f", name)
			})
		}
	})

	t.Run("FailureUnderNever", func(t *testing.T) {
		f := specFile("init-never", api.RestartNever, sh("app", "echo app-ran"), sh("fails", "echo failing; exit 3"))
		r := p.kanga("run", "-d", "-f", f)
		if r.code == 0 || !strings.Contains(r.stderr, "Init:Error") || !strings.Contains(r.stderr, "init container fails exited with code 3") {
			t.Errorf("run -d of an instance whose init container fails: exit %d, stderr %q; want a failure naming Init:Error, the container and its code", r.code, r.stderr)
		}
		p.eventually("init-never to fail", 60*time.Second, phase("init-never", api.PhaseFailed))
		inst := p.inspect("init-never")
		if inst.Status.Reason != "Init:Error" || !strings.Contains(inst.Status.Message, "fails") || !strings.Contains(inst.Status.Message, "code 3") {
			t.Errorf("reason %q message %q, want Init:Error naming the container and its exit code", inst.Status.Reason, inst.Status.Message)
		}
		if c := inst.Status.InitContainers[0]; c.ExitCode == nil || *c.ExitCode != 3 || c.RestartCount != 0 {
			t.Errorf("init container status %+v, want exit code 3 and no restart", c)
		}
		if c := inst.Status.Containers[0]; c.State != api.ContainerWaiting || c.StartedAt != nil {
			t.Errorf("the app container %+v started after its init container failed", c)
		}
		if out := p.must("logs", "init-never", "-c", "fails"); out != "failing\n" {
			t.Errorf("logs -c fails = %q", out)
		}
		if ps := p.must("ps", "-a"); !strings.Contains(ps, "Failed (Init:Error)") {
			t.Errorf("ps -a does not show Failed (Init:Error):\n%s", ps)
		}
		p.must("rm", "init-never")
	})

	t.Run("RetryUnderOnFailure", func(t *testing.T) {
		// Fails on its first run, succeeds on its second.
		f := specFile("init-retry", api.RestartOnFailure, sh("app", "cat /work/tries"),
			sh("flaky", `echo try >> /work/tries; [ "$(wc -l < /work/tries)" -ge 2 ]`))
		p.must("run", "-d", "-f", f)
		p.eventually("init-retry to succeed", 90*time.Second, phase("init-retry", api.PhaseSucceeded))
		inst := p.inspect("init-retry")
		if c := inst.Status.InitContainers[0]; c.RestartCount < 1 || c.ExitCode == nil || *c.ExitCode != 0 {
			t.Errorf("init container status %+v, want completed after at least one restart", c)
		}
		if out := p.must("logs", "init-retry"); out != "try\ntry\n" {
			t.Errorf("the app container printed %q; want the two tries of the init container", out)
		}
		backoff := false
		for _, e := range inst.Status.Events {
			backoff = backoff || (e.Reason == "BackOff" && strings.Contains(e.Message, "flaky"))
		}
		if !backoff {
			t.Errorf("no BackOff event for the init container: %+v", inst.Status.Events)
		}
		p.must("rm", "init-retry")
	})

	t.Run("RunAttached", func(t *testing.T) {
		// kanga run -f, attached: the init containers' output first, under
		// their names, then the app's; the app's exit code.
		f := specFile("init-attached", api.RestartNever, sh("app", "cat /work/msg; exit 4"), sh("setup", "echo prepared | tee /work/msg"))
		r := p.kanga("run", "--rm", "-f", f)
		if r.code != 4 || r.stdout != "setup | prepared\nprepared\n" {
			t.Errorf("run -f attached: exit %d, stdout %q, stderr %q; want 4 and the init container's line before the app's", r.code, r.stdout, r.stderr)
		}
		f = specFile("init-attached-fails", api.RestartNever, sh("app", "echo app-ran"), sh("setup", "echo cannot-prepare; exit 2"))
		r = p.kanga("run", "--rm", "-f", f)
		if r.code == 0 || r.stdout != "setup | cannot-prepare\n" || !strings.Contains(r.stderr, "Init:Error") {
			t.Errorf("run -f attached, failing init container: exit %d, stdout %q, stderr %q; want a failure with its output and Init:Error", r.code, r.stdout, r.stderr)
		}
	})

	t.Run("StopWhileInitializing", func(t *testing.T) {
		f := specFile("init-stop", api.RestartAlways, sh("app", "echo app-ran"),
			// Ends with 0 on SIGTERM: the stop, not a failure, must end
			// the instance, and next must not run.
			sh("forever", "trap 'exit 0' TERM; echo waiting; sleep 1000 & wait"), sh("next", "true"))
		go func() { _, _ = p.cli(3*time.Minute, nil, nil, "run", "-d", "-f", f) }()
		p.eventually("the first init container to run", 90*time.Second, func() bool {
			r := p.kanga("logs", "init-stop", "-c", "forever")
			return r.code == 0 && r.stdout == "waiting\n"
		})
		p.must("stop", "-t", "1", "init-stop")
		p.eventually("init-stop to end", 60*time.Second, func() bool { return p.inspect("init-stop").Status.Phase.Terminal() })
		inst := p.inspect("init-stop")
		if c := inst.Status.InitContainers[0]; c.ExitCode == nil || *c.ExitCode != 0 {
			t.Errorf("the stopped init container %+v, want it to have ended with its trap's 0", c)
		}
		if inst.Status.Phase != api.PhaseFailed || inst.Status.Containers[0].StartedAt != nil || inst.Status.InitContainers[1].StartedAt != nil {
			t.Errorf("stopped while initialising: %s, init %+v, app %+v; want Failed with nothing after the stopped init container started",
				inst.Status.Phase, inst.Status.InitContainers, inst.Status.Containers)
		}
		p.must("rm", "init-stop")
	})

	t.Run("AgentRestartWhileInitializing", func(t *testing.T) {
		// once completes at once; gate runs until the test lets it end.
		f := specFile("init-gate", api.RestartNever, sh("app", "cat /work/once /work/gate"),
			sh("once", "echo ran >> /work/once"),
			sh("gate", "echo ran >> /work/gate; until [ -f /work/go ]; do sleep 0.1; done"))
		// run -d waits for the app container, which waits for the gate.
		done := make(chan result, 1)
		go func() {
			r, _ := p.cli(3*time.Minute, nil, nil, "run", "-d", "-f", f)
			done <- r
		}()
		gateRuns := func() bool {
			var list api.InstanceList
			r := p.kanga("ps", "-a", "-o", "json")
			if json.Unmarshal([]byte(r.stdout), &list) != nil {
				return false
			}
			for _, i := range list.Items {
				if i.Name == "init-gate" && len(i.Status.InitContainers) == 2 && i.Status.InitContainers[1].State == api.ContainerRunning {
					return true
				}
			}
			return false
		}
		p.eventually("the gate init container to run", 90*time.Second, gateRuns)
		inst := p.inspect("init-gate")
		if inst.Status.Phase != api.PhaseCreating || inst.Status.Reason != "Init:1/2" {
			t.Errorf("while the second init container runs: %s %q, want Creating Init:1/2", inst.Status.Phase, inst.Status.Reason)
		}
		if c := inst.Status.Containers[0]; c.State != api.ContainerWaiting || c.Reason != "PodInitializing" {
			t.Errorf("app container %+v, want Waiting PodInitializing", c)
		}
		if ps := p.must("ps"); !strings.Contains(ps, "Init:1/2") {
			t.Errorf("ps does not show Init:1/2:\n%s", ps)
		}

		p.crash()
		p.start()
		p.eventually("the gate init container to be adopted", 90*time.Second, gateRuns)
		if log, _ := os.ReadFile(p.logPath); !strings.Contains(string(log), "adopted running container") || !strings.Contains(string(log), "container=gate") {
			t.Errorf("the restarted agent did not adopt the running init container:\n%s", harness.Tail(string(log), 4000))
		}
		p.must("exec", "-c", "gate", "init-gate", "touch", "/work/go")
		p.eventually("init-gate to succeed", 90*time.Second, phase("init-gate", api.PhaseSucceeded))
		if out := p.must("logs", "init-gate"); out != "ran\nran\n" {
			t.Errorf("the app container printed %q; want each init container to have run once", out)
		}
		inst = p.inspect("init-gate")
		for _, c := range inst.Status.InitContainers {
			if c.RestartCount != 0 || c.ExitCode == nil || *c.ExitCode != 0 {
				t.Errorf("init container %s after the restart: %+v, want completed once", c.Name, c)
			}
		}
		<-done // its wait ended with the crash, or with the instance
		p.must("rm", "init-gate")
	})
}

// TestWarmSkipsInitContainers: an instance with init containers never
// claims a warm container (whose process would start before them): it
// starts the usual way, init containers first, and the warm container
// stays ready for the next plain instance.
func TestWarmSkipsInitContainers(t *testing.T) {
	p := startWarmPlatform(t, "--warm-max", "1")
	p.importImages()
	// The first create of the image teaches the pool the key.
	p.must("run", "-d", "--name", "teach", "--runtime", "crun", "kanga.test/busybox", "sleep", "1000")
	p.running("teach")
	p.eventually("a warm container ready", 60*time.Second, func() bool { return p.warmReady() > 0 })

	// The instance fits a warm container (one container, the image and
	// class of the ready one, no volumes) but for its init container.
	p.runSpec(api.CreateInstanceRequest{Name: "with-init", Spec: api.InstanceSpec{
		Containers: []api.ContainerSpec{busybox("sleep", "1000")}, Runtime: "crun",
		InitContainers: []api.ContainerSpec{{Name: "setup", Image: "kanga.test/busybox", Command: []string{"true"}}},
	}})
	inst := p.running("with-init")
	if id := p.warmOf(inst.UID); id != "" {
		t.Fatalf("an instance with an init container claimed warm container %s", id)
	}
	if c := inst.Status.InitContainers[0]; c.ExitCode == nil || *c.ExitCode != 0 {
		t.Errorf("init container %+v, want completed", c)
	}
	if p.warmReady() == 0 {
		t.Error("the warm container is gone though no instance claimed it")
	}
	// The warm container still serves a plain instance.
	p.warmRun("plain", api.InstanceSpec{Containers: []api.ContainerSpec{busybox("sleep", "1000")}, Runtime: "crun"})
}
