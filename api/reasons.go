package api

import "strings"

// Reasons of a Pending instance that no host can take now. A shortage of
// one resource on every host that could otherwise run the instance is
// Insufficient<Resource>; anything else (no host offers the runtime
// class, selector or capability, hosts cordoned, shortages of different
// resources on different hosts) is Unschedulable.
const (
	ReasonUnschedulable         = "Unschedulable"
	ReasonInsufficientCPU       = "InsufficientCPU" // also: no dedicated core free
	ReasonInsufficientMemory    = "InsufficientMemory"
	ReasonInsufficientPids      = "InsufficientPids"
	ReasonInsufficientBandwidth = "InsufficientBandwidth"
	ReasonInsufficientDisk      = "InsufficientDisk"
	// ReasonInsufficientDevices: not enough devices of a kind the spec
	// asks for (the message names the kind).
	ReasonInsufficientDevices = "InsufficientDevices"
	// ReasonInsufficientInstances: the hosts run as many instances as
	// they take.
	ReasonInsufficientInstances = "InsufficientInstances"
)

// WaitsForResources reports whether reason is that of a Pending instance
// no host can take now: Unschedulable or Insufficient<Resource>. Such an
// instance stays Pending until that changes.
func WaitsForResources(reason string) bool {
	return reason == ReasonUnschedulable || strings.HasPrefix(reason, "Insufficient")
}
