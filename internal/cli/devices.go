package cli

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/kanga-run/kanga/api"
)

// parseDevice reads --device: KIND, KIND=N or KIND=NAME. A number after
// the = is a count, as Kubernetes counts extended resources
// (nvidia.com/gpu: 2); a device whose CDI name is a number (an NVIDIA GPU
// index) is named in a -f spec's devices[].name instead.
func parseDevice(s string) (api.DeviceRequest, error) {
	kind, rest, named := strings.Cut(s, "=")
	if kind == "" || (named && rest == "") {
		return api.DeviceRequest{}, fmt.Errorf("--device %q: want KIND, KIND=N or KIND=NAME, e.g. nvidia.com/gpu=2 or kanga.dev/mock=m0", s)
	}
	if !named {
		return api.DeviceRequest{Kind: kind, Count: 1}, nil
	}
	if n, err := strconv.Atoi(rest); err == nil {
		return api.DeviceRequest{Kind: kind, Count: n}, nil
	}
	return api.DeviceRequest{Kind: kind, Name: s}, nil
}
