package cli

import (
	"testing"

	"github.com/kanga-run/kanga/api"
)

func TestParseDevice(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want api.DeviceRequest
		err  bool
	}{
		{"nvidia.com/gpu", api.DeviceRequest{Kind: "nvidia.com/gpu", Count: 1}, false},
		{"nvidia.com/gpu=2", api.DeviceRequest{Kind: "nvidia.com/gpu", Count: 2}, false},
		{"kanga.dev/mock=m0", api.DeviceRequest{Kind: "kanga.dev/mock", Name: "kanga.dev/mock=m0"}, false},
		{"nvidia.com/gpu=", api.DeviceRequest{}, true},
		{"=m0", api.DeviceRequest{}, true},
	} {
		got, err := parseDevice(tc.in)
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("parseDevice(%q) = %+v, %v; want %+v, error %v", tc.in, got, err, tc.want, tc.err)
		}
	}
}
