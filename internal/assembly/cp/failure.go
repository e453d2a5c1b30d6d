package cp

import (
	"fmt"
	"time"

	"github.com/kanga-run/kanga/internal/controlplane"
)

// FailureDetection tunes the control plane's failure detector (kanga up
// and kanga server share it).
type FailureDetection struct {
	// NoSafeguards acts on every lapsed lease at once, with no liveness
	// probe, no rate limit and no safety brake, as Kanga did before: for
	// comparisons only.
	NoSafeguards bool
	// RecreateRate bounds re-creations of lost hosts' instances a second
	// (0: the default; negative: no limit).
	RecreateRate float64
	// BrakeThreshold is the share of hosts lost at once that trips the
	// safety brake (0: the default; negative: no brake).
	BrakeThreshold float64
	// BrakeSettle is how long the brake's condition must stay clear
	// before the brake releases (0: the default; negative: at once).
	BrakeSettle time.Duration
}

// Check validates f's values, naming the flags.
func (f FailureDetection) Check() error {
	if f.BrakeThreshold > 1 {
		return fmt.Errorf("--lost-brake-threshold %g: a share of hosts, at most 1 (or negative to turn the brake off)", f.BrakeThreshold)
	}
	return nil
}

// Apply sets f in cfg; self, if set, is the host in the control plane's
// own process, and live the liveness probe of the other hosts.
func (f FailureDetection) Apply(cfg *controlplane.Config, self string, live controlplane.Liveness) {
	cfg.Self, cfg.Liveness = self, live
	cfg.RecreateRate, cfg.BrakeThreshold, cfg.BrakeSettle = f.RecreateRate, f.BrakeThreshold, f.BrakeSettle
	if f.NoSafeguards {
		cfg.NoSafeguards()
	}
}
