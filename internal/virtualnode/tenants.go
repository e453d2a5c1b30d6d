package virtualnode

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/client"
	"github.com/kanga-run/kanga/errdefs"
)

// maxTenant is the longest tenant name Kanga accepts (a DNS label).
const maxTenant = 63

// TenantName is the Kanga tenant of a namespace when each namespace has
// its own: prefix+namespace, shortened with a hash suffix when that is
// longer than a tenant name may be. Namespace names are DNS labels
// already, so no other rewriting is needed.
func TenantName(prefix, namespace string) string {
	name := prefix + namespace
	if len(name) <= maxTenant {
		return name
	}
	sum := sha256.Sum256([]byte(namespace))
	suffix := hex.EncodeToString(sum[:])[:8]
	return strings.TrimRight(name[:maxTenant-len(suffix)-1], "-") + "-" + suffix
}

// tenancy maps namespaces to the Kanga clients that act in their tenants.
// With perNamespace off every namespace shares the token's tenant. With it
// on, namespace N runs in tenant prefix+N, which the virtual node creates
// on first use; the token must be an administrator's, which acts in the
// tenant through the Kanga-Tenant header.
type tenancy struct {
	base         *client.Client
	perNamespace bool
	prefix       string

	// policyFor, if set, is the network policy a namespace's tenant gets
	// when the node creates it (from the namespace's NetworkPolicies).
	policyFor func(namespace string) *api.TenantNetworkPolicy

	mu sync.Mutex
	// created holds the tenants known to exist.
	created map[string]bool
}

func newTenancy(base *client.Client, perNamespace bool, prefix string) *tenancy {
	return &tenancy{base: base, perNamespace: perNamespace, prefix: prefix, created: map[string]bool{}}
}

// client returns the client for the namespace's tenant, for reads and
// deletes: a tenant that does not exist makes them fail NotFound.
func (t *tenancy) client(namespace string) *client.Client {
	if !t.perNamespace {
		return t.base
	}
	return t.base.ForTenant(TenantName(t.prefix, namespace))
}

// ensure returns the client for the namespace's tenant, creating the
// tenant first if it does not exist yet.
func (t *tenancy) ensure(ctx context.Context, namespace string) (*client.Client, error) {
	if !t.perNamespace {
		return t.base, nil
	}
	name := TenantName(t.prefix, namespace)
	t.mu.Lock()
	done := t.created[name]
	t.mu.Unlock()
	if !done {
		req := api.CreateTenantRequest{Name: name}
		if t.policyFor != nil {
			req.Network = t.policyFor(namespace)
		}
		_, err := t.base.CreateTenant(ctx, req)
		switch {
		case err == nil, errors.Is(err, errdefs.ErrAlreadyExists):
		case errors.Is(err, errdefs.ErrPermissionDenied):
			return nil, fmt.Errorf("create tenant %s for namespace %s: --tenant-per-namespace needs an administrator's Kanga token: %w", name, namespace, err)
		default:
			return nil, fmt.Errorf("create tenant %s for namespace %s: %w", name, namespace, err)
		}
		t.mu.Lock()
		t.created[name] = true
		t.mu.Unlock()
	}
	return t.base.ForTenant(name), nil
}

// all returns a client for every tenant this node may have instances in:
// the token's, or every tenant with the prefix.
func (t *tenancy) all(ctx context.Context) ([]*client.Client, error) {
	if !t.perNamespace {
		return []*client.Client{t.base}, nil
	}
	tenants, err := t.base.ListTenants(ctx)
	if err != nil {
		return nil, fmt.Errorf("list tenants: %w", err)
	}
	var out []*client.Client
	for _, tn := range tenants {
		if strings.HasPrefix(tn.Name, t.prefix) {
			out = append(out, t.base.ForTenant(tn.Name))
		}
	}
	return out, nil
}

// listInstances lists the instances of the namespaces' tenants (of every
// tenant of the node when namespaces is nil).
func (t *tenancy) listInstances(ctx context.Context, namespaces map[string]bool) ([]api.Instance, error) {
	var clients []*client.Client
	switch {
	case !t.perNamespace:
		clients = []*client.Client{t.base}
	case namespaces == nil:
		var err error
		if clients, err = t.all(ctx); err != nil {
			return nil, err
		}
	default:
		for ns := range namespaces {
			clients = append(clients, t.client(ns))
		}
	}
	var out []api.Instance
	for _, c := range clients {
		insts, err := c.ListInstances(ctx)
		if errors.Is(err, errdefs.ErrNotFound) {
			// The tenant is not created yet (or was removed).
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, insts...)
	}
	return out, nil
}
