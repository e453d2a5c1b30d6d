package cli

import (
	"maps"
	"testing"
)

func TestParseLabels(t *testing.T) {
	tests := []struct {
		in   []string
		want map[string]string
		err  bool
	}{
		{nil, nil, false},
		{[]string{"zone=a"}, map[string]string{"zone": "a"}, false},
		{[]string{"zone=a", "disk=ssd"}, map[string]string{"zone": "a", "disk": "ssd"}, false},
		{[]string{"empty="}, map[string]string{"empty": ""}, false},
		{[]string{"zone"}, nil, true},
		{[]string{"=a"}, nil, true},
	}
	for _, tt := range tests {
		got, err := parseLabels(tt.in)
		if (err != nil) != tt.err || !maps.Equal(got, tt.want) {
			t.Errorf("parseLabels(%q) = %v, %v; want %v, error %v", tt.in, got, err, tt.want, tt.err)
		}
	}
}
