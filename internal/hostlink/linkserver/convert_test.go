package linkserver

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/internal/hostcontract"
	"github.com/kanga-run/kanga/internal/hostlink"
	"github.com/kanga-run/kanga/internal/store"
)

// TestWatchEventConversion follows a store event through the wire to the
// agent: what the agent gets is what the store said, and the line keeps
// the field names agents of earlier versions read.
func TestWatchEventConversion(t *testing.T) {
	inst := &api.Instance{Name: "web", Tenant: "acme", UID: "u1", Status: api.InstanceStatus{Phase: api.PhaseRunning, Host: "h1"}}
	for _, tc := range []struct {
		name string
		in   store.InstanceEvent
		want hostcontract.InstanceEvent
	}{
		{"put", store.InstanceEvent{Instance: inst, Tenant: "acme", Name: "web", ModRevision: 7, Revision: 9},
			hostcontract.InstanceEvent{Instance: inst, Tenant: "acme", Name: "web", Revision: 9}},
		{"delete", store.InstanceEvent{Instance: inst, Deleted: true, Tenant: "acme", Name: "web", Revision: 12},
			hostcontract.InstanceEvent{Instance: inst, Deleted: true, Tenant: "acme", Name: "web", Revision: 12}},
		{"delete unseen", store.InstanceEvent{Deleted: true, Tenant: "acme", Name: "gone", Revision: 13},
			hostcontract.InstanceEvent{Deleted: true, Tenant: "acme", Name: "gone", Revision: 13}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := json.Marshal(wireEvent(tc.in))
			if err != nil {
				t.Fatal(err)
			}
			var fields map[string]json.RawMessage
			if err := json.Unmarshal(b, &fields); err != nil {
				t.Fatal(err)
			}
			for _, k := range []string{"Instance", "Deleted", "Tenant", "Name", "Revision"} {
				if _, ok := fields[k]; !ok {
					t.Errorf("wire line %s has no field %q", b, k)
				}
			}
			if _, ok := fields["ModRevision"]; ok {
				t.Errorf("wire line %s carries the store's ModRevision", b)
			}
			var line hostlink.WatchEvent
			if err := json.Unmarshal(b, &line); err != nil {
				t.Fatal(err)
			}
			if got := line.ForHost(); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("agent got %+v, want %+v", got, tc.want)
			}
		})
	}
}

// TestPurgeRoundTrip: a purge the store lists comes back to it, through
// the wire and the agent's acknowledgement, as the same record (the
// generation is what the acknowledgement is checked against).
func TestPurgeRoundTrip(t *testing.T) {
	at := time.Date(2026, 12, 2, 15, 0, 0, 0, time.UTC)
	for _, p := range []store.Purge{
		{Tenant: "acme", Image: "docker.io/library/busybox:latest", At: at, Generation: 42},
		{Tenant: "acme", At: at, Generation: 43}, // the whole tenant
	} {
		b, err := json.Marshal(wirePurge(p))
		if err != nil {
			t.Fatal(err)
		}
		var onAgent hostlink.Purge
		if err := json.Unmarshal(b, &onAgent); err != nil {
			t.Fatal(err)
		}
		acked := hostlink.PurgeFromHost(onAgent.ForHost())
		b, err = json.Marshal(acked)
		if err != nil {
			t.Fatal(err)
		}
		var back hostlink.Purge
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatal(err)
		}
		if got := storedPurge(back); !reflect.DeepEqual(got, p) {
			t.Errorf("purge came back as %+v, want %+v", got, p)
		}
	}
}

func TestNetViewUpdateConversion(t *testing.T) {
	u := hostcontract.NetUpdate{Reset: true,
		Tenants: []hostcontract.NetTenant{{Name: "acme", Network: api.TenantNetworkPolicy{}}},
		Subnets: []string{"10.88.0.0/24"}, Set: map[string]string{"10.88.0.5": "acme"}}
	b, err := json.Marshal(hostlink.WireNetUpdate(u))
	if err != nil {
		t.Fatal(err)
	}
	var line hostlink.NetViewUpdate
	if err := json.Unmarshal(b, &line); err != nil {
		t.Fatal(err)
	}
	if got := line.ForHost(); !reflect.DeepEqual(got, u) {
		t.Errorf("agent got %+v, want %+v", got, u)
	}
	refused := wireRefusals([]store.UsageRefusal{{Index: 3, Reason: "unknown instance"}})
	if got := hostlink.RefusalsForHost(refused); !reflect.DeepEqual(got, []hostcontract.UsageRefusal{{Index: 3, Reason: "unknown instance"}}) {
		t.Errorf("refusals: got %+v", got)
	}
}
