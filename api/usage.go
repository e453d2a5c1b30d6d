package api

import "time"

// UsageRecord is what a host reports about one instance for one interval:
// a sequence number unique per instance, the promised resources, and one
// point per sampling interval (normally one second). Records of an
// instance cover its run time without gap or overlap; the last is Final.
// Hosts write them idempotently (same instance and sequence number, same
// content), so a record sent twice after a crash counts once.
type UsageRecord struct {
	Tenant   string    `json:"tenant"`
	Instance string    `json:"instance"`
	UID      string    `json:"uid"`
	Host     string    `json:"host"`
	Seq      int64     `json:"seq"`
	Start    time.Time `json:"start"`
	End      time.Time `json:"end"`
	// Final marks the instance's last record: it ran no longer.
	Final bool `json:"final,omitempty"`
	// CPUMilli and MemoryBytes are the promised resources (the instance's
	// limits); Devices the number of devices it holds.
	CPUMilli    int64 `json:"cpuMilli"`
	MemoryBytes int64 `json:"memoryBytes"`
	Devices     int   `json:"devices,omitempty"`
	// Points follow each other from Start to End.
	Points []UsagePoint `json:"points"`
}

// UsagePoint is what an instance used during one interval: [duration in
// milliseconds, CPU nanoseconds, average memory bytes, egress bytes]. A
// compact array, since a host sends one per instance per second.
type UsagePoint [4]uint64

// Duration, CPUNanos, MemoryBytes and EgressBytes name the point's parts.
func (p UsagePoint) Duration() time.Duration { return time.Duration(p[0]) * time.Millisecond }
func (p UsagePoint) CPUNanos() uint64        { return p[1] }
func (p UsagePoint) MemoryBytes() uint64     { return p[2] }
func (p UsagePoint) EgressBytes() uint64     { return p[3] }

// UsageItem is the usage of a tenant, or of one instance, over a period.
type UsageItem struct {
	Tenant   string `json:"tenant"`
	Instance string `json:"instance,omitempty"`
	UID      string `json:"uid,omitempty"`
	// Seconds is the metered run time.
	Seconds             float64 `json:"seconds"`
	VCPUSecondsPromised float64 `json:"vcpuSecondsPromised"`
	VCPUSecondsUsed     float64 `json:"vcpuSecondsUsed"`
	GiBSecondsPromised  float64 `json:"gibSecondsPromised"`
	GiBSecondsUsed      float64 `json:"gibSecondsUsed"`
	EgressBytes         uint64  `json:"egressBytes"`
	DeviceSeconds       float64 `json:"deviceSeconds"`
	// First and Last bound the metered time within the period.
	First *time.Time `json:"first,omitempty"`
	Last  *time.Time `json:"last,omitempty"`
	// Records counts the hosts' records that contributed; Final is set
	// (per instance) once the instance's last record arrived.
	Records int  `json:"records"`
	Final   bool `json:"final,omitempty"`
}

// UsageReport is the body of GET /v1/usage.
type UsageReport struct {
	Since time.Time   `json:"since"`
	Until time.Time   `json:"until"`
	Items []UsageItem `json:"items"`
}
