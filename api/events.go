package api

// EventRecord is one line of GET /v1/events: an event of one of the
// tenant's instances (InstanceStatus.Events), named by the instance.
type EventRecord struct {
	Instance string `json:"instance"`
	UID      string `json:"uid"`
	Event
}

// Event types (Event.Type).
const (
	EventNormal  = "Normal"
	EventWarning = "Warning"
)
