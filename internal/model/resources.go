package model

import (
	"errors"
	"fmt"

	"github.com/kanga-run/kanga/api"
)

// CPU policies of api.Resources.CPUPolicy.
const (
	CPUPolicyShared    = "shared"
	CPUPolicyDedicated = "dedicated"
)

// Resources are an instance's api.Resources parsed: quantities as
// numbers, zero where the spec leaves a field out. The records (API,
// store, host link) keep the strings the tenant wrote; each role parses
// them once, where a record comes in, and hands these inward, so a
// quantity has one meaning everywhere: the API's validation (Validate),
// the quota charge (QuotaCharge; ChargeOf for parsed ones), the control
// plane's scheduling request, and the agent, whose runner parses its
// instance's when it is made and gives them to cgroups, cpusets, network
// limits, logs, the meter and the SLA report.
type Resources struct {
	// MilliCPU is the reservation (cpu), in millicores.
	MilliCPU int64
	// MilliCPULimit is the CFS cap (cpuLimit), in millicores.
	MilliCPULimit int64
	// DedicatedCores is how many whole cores a dedicated instance holds:
	// cpu, or 1 when cpu is left out; 0 for the shared policy.
	DedicatedCores int
	// Memory is the memory limit, in bytes.
	Memory int64
	Pids   int64
	// DiskReadBPS and DiskWriteBPS are bytes per second.
	DiskReadBPS, DiskWriteBPS   int64
	DiskReadIOPS, DiskWriteIOPS int64
	// IngressBPS and EgressBPS are bits per second.
	IngressBPS, EgressBPS int64
	// LogSize is the size of one log file, in bytes.
	LogSize  int64
	LogFiles int
	// Disk caps each container's writable layer, in bytes.
	Disk int64
}

// ParseResources parses r. Its error names each field that does not parse
// (spec.resources.<field>) and wraps errdefs.ErrInvalidArgument; the
// fields that parse are set even then, so that a lenient reader (a
// report, a meter) keeps what it can. Limits on the values (the minimum
// memory, log sizes, a cap at least the reservation) are Validate's.
func ParseResources(r api.Resources) (Resources, error) {
	out, errs, _ := parseResources(r)
	return out, errors.Join(errs...)
}

// parseResources is ParseResources with its errors apart and the JSON
// names of the fields that did not parse, for Validate's checks of the
// values of those that did.
func parseResources(r api.Resources) (out Resources, errs []error, bad map[string]bool) {
	out = Resources{Pids: r.Pids, DiskReadIOPS: r.DiskReadIOPS, DiskWriteIOPS: r.DiskWriteIOPS, LogFiles: r.LogFiles}
	for _, f := range []struct {
		field string
		v     string
		parse func(string) (int64, error)
		into  *int64
	}{
		{"cpu", r.CPU, ParseCPU, &out.MilliCPU},
		{"cpuLimit", r.CPULimit, ParseCPU, &out.MilliCPULimit},
		{"memory", r.Memory, ParseMemory, &out.Memory},
		{"diskReadBps", r.DiskReadBPS, ParseMemory, &out.DiskReadBPS},
		{"diskWriteBps", r.DiskWriteBPS, ParseMemory, &out.DiskWriteBPS},
		{"ingressBandwidth", r.IngressBandwidth, ParseBandwidth, &out.IngressBPS},
		{"egressBandwidth", r.EgressBandwidth, ParseBandwidth, &out.EgressBPS},
		{"logSize", r.LogSize, ParseMemory, &out.LogSize},
		{"disk", r.Disk, ParseMemory, &out.Disk},
	} {
		if f.v == "" {
			continue
		}
		v, err := f.parse(f.v)
		if err != nil {
			errs = append(errs, fmt.Errorf("spec.resources.%s: %w", f.field, err))
			if bad == nil {
				bad = map[string]bool{}
			}
			bad[f.field] = true
			continue
		}
		*f.into = v
	}
	switch r.CPUPolicy {
	case "", CPUPolicyShared:
	case CPUPolicyDedicated:
		switch {
		case r.CPU == "":
			out.DedicatedCores = 1
		case out.MilliCPU%1000 != 0:
			errs = append(errs, invalid("spec.resources.cpu %q: a dedicated cpu policy needs a whole number of cores, e.g. --cpu 1", r.CPU))
		default:
			out.DedicatedCores = int(out.MilliCPU / 1000)
		}
	default:
		errs = append(errs, invalid("spec.resources.cpuPolicy %q is not shared or dedicated", r.CPUPolicy))
	}
	return out, errs, bad
}

// CPUQuotaMilli is what a shared instance may use, in millicores: its
// cap, else its reservation; 0 for no limit.
func (r Resources) CPUQuotaMilli() int64 {
	if r.MilliCPULimit > 0 {
		return r.MilliCPULimit
	}
	return r.MilliCPU
}
