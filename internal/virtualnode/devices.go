package virtualnode

import (
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
)

// devicesOf maps a pod's extended resources (nvidia.com/gpu: 1 in a
// container's limits, which Kubernetes requires equal to its request) to
// Kanga device requests by CDI kind. Kanga's devices belong to the
// instance, so every container of the pod sees all of them; the count is
// the app containers' sum or the largest init container's, whichever is
// larger, as the scheduler counts a pod's effective request.
func devicesOf(pod *corev1.Pod) ([]api.DeviceRequest, error) {
	counts := map[string]int64{}
	add := func(c *corev1.Container, into map[string]int64) error {
		for name, q := range c.Resources.Limits {
			kind := string(name)
			if !extended(kind) {
				continue
			}
			n, ok := q.AsInt64()
			if !ok || n < 0 {
				return fmt.Errorf("container %s: limit %s=%s is not a whole number of devices: %w", c.Name, kind, q.String(), errdefs.ErrInvalidArgument)
			}
			into[kind] += n
		}
		return nil
	}
	for i := range pod.Spec.Containers {
		if err := add(&pod.Spec.Containers[i], counts); err != nil {
			return nil, err
		}
	}
	for i := range pod.Spec.InitContainers {
		one := map[string]int64{}
		if err := add(&pod.Spec.InitContainers[i], one); err != nil {
			return nil, err
		}
		for k, n := range one {
			counts[k] = max(counts[k], n)
		}
	}
	kinds := make([]string, 0, len(counts))
	for k, n := range counts {
		if n > 0 {
			kinds = append(kinds, k)
		}
	}
	slices.Sort(kinds)
	var out []api.DeviceRequest
	for _, k := range kinds {
		out = append(out, api.DeviceRequest{Kind: k, Count: int(counts[k])})
	}
	return out, nil
}

// extended reports whether a resource name is an extended resource that
// names a device kind: a domain-prefixed name outside Kubernetes' own
// domains (hugepages-*, cpu, memory and ephemeral-storage are not).
func extended(name string) bool {
	domain, _, ok := strings.Cut(name, "/")
	return ok && domain != "kubernetes.io" && !strings.HasSuffix(domain, ".kubernetes.io") && domain != "requests"
}
