package cli

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/kanga-run/kanga/api"
)

func TestHealthFlags(t *testing.T) {
	sh := &api.ExecAction{Command: []string{"sh", "-c", "wget -q -O- localhost/ || exit 1"}}
	for _, tt := range []struct {
		name             string
		args             []string
		liveness, startP *api.Probe
		wantErr          string
	}{
		{name: "none", args: []string{"busybox"}},
		{name: "docker defaults", args: []string{"--health-cmd", sh.Command[2], "busybox"},
			liveness: &api.Probe{Exec: sh, PeriodSeconds: 30, TimeoutSeconds: 30, FailureThreshold: 3}},
		{name: "all flags", args: []string{"--health-cmd", sh.Command[2], "--health-interval", "2s", "--health-timeout", "1s",
			"--health-retries", "4", "--health-start-period", "9s", "busybox"},
			liveness: &api.Probe{Exec: sh, PeriodSeconds: 2, TimeoutSeconds: 1, FailureThreshold: 4},
			// 9s at 2s a check is 5 checks, plus the retries.
			startP: &api.Probe{Exec: sh, PeriodSeconds: 2, TimeoutSeconds: 1, FailureThreshold: 9}},
		{name: "interval without cmd", args: []string{"--health-interval", "5s", "busybox"}, wantErr: "--health-interval needs --health-cmd"},
		{name: "fraction", args: []string{"--health-cmd", "true", "--health-interval", "1500ms", "busybox"}, wantErr: "whole seconds"},
		{name: "zero retries", args: []string{"--health-cmd", "true", "--health-retries", "0", "busybox"}, wantErr: "--health-retries 0"},
		{name: "with a file", args: []string{"-f", "-", "--health-cmd", "true"}, wantErr: "cannot be combined with -f"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cmd, f := runCommandWithFlags(&options{})
			if err := cmd.ParseFlags(tt.args); err != nil {
				t.Fatal(err)
			}
			got, err := buildRunRequest(f, cmd.Flags().Changed, cmd.Flags().Args(), strings.NewReader(""), func(string) (string, bool) { return "", false })
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			c := got.Spec.Containers[0]
			if !reflect.DeepEqual(c.LivenessProbe, tt.liveness) || !reflect.DeepEqual(c.StartupProbe, tt.startP) {
				t.Errorf("probes: liveness %+v startup %+v, want %+v and %+v", c.LivenessProbe, c.StartupProbe, tt.liveness, tt.startP)
			}
		})
	}
}

func TestHealthText(t *testing.T) {
	started := testNow.Add(-time.Minute)
	probed := func(ready bool, events ...api.Event) api.Instance {
		return api.Instance{
			Spec: api.InstanceSpec{Containers: []api.ContainerSpec{{Name: "app",
				LivenessProbe: &api.Probe{Exec: &api.ExecAction{Command: []string{"true"}}}}}},
			Status: api.InstanceStatus{Phase: api.PhaseRunning, StartedAt: &started, Events: events,
				Containers: []api.ContainerStatus{{Name: "app", State: api.ContainerRunning, Ready: ready, StartedAt: &started}}},
		}
	}
	unhealthy := func(at time.Time) api.Event {
		return api.Event{Time: at, Type: "Warning", Reason: "Unhealthy", Message: "Liveness probe of container app failed: exit 1"}
	}
	for _, tt := range []struct {
		name string
		inst api.Instance
		want string
	}{
		{"no probes", api.Instance{Status: api.InstanceStatus{Phase: api.PhaseRunning, StartedAt: &started}}, "Up About a minute"},
		{"healthy", probed(true), "Up About a minute (healthy)"},
		{"starting", probed(false), "Up About a minute (health: starting)"},
		{"unhealthy", probed(false, unhealthy(started.Add(time.Second))), "Up About a minute (unhealthy)"},
		{"unhealthy in an earlier run", probed(true, unhealthy(started.Add(-time.Second))), "Up About a minute (healthy)"},
	} {
		if got := statusText(tt.inst, testNow); got != tt.want {
			t.Errorf("%s: statusText = %q, want %q", tt.name, got, tt.want)
		}
	}
}
