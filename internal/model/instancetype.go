package model

import (
	"fmt"
	"strings"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/internal/errdefs"
)

// InstanceTypes is the catalog of named resource bundles, in the spirit of
// cloud instance types. A type fills in what the spec's resources leave
// empty; explicit fields win.
var InstanceTypes = []api.InstanceType{
	{Name: "k1.small", Description: "half a shared core, 256 MiB, 10 Mbit/s each way",
		Resources: api.Resources{CPU: "0.5", Memory: "256Mi", Pids: 256, IngressBandwidth: "10M", EgressBandwidth: "10M"}},
	{Name: "k1.medium", Description: "one shared core, 1 GiB, 50 Mbit/s each way",
		Resources: api.Resources{CPU: "1", Memory: "1Gi", Pids: 1024, IngressBandwidth: "50M", EgressBandwidth: "50M"}},
	{Name: "k1.large", Description: "one dedicated core, 2 GiB, 200 Mbit/s each way",
		Resources: api.Resources{CPU: "1", CPUPolicy: "dedicated", Memory: "2Gi", Pids: 4096, IngressBandwidth: "200M", EgressBandwidth: "200M"}},
	{Name: "k1.io", Description: "one shared core, 1 GiB, disk 50 MiB/s and 2000 IOPS each way",
		Resources: api.Resources{CPU: "1", Memory: "1Gi", Pids: 1024, DiskReadBPS: "50Mi", DiskWriteBPS: "50Mi", DiskReadIOPS: 2000, DiskWriteIOPS: 2000}},
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
	names := make([]string, len(InstanceTypes))
	for i, t := range InstanceTypes {
		names[i] = t.Name
	}
	return fmt.Errorf("spec.instanceType %q is not one of %s (see kanga types): %w", name, strings.Join(names, ", "), errdefs.ErrInvalidArgument)
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
	fill(&r.CPU, d.CPU)
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
