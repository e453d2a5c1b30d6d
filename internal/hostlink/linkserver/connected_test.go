package linkserver

import (
	"testing"
)

// A host is connected while one of its agent's long-lived requests is
// open here, and no longer once the last has ended (what the failure
// detector's prober asks, package hostclient).
func TestConnectedCountsOpenRequests(t *testing.T) {
	link := &Server{}
	if link.Connected("h") {
		t.Fatal("connected before any request")
	}
	heartbeat, watch := link.linked("h"), link.linked("h")
	heartbeat()
	if !link.Connected("h") {
		t.Fatal("not connected while the watch is open")
	}
	watch()
	if link.Connected("h") {
		t.Fatal("still connected after its requests ended")
	}
}
