package model

import "github.com/kanga-run/kanga/api"

// WillRestart reports whether a container that exited with code will be
// started again under policy.
func WillRestart(policy api.RestartPolicy, code int) bool {
	switch policy {
	case api.RestartAlways:
		return true
	case api.RestartOnFailure:
		return code != 0
	}
	return false
}

// DerivePhase computes an instance's phase from its containers the way
// Kubernetes derives a pod's: Running while any container runs or will be
// restarted, Succeeded when all exited 0 for good, Failed when all are done
// and one failed. stopped means the user asked the instance to stop, so
// nothing restarts.
func DerivePhase(policy api.RestartPolicy, stopped bool, cs []api.ContainerStatus) api.Phase {
	if len(cs) == 0 {
		return api.PhasePending
	}
	running, waiting, failed := 0, 0, 0
	for _, c := range cs {
		switch c.State {
		case api.ContainerRunning:
			running++
		case api.ContainerWaiting:
			waiting++
		case api.ContainerTerminated:
			code := -1
			if c.ExitCode != nil {
				code = *c.ExitCode
			}
			if !stopped && WillRestart(policy, code) {
				running++
				continue
			}
			if code != 0 {
				failed++
			}
		}
	}
	switch {
	case running > 0:
		return api.PhaseRunning
	case waiting > 0:
		return api.PhaseCreating
	case failed > 0:
		return api.PhaseFailed
	}
	return api.PhaseSucceeded
}

// ExitCode is the code `kanga run` exits with: that of the first container
// that failed, else 0.
func ExitCode(cs []api.ContainerStatus) (int, bool) {
	found := false
	for _, c := range cs {
		if c.ExitCode == nil {
			continue
		}
		found = true
		if *c.ExitCode != 0 {
			return *c.ExitCode, true
		}
	}
	return 0, found
}
