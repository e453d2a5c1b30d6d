package model

import (
	"fmt"
	"strings"

	"github.com/distribution/reference"

	"github.com/kanga-run/kanga/errdefs"
)

// NormalizeImage returns the canonical form of an image reference, the way
// Docker spells it: busybox -> docker.io/library/busybox:latest,
// kanga.test/busybox -> kanga.test/busybox:latest.
// Hosts store image records under this form.
func NormalizeImage(ref string) (string, error) {
	if strings.TrimSpace(ref) == "" {
		return "", fmt.Errorf("image reference is empty: %w", errdefs.ErrInvalidArgument)
	}
	named, err := reference.ParseDockerRef(ref)
	if err != nil {
		return "", fmt.Errorf("invalid image reference %q (%v); use the form [registry/]name[:tag][@digest] in lowercase: %w", ref, err, errdefs.ErrInvalidArgument)
	}
	// Docker's grammar reads "UPPER/case" as registry host UPPER. Hosts are
	// case-insensitive, so such a spelling is a typo far more often than
	// a registry: refuse it rather than store a second name for one host.
	if d := reference.Domain(named); d != strings.ToLower(d) {
		return "", fmt.Errorf("invalid image reference %q: registry host %q must be lowercase: %w", ref, d, errdefs.ErrInvalidArgument)
	}
	return named.String(), nil
}
