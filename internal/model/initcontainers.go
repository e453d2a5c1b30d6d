package model

import (
	"fmt"

	"github.com/kanga-run/kanga/api"
)

// SpecContainer is one container of a spec, init or app, with the field
// that names it in errors.
type SpecContainer struct {
	// Field is spec.initContainers[i] or spec.containers[i].
	Field string
	Init  bool
	// Spec points into the spec it was listed from.
	Spec *api.ContainerSpec
}

// AllContainers lists every container an instance runs: its init
// containers in order, then its app containers. Checks that hold for any
// container (env, mounts, security, images, secrets) go through it, so an
// init container is held to the same rules as the others.
func AllContainers(spec *api.InstanceSpec) []SpecContainer {
	out := make([]SpecContainer, 0, len(spec.InitContainers)+len(spec.Containers))
	for i := range spec.InitContainers {
		out = append(out, SpecContainer{Field: fmt.Sprintf("spec.initContainers[%d]", i), Init: true, Spec: &spec.InitContainers[i]})
	}
	for i := range spec.Containers {
		out = append(out, SpecContainer{Field: fmt.Sprintf("spec.containers[%d]", i), Spec: &spec.Containers[i]})
	}
	return out
}

// Reasons of an instance and its containers while init containers run,
// as the kubelet (and kubectl) spell them.
const (
	// ReasonPodInitializing is the waiting reason of a container that
	// waits for the init containers.
	ReasonPodInitializing = "PodInitializing"
	// ReasonInitCrashLoop is the instance's reason while a failed init
	// container waits out its backoff.
	ReasonInitCrashLoop = "Init:CrashLoopBackOff"
)

// InitState sums up the init containers' statuses: how many completed
// (in order: the first not completed ends the count) and the one that
// failed for good, if any: it exited non-zero (or was stopped) and
// policy does not run it again. stopped means the user stopped the
// instance, so nothing restarts.
func InitState(policy api.RestartPolicy, stopped bool, inits []api.ContainerStatus) (done int, failed *api.ContainerStatus) {
	for i := range inits {
		c := &inits[i]
		if c.State != api.ContainerTerminated {
			return done, nil
		}
		code := -1
		if c.ExitCode != nil {
			code = *c.ExitCode
		}
		if code == 0 {
			done++
			continue
		}
		if stopped || !WillRestart(policy, code) {
			return done, c
		}
		return done, nil // waits to be run again
	}
	return done, nil
}

// InitDone reports whether every init container completed.
func InitDone(policy api.RestartPolicy, inits []api.ContainerStatus) bool {
	done, _ := InitState(policy, false, inits)
	return done == len(inits)
}

// DeriveInstancePhase is DerivePhase for an instance with init
// containers: Creating while they run (or wait to run again), Failed once
// one failed for good, and the app containers' phase once all completed.
func DeriveInstancePhase(policy api.RestartPolicy, stopped bool, inits, cs []api.ContainerStatus) api.Phase {
	if len(inits) == 0 {
		return DerivePhase(policy, stopped, cs)
	}
	done, failed := InitState(policy, stopped, inits)
	switch {
	case failed != nil:
		return api.PhaseFailed
	case done < len(inits):
		if len(cs) == 0 {
			return api.PhasePending
		}
		return api.PhaseCreating
	}
	return DerivePhase(policy, stopped, cs)
}

// InitReason is the instance's reason and message while its init
// containers have not all completed, as kubectl shows a pod's: Init:N/M
// while they run, Init:CrashLoopBackOff while a failed one waits to run
// again, Init:Error (or Init:OOMKilled) once one failed for good. It is
// empty once they all completed.
func InitReason(policy api.RestartPolicy, stopped bool, inits []api.ContainerStatus) (reason, message string) {
	done, failed := InitState(policy, stopped, inits)
	if failed != nil {
		r := failed.Reason
		if r == "" {
			r = "Error"
		}
		msg := fmt.Sprintf("init container %s did not complete", failed.Name)
		if failed.ExitCode != nil {
			msg = fmt.Sprintf("init container %s exited with code %d", failed.Name, *failed.ExitCode)
		}
		return "Init:" + r, msg
	}
	if done == len(inits) {
		return "", ""
	}
	if c := inits[done]; c.State == api.ContainerTerminated && c.ExitCode != nil {
		return ReasonInitCrashLoop, fmt.Sprintf("init container %s exited with code %d; restarting it (restart %d)", c.Name, *c.ExitCode, c.RestartCount+1)
	}
	return fmt.Sprintf("Init:%d/%d", done, len(inits)), ""
}

// containerRestartPolicy refuses a container's own restart policy: on an
// init container it would make a sidecar (started, not awaited, restarted
// for the instance's whole life), which Kanga does not run.
func containerRestartPolicy(sc SpecContainer) error {
	if sc.Init {
		return invalid("%s.restartPolicy %q: sidecar init containers are not supported: move the container to spec.containers, or leave restartPolicy out to run it to completion before them", sc.Field, sc.Spec.RestartPolicy)
	}
	return invalid("%s.restartPolicy %q: a container has no restart policy of its own: set spec.restartPolicy", sc.Field, sc.Spec.RestartPolicy)
}

// checkInitCount holds init and app containers together to
// MaxContainers: each init container is a container, a snapshot and a
// task on the host like any other.
func checkInitCount(spec *api.InstanceSpec) error {
	if n, m := len(spec.InitContainers), len(spec.Containers); n > 0 && n+m > MaxContainers {
		return invalid("spec.initContainers has %d containers, %d with spec.containers, at most %d in all", n, n+m, MaxContainers)
	}
	return nil
}
