package daemon

import (
	"errors"
	"log/slog"

	"github.com/kanga-run/kanga/internal/agent"
	"github.com/prometheus/client_golang/prometheus"
)

// registerInstanceMetrics adds the agent's per-instance series to the
// process's registry, which the host API's /metrics (and, under kanga
// up, the API's) serves. The returned func removes them, so that a later
// agent in the same process can register its own.
func registerInstanceMetrics(ag *agent.Agent, log *slog.Logger) (unregister func()) {
	c := ag.InstanceCollector()
	if err := prometheus.Register(c); err != nil {
		if are := (prometheus.AlreadyRegisteredError{}); errors.As(err, &are) {
			log.Warn("another agent in this process exports per-instance metrics; this one's are not exported", "err", err)
		} else {
			log.Error("registering the per-instance metrics failed", "err", err)
		}
		return func() {}
	}
	return func() { prometheus.Unregister(c) }
}
