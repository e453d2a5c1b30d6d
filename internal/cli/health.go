package cli

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/kanga-run/kanga/api"
)

// healthFlags are docker's health-check flags of run. --health-cmd makes
// a liveness exec probe through `sh -c` (Docker's CMD-SHELL); unlike
// Docker, a container that fails it is restarted as its restart policy
// says. --health-start-period makes a startup probe with the same
// command, which has the start period (and the retries) to pass first,
// as Docker ignores failures during the start period. The other probes
// (readiness, httpGet, tcpSocket, grpc) are set in a -f file.
type healthFlags struct {
	cmd         string
	interval    time.Duration
	timeout     time.Duration
	retries     int
	startPeriod time.Duration
}

// Docker's defaults.
const (
	defaultHealthInterval = 30 * time.Second
	defaultHealthTimeout  = 30 * time.Second
	defaultHealthRetries  = 3
)

func (h *healthFlags) register(fl *pflag.FlagSet) {
	fl.StringVar(&h.cmd, "health-cmd", "", "command to check health, run with sh -c in the container; the container is restarted (per --restart) when it fails --health-retries times in a row")
	fl.DurationVar(&h.interval, "health-interval", defaultHealthInterval, "time between health checks (whole seconds)")
	fl.DurationVar(&h.timeout, "health-timeout", defaultHealthTimeout, "longest one health check may take (whole seconds)")
	fl.IntVar(&h.retries, "health-retries", defaultHealthRetries, "failures in a row that make the container unhealthy")
	fl.DurationVar(&h.startPeriod, "health-start-period", 0, "time the container has to pass its first health check before failures count")
}

var healthFlagNames = []string{"health-cmd", "health-interval", "health-timeout", "health-retries", "health-start-period"}

// apply sets the probes of the run's one container.
func (h *healthFlags) apply(ct *api.ContainerSpec, changed func(string) bool) error {
	if h.cmd == "" {
		for _, n := range healthFlagNames[1:] {
			if changed(n) {
				return fmt.Errorf("--%s needs --health-cmd", n)
			}
		}
		return nil
	}
	period, err := wholeSeconds("health-interval", h.interval, 1)
	if err != nil {
		return err
	}
	timeout, err := wholeSeconds("health-timeout", h.timeout, 1)
	if err != nil {
		return err
	}
	start, err := wholeSeconds("health-start-period", h.startPeriod, 0)
	if err != nil {
		return err
	}
	if h.retries < 1 {
		return fmt.Errorf("--health-retries %d: give at least 1", h.retries)
	}
	exec := &api.ExecAction{Command: []string{"sh", "-c", h.cmd}}
	ct.LivenessProbe = &api.Probe{Exec: exec, PeriodSeconds: period, TimeoutSeconds: timeout, FailureThreshold: h.retries}
	if start > 0 {
		ct.StartupProbe = &api.Probe{Exec: exec, PeriodSeconds: period, TimeoutSeconds: timeout,
			FailureThreshold: (start+period-1)/period + h.retries}
	}
	return nil
}

// wholeSeconds is d in seconds, refused below least or with a fraction.
func wholeSeconds(flag string, d time.Duration, least int) (int, error) {
	if d%time.Second != 0 {
		return 0, fmt.Errorf("--%s %s: give whole seconds, e.g. 5s", flag, d)
	}
	s := int(d / time.Second)
	if s < least {
		return 0, fmt.Errorf("--%s %s: give at least %ds", flag, d, least)
	}
	return s, nil
}

// healthText is Docker's health note of ps for a running instance whose
// containers have probes: healthy while every container is ready and
// none was found unhealthy in its current run, unhealthy when one was,
// starting otherwise (a startup or readiness probe has not passed yet).
// Empty for an instance without probes.
func healthText(inst api.Instance) string {
	probed := false
	for _, c := range inst.Spec.Containers {
		probed = probed || c.LivenessProbe != nil || c.ReadinessProbe != nil || c.StartupProbe != nil
	}
	if !probed || inst.Status.Phase != api.PhaseRunning {
		return ""
	}
	unhealthy, ready := false, len(inst.Status.Containers) > 0
	for _, c := range inst.Status.Containers {
		ready = ready && c.Ready
		if c.StartedAt == nil {
			continue
		}
		for _, e := range inst.Status.Events {
			if e.Reason == "Unhealthy" && !e.Time.Before(*c.StartedAt) && mentions(e.Message, c.Name) {
				unhealthy = true
			}
		}
	}
	switch {
	case unhealthy && !ready:
		return "unhealthy"
	case ready:
		return "healthy"
	}
	return "health: starting"
}

// mentions tells whether an event message is about container name.
func mentions(msg, name string) bool {
	return strings.Contains(msg, "container "+name+" ")
}

var errHealthWithFile = errors.New("--health-* set a probe of one container and cannot be combined with -f: set livenessProbe in the file")
