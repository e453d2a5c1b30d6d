package integration

import (
	"strings"
	"testing"
	"time"

	"github.com/kanga-run/kanga/api"
)

// readyCond is the instance's Ready condition, or a zero one.
func readyCond(inst api.Instance) api.InstanceCondition {
	for _, c := range inst.Status.Conditions {
		if c.Type == api.InstanceReady {
			return c
		}
	}
	return api.InstanceCondition{}
}

// hasEvent tells whether inst has an event of reason whose message holds
// every one of subs.
func hasEvent(inst api.Instance, reason string, subs ...string) bool {
	for _, e := range inst.Status.Events {
		if e.Reason != reason {
			continue
		}
		ok := true
		for _, s := range subs {
			ok = ok && strings.Contains(e.Message, s)
		}
		if ok {
			return true
		}
	}
	return false
}

// TestProbes runs probes on real containers: an httpGet readiness probe
// makes an httpd instance Ready, one on a port nobody serves keeps it not
// ready; an exec liveness probe that starts failing gets the container
// restarted, also after the agent restarted and adopted it; the CLI's
// docker-style health flags make an exec liveness probe.
func TestProbes(t *testing.T) {
	p := startPlatform(t)
	p.importImages()

	t.Run("HTTPReadiness", func(t *testing.T) {
		p.runSpec(api.CreateInstanceRequest{Name: "web-ready", Spec: api.InstanceSpec{Containers: []api.ContainerSpec{{
			Name: "web", Image: "kanga.test/httpd",
			ReadinessProbe: &api.Probe{HTTPGet: &api.HTTPGetAction{Path: "/", Port: 80}, PeriodSeconds: 1},
			LivenessProbe:  &api.Probe{TCPSocket: &api.TCPSocketAction{Port: 80}, PeriodSeconds: 1},
		}}}})
		p.runSpec(api.CreateInstanceRequest{Name: "web-unready", Spec: api.InstanceSpec{Containers: []api.ContainerSpec{{
			Name: "web", Image: "kanga.test/httpd",
			ReadinessProbe: &api.Probe{HTTPGet: &api.HTTPGetAction{Path: "/", Port: 81}, PeriodSeconds: 1, FailureThreshold: 2},
		}}}})
		// Without probes, a running container is ready.
		p.must("run", "-d", "--name", "plain", "kanga.test/busybox", "sleep", "1000")
		var inst api.Instance
		p.eventually("plain to be Ready", 60*time.Second, func() bool {
			inst = p.inspect("plain")
			return readyCond(inst).Status == api.ConditionTrue
		})
		if c := inst.Status.Containers[0]; !c.Ready {
			t.Errorf("plain's container is not ready: %+v", c)
		}
		p.eventually("web-ready to be Ready", 60*time.Second, func() bool {
			inst = p.inspect("web-ready")
			return readyCond(inst).Status == api.ConditionTrue
		})
		if c := inst.Status.Containers[0]; !c.Ready || c.State != api.ContainerRunning {
			t.Errorf("web-ready's container: %+v, want running and ready", c)
		}
		p.eventually("web-unready to report its failing readiness probe", 60*time.Second, func() bool {
			inst = p.inspect("web-unready")
			return hasEvent(inst, "Unhealthy", "Readiness probe", "port 81")
		})
		if c := readyCond(inst); c.Status != api.ConditionFalse || c.Reason != "ContainersNotReady" {
			t.Errorf("web-unready's Ready condition: %+v, want False, ContainersNotReady", c)
		}
		if c := inst.Status.Containers[0]; c.Ready || c.State != api.ContainerRunning {
			t.Errorf("web-unready's container: %+v, want running and not ready", c)
		}
		// The tcpSocket liveness probe of web-ready passes: no restart.
		if inst := p.inspect("web-ready"); inst.Status.Containers[0].RestartCount != 0 || hasEvent(inst, "Unhealthy") {
			t.Errorf("web-ready was found unhealthy: %+v", inst.Status)
		}
		p.must("rm", "-f", "web-ready", "web-unready", "plain")
	})

	t.Run("ExecLivenessRestarts", func(t *testing.T) {
		p.runSpec(api.CreateInstanceRequest{Name: "live", Spec: api.InstanceSpec{
			RestartPolicy: api.RestartAlways,
			Containers: []api.ContainerSpec{{
				Name: "app", Image: "kanga.test/busybox",
				Command: []string{"sh", "-c", "touch /tmp/ok; exec sleep 1000"},
				// A timeout well above what an exec takes on a busy host:
				// the failure must be the command's.
				LivenessProbe: &api.Probe{Exec: &api.ExecAction{Command: []string{"test", "-f", "/tmp/ok"}},
					PeriodSeconds: 1, TimeoutSeconds: 20, FailureThreshold: 2},
			}},
		}})
		p.eventually("live to be Ready", 60*time.Second, func() bool {
			return readyCond(p.inspect("live")).Status == api.ConditionTrue
		})
		p.must("exec", "live", "rm", "/tmp/ok")
		var inst api.Instance
		p.eventually("the unhealthy container to restart", 90*time.Second, func() bool {
			inst = p.inspect("live")
			return inst.Status.Containers[0].RestartCount >= 1
		})
		if !hasEvent(inst, "Unhealthy", "Liveness probe", "test -f /tmp/ok") {
			t.Errorf("no Unhealthy event for the liveness probe: %+v", inst.Status.Events)
		}
		if !hasEvent(inst, "Killing", "liveness") {
			t.Errorf("no Killing event: %+v", inst.Status.Events)
		}

		// The agent restarts and adopts the container: its probes run
		// again (and its readiness is kept, not reset).
		p.eventually("live to run and be Ready again", 60*time.Second, func() bool {
			inst = p.inspect("live")
			return readyCond(inst).Status == api.ConditionTrue
		})
		restarts := inst.Status.Containers[0].RestartCount
		p.stop()
		p.start()
		p.eventually("live to be Ready after the agent restarted", 60*time.Second, func() bool {
			return readyCond(p.inspect("live")).Status == api.ConditionTrue
		})
		p.must("exec", "live", "rm", "/tmp/ok")
		p.eventually("the adopted container to restart when unhealthy", 90*time.Second, func() bool {
			return p.inspect("live").Status.Containers[0].RestartCount > restarts
		})
		p.must("rm", "-f", "live")
	})

	t.Run("HealthFlags", func(t *testing.T) {
		p.must("run", "-d", "--name", "hc", "--restart", "always",
			"--health-cmd", "test -f /tmp/ok", "--health-interval", "1s", "--health-timeout", "20s", "--health-retries", "2",
			"kanga.test/busybox", "sh", "-c", "touch /tmp/ok; exec sleep 1000")
		psLine := func() string {
			for _, l := range strings.Split(p.must("ps"), "\n") {
				if strings.HasPrefix(l, "hc ") {
					return l
				}
			}
			return ""
		}
		p.eventually("ps to show hc healthy", 60*time.Second, func() bool { return strings.Contains(psLine(), "(healthy)") })
		p.must("exec", "hc", "rm", "/tmp/ok")
		// The container ignores SIGTERM (sleep as PID 1): it stays
		// unhealthy until the SIGKILL after the grace period.
		p.eventually("ps to show hc unhealthy", 60*time.Second, func() bool { return strings.Contains(psLine(), "(unhealthy)") })
		p.eventually("hc to be restarted and healthy again", 90*time.Second, func() bool {
			l := psLine()
			return strings.Contains(l, "(healthy)") && strings.Contains(l, " restarts")
		})
		inst := p.inspect("hc")
		if l := inst.Spec.Containers[0].LivenessProbe; l == nil || l.Exec == nil || strings.Join(l.Exec.Command, " ") != "sh -c test -f /tmp/ok" {
			t.Errorf("liveness probe of --health-cmd: %+v", l)
		}
		p.must("rm", "-f", "hc")
	})
}
