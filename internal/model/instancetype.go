package model

import (
	"fmt"
	"strings"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
)

// DefaultInstanceType is the platform's default type: what an instance
// that names no type gets for every resource it leaves empty (kanga up
// and kanga server --default-type; a tenant may have its own). It
// reserves memory but no CPU: it caps CPU at one core (cpuLimit), so that
// instances without flags stay as dense on a host as before while none
// can take a whole host. It sets no bandwidth or disk throttles, which
// would keep instances from the warm pools, and no disk cap: a capped
// writable layer is a filesystem made for the container at its start,
// which a warm container, started before its instance, cannot have.
const DefaultInstanceType = "k1.default"

// Default log caps: each container's log is rotated at 10 MiB and two
// files are kept, so a container's log takes at most 20 MiB on its host.
// Every catalog type carries them; they also apply to an instance that
// has none (platform started with --default-type none, or created before
// logs were capped).
const (
	DefaultLogSize  = "10Mi"
	DefaultLogFiles = 2
)

// InstanceTypes is the catalog of named resource bundles, in the spirit of
// cloud instance types. A type fills in what the spec's resources leave
// empty; explicit fields win.
var InstanceTypes = []api.InstanceType{
	{Name: "k1.default", Description: "no reserved CPU, at most one core; 256 MiB, 1024 processes; the default of instances that ask for nothing",
		Resources: api.Resources{CPULimit: "1", Memory: "256Mi", Pids: 1024, LogSize: DefaultLogSize, LogFiles: DefaultLogFiles}},
	{Name: "k1.small", Description: "half a shared core, 256 MiB, 10 Mbit/s each way, 10 GiB writable layer",
		Resources: api.Resources{CPU: "0.5", Memory: "256Mi", Pids: 256, IngressBandwidth: "10M", EgressBandwidth: "10M", LogSize: DefaultLogSize, LogFiles: DefaultLogFiles, Disk: "10Gi"}},
	{Name: "k1.medium", Description: "one shared core, 1 GiB, 50 Mbit/s each way, 20 GiB writable layer",
		Resources: api.Resources{CPU: "1", Memory: "1Gi", Pids: 1024, IngressBandwidth: "50M", EgressBandwidth: "50M", LogSize: DefaultLogSize, LogFiles: DefaultLogFiles, Disk: "20Gi"}},
	{Name: "k1.large", Description: "one dedicated core, 2 GiB, 200 Mbit/s each way, 40 GiB writable layer",
		Resources: api.Resources{CPU: "1", CPUPolicy: "dedicated", Memory: "2Gi", Pids: 4096, IngressBandwidth: "200M", EgressBandwidth: "200M", LogSize: DefaultLogSize, LogFiles: DefaultLogFiles, Disk: "40Gi"}},
	{Name: "k1.io", Description: "one shared core, 1 GiB, disk 50 MiB/s and 2000 IOPS each way, 40 GiB writable layer",
		Resources: api.Resources{CPU: "1", Memory: "1Gi", Pids: 1024, DiskReadBPS: "50Mi", DiskWriteBPS: "50Mi", DiskReadIOPS: 2000, DiskWriteIOPS: 2000, LogSize: DefaultLogSize, LogFiles: DefaultLogFiles, Disk: "40Gi"}},
}

// CheckDefaultType checks the name of a default instance type given by an
// operator or a tenant: a catalog entry, or "none" (or empty) for no
// default. field names the flag or field in the error.
func CheckDefaultType(field, name string) error {
	if name == "" || name == NoInstanceType {
		return nil
	}
	if _, ok := LookupInstanceType(name); ok {
		return nil
	}
	return fmt.Errorf("%s %q is not one of %s, or none (see kanga types): %w", field, name, strings.Join(typeNames(), ", "), errdefs.ErrInvalidArgument)
}

// NoInstanceType as a default type means no default: instances that ask
// for nothing get no CPU, memory or pids limit.
const NoInstanceType = "none"

// ApplyDefaultType names typ as the type of a spec that names none, so
// that Defaults fills in what the spec leaves empty from it and the
// stored spec shows where its limits came from. "none" and "" leave the
// spec alone.
func ApplyDefaultType(spec *api.InstanceSpec, typ string) {
	if spec.InstanceType == "" && typ != NoInstanceType {
		spec.InstanceType = typ
	}
}

func typeNames() []string {
	names := make([]string, len(InstanceTypes))
	for i, t := range InstanceTypes {
		names[i] = t.Name
	}
	return names
}

// LookupInstanceType finds a type of the catalog.
func LookupInstanceType(name string) (api.InstanceType, bool) {
	for _, t := range InstanceTypes {
		if t.Name == name {
			return t, true
		}
	}
	return api.InstanceType{}, false
}

func checkInstanceType(name string) error {
	if _, ok := LookupInstanceType(name); ok || name == "" {
		return nil
	}
	return fmt.Errorf("spec.instanceType %q is not one of %s (see kanga types): %w", name, strings.Join(typeNames(), ", "), errdefs.ErrInvalidArgument)
}

// applyInstanceType fills the spec's empty resource fields from its type;
// an unknown type is left for Validate to report.
func applyInstanceType(spec *api.InstanceSpec) {
	t, ok := LookupInstanceType(spec.InstanceType)
	if !ok {
		return
	}
	r, d := &spec.Resources, t.Resources
	fill := func(dst *string, src string) {
		if *dst == "" {
			*dst = src
		}
	}
	// A type's CPU cap applies to an instance that reserves no CPU: one
	// that asks for cores gets them, capped at what it reserves.
	if r.CPU == "" && r.CPUPolicy != "dedicated" {
		fill(&r.CPULimit, d.CPULimit)
	}
	fill(&r.CPU, d.CPU)
	fill(&r.LogSize, d.LogSize)
	fill(&r.Disk, d.Disk)
	if r.LogFiles == 0 {
		r.LogFiles = d.LogFiles
	}
	fill(&r.Memory, d.Memory)
	fill(&r.CPUPolicy, d.CPUPolicy)
	fill(&r.DiskReadBPS, d.DiskReadBPS)
	fill(&r.DiskWriteBPS, d.DiskWriteBPS)
	fill(&r.IngressBandwidth, d.IngressBandwidth)
	fill(&r.EgressBandwidth, d.EgressBandwidth)
	if r.Pids == 0 {
		r.Pids = d.Pids
	}
	if r.DiskReadIOPS == 0 {
		r.DiskReadIOPS = d.DiskReadIOPS
	}
	if r.DiskWriteIOPS == 0 {
		r.DiskWriteIOPS = d.DiskWriteIOPS
	}
}
