// Package tenant carries the caller's tenant in a context.
//
// Every tenant-scoped operation takes its tenant from the context and fails
// when there is none, as containerd does with namespaces: forgetting to set
// the tenant must never widen a call to "all tenants".
package tenant

import (
	"context"
	"fmt"
	"regexp"

	"github.com/kanga-run/kanga/errdefs"
)

// Default is the tenant of a single-user installation (kanga up).
const Default = "default"

// maxLen is the length limit of a DNS label (RFC 1123).
const maxLen = 63

var labelRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)

// key is unexported so that no other package can forge or read the value
// except through WithName and Name.
type key struct{}

// WithName returns a context that carries the tenant name. It does not
// validate the name: callers validate at the edge (Validate) where the name
// enters the system, and Name rejects an empty one.
func WithName(ctx context.Context, name string) context.Context {
	return context.WithValue(ctx, key{}, name)
}

// Name returns the tenant carried by ctx. It fails with
// errdefs.ErrFailedPrecondition when the context has no tenant.
func Name(ctx context.Context) (string, error) {
	name, _ := ctx.Value(key{}).(string)
	if name == "" {
		return "", fmt.Errorf("no tenant in context: %w", errdefs.ErrFailedPrecondition)
	}
	return name, nil
}

// Validate checks that name is a valid tenant name: a DNS label of at most
// 63 characters, lower-case letters, digits and inner hyphens. Tenant names
// become etcd key segments and host resource names, hence the strict form.
func Validate(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("tenant name must not be empty: %w", errdefs.ErrInvalidArgument)
	case len(name) > maxLen:
		return fmt.Errorf("tenant name %q is %d characters long, the limit is %d: %w",
			name, len(name), maxLen, errdefs.ErrInvalidArgument)
	case !labelRE.MatchString(name):
		return fmt.Errorf("tenant name %q is invalid: use lower-case letters, digits and '-', starting and ending with a letter or digit: %w",
			name, errdefs.ErrInvalidArgument)
	}
	return nil
}
