package integration

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/kanga-run/kanga/api"
)

// TestLifecycleHooks runs postStart and preStop hooks on the real stack:
// exec in the container, an HTTP GET to another instance from inside the
// instance's network, a sleep cut short by the stop's grace period, and a
// failing postStart that stops the container.
func TestLifecycleHooks(t *testing.T) {
	p := startPlatform(t)
	p.importImages()

	// An HTTP server that logs the path of each request it gets (and
	// answers 404, which is a hook's success as any response is).
	p.runSpec(api.CreateInstanceRequest{Name: "hook-target", Spec: api.InstanceSpec{Containers: []api.ContainerSpec{{
		Name: "echo", Image: "kanga.test/busybox",
		Command: []string{"httpd", "-f", "-vv", "-p", "8080", "-h", "/tmp"},
	}}}})
	var target api.Instance
	p.eventually("hook-target to run", 60*time.Second, func() bool {
		target = p.inspect("hook-target")
		return target.Status.Phase == api.PhaseRunning && target.Status.IP != ""
	})

	t.Run("PostStart", func(t *testing.T) {
		p.runSpec(api.CreateInstanceRequest{Name: "hooked", Spec: api.InstanceSpec{Containers: []api.ContainerSpec{
			{
				Name: "exec", Image: "kanga.test/busybox", Command: []string{"sleep", "1000"},
				Lifecycle: &api.Lifecycle{PostStart: &api.LifecycleHandler{Exec: &api.ExecAction{
					Command: []string{"sh", "-c", "echo from-poststart > /tmp/hook"},
				}}},
			},
			{
				Name: "http", Image: "kanga.test/busybox", Command: []string{"sleep", "1000"},
				Lifecycle: &api.Lifecycle{PostStart: &api.LifecycleHandler{HTTPGet: &api.HTTPGetAction{
					Host: target.Status.IP, Port: 8080, Path: "/echo-poststart?msg=1",
				}}},
			},
		}}})
		var inst api.Instance
		p.eventually("hooked to be Ready", 60*time.Second, func() bool {
			inst = p.inspect("hooked")
			return readyCond(inst).Status == api.ConditionTrue
		})
		if got := strings.TrimSpace(p.must("exec", "-c", "exec", "hooked", "cat", "/tmp/hook")); got != "from-poststart" {
			t.Errorf("the exec hook's file holds %q, want from-poststart", got)
		}
		p.eventually("the target to log the hook's request", 30*time.Second, func() bool {
			return strings.Contains(p.must("logs", "hook-target"), "url:/echo-poststart")
		})
		if hasEvent(inst, "FailedPostStartHook") {
			t.Errorf("a hook failed: %+v", inst.Status.Events)
		}
		for _, c := range inst.Status.Containers {
			if c.RestartCount != 0 {
				t.Errorf("container %s restarted: %+v", c.Name, c)
			}
		}
		p.must("rm", "-f", "hooked")
	})

	t.Run("FailedPostStart", func(t *testing.T) {
		grace := int64(1)
		p.runSpec(api.CreateInstanceRequest{Name: "badhook", Spec: api.InstanceSpec{
			RestartPolicy:                 api.RestartNever,
			TerminationGracePeriodSeconds: &grace,
			Containers: []api.ContainerSpec{{
				Name: "app", Image: "kanga.test/busybox", Command: []string{"sleep", "1000"},
				Lifecycle: &api.Lifecycle{PostStart: &api.LifecycleHandler{Exec: &api.ExecAction{
					Command: []string{"sh", "-c", "echo no-config >&2; exit 3"},
				}}},
			}},
		}})
		var inst api.Instance
		p.eventually("badhook to end", 90*time.Second, func() bool {
			inst = p.inspect("badhook")
			return inst.Status.Phase.Terminal()
		})
		if inst.Status.Phase != api.PhaseFailed {
			t.Errorf("phase %s, want Failed (sleep was killed)", inst.Status.Phase)
		}
		if !hasEvent(inst, "FailedPostStartHook", "exited with code 3", "no-config") {
			t.Errorf("no FailedPostStartHook event with the hook's exit and output: %+v", inst.Status.Events)
		}
		// sleep, PID 1, ignores SIGTERM: SIGKILL after the spec's grace.
		if !hasEvent(inst, "Killing", "postStart", "SIGKILL in 1s") {
			t.Errorf("no Killing event: %+v", inst.Status.Events)
		}
		p.must("rm", "-f", "badhook")
	})

	t.Run("PreStopBeforeStopSignal", func(t *testing.T) {
		p.runSpec(api.CreateInstanceRequest{Name: "graceful", Spec: api.InstanceSpec{Containers: []api.ContainerSpec{{
			Name: "app", Image: "kanga.test/busybox",
			Command: []string{"sh", "-c", `trap 'echo got-term; exit 0' TERM; echo up; while true; do sleep 0.2; done`},
			Lifecycle: &api.Lifecycle{PreStop: &api.LifecycleHandler{Exec: &api.ExecAction{
				// Into the container's log, through PID 1's stdout.
				Command: []string{"sh", "-c", "echo prestop-ran > /proc/1/fd/1"},
			}}},
		}}}})
		p.eventually("graceful to log up", 60*time.Second, func() bool {
			return strings.Contains(p.must("logs", "graceful"), "up")
		})
		p.must("stop", "-t", "30", "graceful")
		inst := p.inspect("graceful")
		if c := inst.Status.Containers[0]; c.State != api.ContainerTerminated || c.ExitCode == nil || *c.ExitCode != 0 {
			t.Errorf("container after stop: %+v, want terminated with the trap's exit 0", c)
		}
		logs := p.must("logs", "graceful")
		pre, term := strings.Index(logs, "prestop-ran"), strings.Index(logs, "got-term")
		if pre < 0 || term < 0 || pre > term {
			t.Errorf("logs %q: want prestop-ran before got-term", logs)
		}
		p.must("rm", "-f", "graceful")
	})

	t.Run("PreStopBoundedByGrace", func(t *testing.T) {
		p.runSpec(api.CreateInstanceRequest{Name: "sleepy", Spec: api.InstanceSpec{Containers: []api.ContainerSpec{
			{
				Name: "app", Image: "kanga.test/busybox",
				Command:   []string{"sh", "-c", `trap 'echo got-term; exit 0' TERM; while true; do sleep 0.2; done`},
				Lifecycle: &api.Lifecycle{PreStop: &api.LifecycleHandler{Sleep: &api.SleepAction{Seconds: 600}}},
			},
			{
				Name: "http", Image: "kanga.test/busybox", Command: []string{"sleep", "1000"},
				Lifecycle: &api.Lifecycle{PreStop: &api.LifecycleHandler{HTTPGet: &api.HTTPGetAction{
					Host: target.Status.IP, Port: 8080, Path: "/echo-prestop?msg=1",
				}}},
			},
		}}})
		p.eventually("sleepy to run", 60*time.Second, func() bool {
			return p.inspect("sleepy").Status.Phase == api.PhaseRunning
		})
		// The 600 s sleep is cut at the 3 s grace: the stop returns, with
		// the containers ended, within the CLI's 2 minute bound.
		p.must("stop", "-t", "3", "sleepy")
		inst := p.inspect("sleepy")
		for _, c := range inst.Status.Containers {
			if c.State != api.ContainerTerminated {
				t.Errorf("container %s after stop: %+v", c.Name, c)
			}
		}
		// After its hook, the app still got its stop signal.
		if logs := p.must("logs", "-c", "app", "sleepy"); !strings.Contains(logs, "got-term") {
			t.Errorf("app's logs %q: no got-term, the stop signal did not follow the hook", logs)
		}
		p.eventually("the target to log the preStop request", 30*time.Second, func() bool {
			return strings.Contains(p.must("logs", "hook-target"), "url:/echo-prestop")
		})
		p.must("rm", "-f", "sleepy")
	})

	// A hook is sent from inside the instance's network: it reaches what
	// the instance could, so never another tenant's instance.
	t.Run("NoCrossTenantHook", func(t *testing.T) {
		tok := strings.TrimSpace(p.must("tenant", "create", "hook-other"))
		defer p.kanga("tenant", "rm", "hook-other")
		if r := p.asTenant(tok, "image", "import", p.imagePath("busybox.tar")); r.code != 0 {
			t.Fatalf("import: %s", r.stderr)
		}
		if r := p.asTenant(tok, "run", "-d", "--name", "victim", "kanga.test/busybox", "httpd", "-f", "-vv", "-p", "8080", "-h", "/tmp"); r.code != 0 {
			t.Fatalf("run victim: %s", r.stderr)
		}
		defer p.asTenant(tok, "rm", "-f", "victim")
		var victimIP string
		p.eventually("the other tenant's instance to run", 60*time.Second, func() bool {
			r := p.asTenant(tok, "inspect", "victim")
			var insts []api.Instance
			if r.code != 0 || json.Unmarshal([]byte(r.stdout), &insts) != nil || len(insts) != 1 {
				return false
			}
			victimIP = insts[0].Status.IP
			return insts[0].Status.Phase == api.PhaseRunning && victimIP != ""
		})
		p.runSpec(api.CreateInstanceRequest{Name: "crosser", Spec: api.InstanceSpec{
			RestartPolicy: api.RestartNever,
			Containers: []api.ContainerSpec{{
				Name: "app", Image: "kanga.test/busybox", Command: []string{"sleep", "1000"},
				Lifecycle: &api.Lifecycle{PostStart: &api.LifecycleHandler{HTTPGet: &api.HTTPGetAction{
					Host: victimIP, Port: 8080, Path: "/cross-tenant",
				}}},
			}},
		}})
		var inst api.Instance
		p.eventually("the cross-tenant hook to fail", 4*time.Minute, func() bool {
			inst = p.inspect("crosser")
			return hasEvent(inst, "FailedPostStartHook")
		})
		if readyCond(inst).Status == api.ConditionTrue {
			t.Errorf("crosser is Ready after its hook failed")
		}
		if r := p.asTenant(tok, "logs", "victim"); strings.Contains(r.stdout+r.stderr, "url:/cross-tenant") {
			t.Errorf("the other tenant's instance got the hook's request:\n%s", r.stdout+r.stderr)
		}
		p.must("rm", "-f", "crosser")
	})

	t.Run("BadHooksRefused", func(t *testing.T) {
		r := p.kangaIn([]byte(`{"name":"evil","spec":{"containers":[{"image":"kanga.test/busybox","lifecycle":{"postStart":{"httpGet":{"host":"metadata.google.internal","port":80}}}}]}}`), "run", "-f", "-")
		if r.code == 0 || !strings.Contains(r.stderr, "spec.containers[0].lifecycle.postStart.httpGet.host") {
			t.Errorf("a hook to a host name: exit %d, %s; want a 400 naming the field", r.code, r.stderr)
		}
	})
	p.must("rm", "-f", "hook-target")
}
