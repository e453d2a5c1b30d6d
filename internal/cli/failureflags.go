package cli

import (
	"strconv"

	"github.com/spf13/pflag"

	"github.com/kanga-run/kanga/internal/assembly/cp"
	"github.com/kanga-run/kanga/internal/controlplane"
)

// addFailureFlags adds the failure detector's flags; kanga up and kanga
// server share them.
func addFailureFlags(f *pflag.FlagSet, fd *cp.FailureDetection) {
	f.Var((*safeguardsFlag)(&fd.NoSafeguards), "failure-safeguards",
		"before re-creating the instances of a host whose lease lapsed, check that it does not answer by its link or host API (kanga up never loses its own host), re-create at --lost-recreate-rate, and stop when --lost-brake-threshold of the hosts look lost at once; =false acts on every lapsed lease at once (for comparisons)")
	f.Lookup("failure-safeguards").NoOptDefVal = "true"
	f.Float64Var(&fd.RecreateRate, "lost-recreate-rate", controlplane.DefaultRecreateRate,
		"most instances of lost hosts re-created (or failed) a second; negative: no limit")
	f.Float64Var(&fd.BrakeThreshold, "lost-brake-threshold", controlplane.DefaultBrakeThreshold,
		"safety brake: with three hosts or more, stop re-creating when more than this share of them look lost at once (losing every host always stops it); negative: no brake")
	f.DurationVar(&fd.BrakeSettle, "lost-brake-settle", controlplane.DefaultBrakeSettle,
		"how long the share of lost hosts must stay at or under --lost-brake-threshold before a tripped safety brake releases and re-creation resumes; negative: release at once")
}

// safeguardsFlag is --failure-safeguards, stored as its negation
// (FailureDetection.NoSafeguards) so that the zero value keeps them on.
type safeguardsFlag bool

func (s *safeguardsFlag) String() string { return strconv.FormatBool(!bool(*s)) }

func (s *safeguardsFlag) Set(v string) error {
	on, err := strconv.ParseBool(v)
	if err != nil {
		return err
	}
	*s = safeguardsFlag(!on)
	return nil
}

func (s *safeguardsFlag) Type() string { return "bool" }
