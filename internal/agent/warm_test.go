package agent

import (
	"context"
	"strings"
	"testing"

	"github.com/kanga-run/kanga/internal/agent/warm"
)

// TestWarmMakerRefusesClassesNotHeldWarm: the pool gets an error and no
// value (not a nil *warmCtr in an interface, which it would hold as a
// warm container) for a class that is not held warm or not on the host.
func TestWarmMakerRefusesClassesNotHeldWarm(t *testing.T) {
	a := New(Config{HostName: "h", DataDir: t.TempDir(), Network: &fakeStepNetwork{}})
	var m warm.Maker = warmMaker{a}
	for _, class := range []string{"gvisor", "runc"} { // runc: not configured here
		v, err := m.Make(context.Background(), warm.Key{Tenant: "acme", Image: "kanga.test/busybox:latest", Class: class})
		if err == nil || !strings.Contains(err.Error(), "is not held warm") {
			t.Errorf("Make for class %s: %v, want it refused", class, err)
		}
		if v != nil {
			t.Errorf("Make for class %s returned %#v with its error, want nil", class, v)
		}
	}
}

func TestIsWarmLabelled(t *testing.T) {
	tests := []struct {
		labels map[string]string
		want   bool
	}{
		{map[string]string{labelWarm: "warm-1"}, true},
		{map[string]string{labelWarm: "warm-1", labelTenant: "acme"}, true},
		{map[string]string{labelWarm: "warm-1", labelUID: "u1"}, false}, // claimed and recorded
		{map[string]string{labelUID: "u1"}, false},
		{nil, false},
	}
	for _, tt := range tests {
		if got := isWarmLabelled(tt.labels); got != tt.want {
			t.Errorf("isWarmLabelled(%v) = %v, want %v", tt.labels, got, tt.want)
		}
	}
}
