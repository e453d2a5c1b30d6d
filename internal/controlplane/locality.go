package controlplane

import (
	"github.com/distribution/reference"

	"github.com/kanga-run/kanga/api"
)

// Image locality: the scheduler matches a request's images against a
// host's by string. Both sides are keyed by tenant and normalized
// reference, because an image record belongs to a tenant: a host holding
// another tenant's copy of the same name cannot start the instance without
// a pull of its own (and cannot at all for an imported image).

// ImageKey is the scheduler's key for the tenant's image ref, normalized
// as the agent stores it (busybox -> docker.io/library/busybox:latest); a
// ref that does not parse is kept as written, to match nothing.
func ImageKey(tenant, ref string) string {
	if named, err := reference.ParseDockerRef(ref); err == nil {
		ref = named.String()
	}
	return tenant + "/" + ref
}

// hostImageKeys are the scheduler's keys for the images a host reported.
func hostImageKeys(imgs []api.HostImage) []string {
	if len(imgs) == 0 {
		return nil
	}
	keys := make([]string, len(imgs))
	for i, img := range imgs {
		keys[i] = HostImageKey(img)
	}
	return keys
}

// HostImageKey is the scheduler's key for an image a host reported.
func HostImageKey(img api.HostImage) string { return img.Tenant + "/" + img.Name }
