package model

import (
	"testing"

	"github.com/kanga-run/kanga/api"
)

func TestValidateDevices(t *testing.T) {
	many := make([]api.DeviceRequest, MaxDeviceRequests+1)
	for i := range many {
		many[i] = api.DeviceRequest{Kind: "kanga.dev/mock", Count: 1}
	}
	for _, tc := range []struct {
		name    string
		runtime string
		devs    []api.DeviceRequest
		want    string // substring of the error; empty for valid
		kind    string // the first request's kind after Defaults
	}{
		{"a count", "runc", []api.DeviceRequest{{Kind: "nvidia.com/gpu", Count: 2}}, "", "nvidia.com/gpu"},
		{"a name fills in the kind", "crun", []api.DeviceRequest{{Name: "nvidia.com/gpu=0"}}, "", "nvidia.com/gpu"},
		{"no count", "runc", []api.DeviceRequest{{Kind: "nvidia.com/gpu"}}, "spec.devices[0].count 0 is not between 1 and 64", ""},
		{"count too large", "runc", []api.DeviceRequest{{Kind: "nvidia.com/gpu", Count: 65}}, "spec.devices[0].count 65", ""},
		{"kind without vendor", "runc", []api.DeviceRequest{{Kind: "gpu", Count: 1}}, `spec.devices[0].kind "gpu" is not a CDI kind`, ""},
		{"kind with a path", "runc", []api.DeviceRequest{{Kind: "../../etc/passwd", Count: 1}}, "spec.devices[0].kind", ""},
		{"bad name", "runc", []api.DeviceRequest{{Name: "/dev/sda"}}, `spec.devices[0].name "/dev/sda" is not a qualified CDI device name`, ""},
		{"name of another kind", "runc", []api.DeviceRequest{{Kind: "kanga.dev/mock", Name: "nvidia.com/gpu=0"}}, `spec.devices[0].kind "kanga.dev/mock" is not the kind of device "nvidia.com/gpu=0"`, ""},
		{"name twice", "runc", []api.DeviceRequest{{Name: "nvidia.com/gpu=0"}, {Name: "nvidia.com/gpu=0"}}, `spec.devices[1].name "nvidia.com/gpu=0" is asked for twice`, ""},
		{"named with a count", "runc", []api.DeviceRequest{{Name: "nvidia.com/gpu=0", Count: 2}}, "a named device is one device", ""},
		{"too many", "runc", many, "spec.devices has 17 requests, at most 16", ""},
		{"gvisor", "gvisor", []api.DeviceRequest{{Kind: "kanga.dev/mock", Count: 1}}, "spec.devices: runtime class gvisor cannot use host devices", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := api.InstanceSpec{Containers: []api.ContainerSpec{{Image: "kanga.test/busybox:latest"}}, Runtime: tc.runtime, Devices: tc.devs}
			Defaults(&s, "runc")
			checkValidate(t, Validate(&s), tc.want)
			if tc.kind != "" && s.Devices[0].Kind != tc.kind {
				t.Errorf("kind after Defaults = %q, want %q", s.Devices[0].Kind, tc.kind)
			}
		})
	}
}
