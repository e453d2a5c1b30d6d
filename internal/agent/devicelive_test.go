package agent

import (
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func TestRuntimeDefault(t *testing.T) {
	for _, tc := range []struct {
		d    specs.LinuxDevice
		want bool
	}{
		{specs.LinuxDevice{Type: "c", Major: 1, Minor: 7}, true},     // /dev/full
		{specs.LinuxDevice{Type: "c", Major: 136, Minor: 4}, true},   // a pts
		{specs.LinuxDevice{Type: "c", Major: 10, Minor: 229}, false}, // /dev/fuse
		{specs.LinuxDevice{Type: "b", Major: 1, Minor: 7}, false},    // a block device of the same numbers
		{specs.LinuxDevice{Type: "c", Major: 195, Minor: 0}, false},  // /dev/nvidia0
	} {
		if got := runtimeDefault(tc.d); got != tc.want {
			t.Errorf("runtimeDefault(%s %d:%d) = %v, want %v", tc.d.Type, tc.d.Major, tc.d.Minor, got, tc.want)
		}
	}
}
