package model

import (
	"fmt"
	"slices"
	"strings"

	"github.com/kanga-run/kanga/errdefs"
)

// RuntimeClass is a kind of sandbox an instance can run in. Hosts
// advertise the classes they can run; a class that needs a capability no
// host has stays a valid request that waits, Pending, for such a host.
type RuntimeClass struct {
	Name        string `json:"name"`
	Description string `json:"description"`
	// Requires lists host capabilities (hardware or kernel features) a
	// host must advertise to run the class.
	Requires []string `json:"requires,omitempty"`
}

// RuntimeClasses is the platform's catalog, in order of isolation.
var RuntimeClasses = []RuntimeClass{
	{Name: "runc", Description: "runc: namespaces, cgroups and seccomp on the host kernel; for trusted work"},
	{Name: "crun", Description: "crun: like runc, with a faster start; for trusted work"},
	{Name: "gvisor", Description: "gVisor (runsc): a user-space kernel intercepts every system call; for untrusted tenants"},
	{Name: "enclave", Description: "a confidential-computing enclave (rune-like); needs hardware that keeps memory encrypted from the host",
		Requires: []string{"sgx"}},
}

// DefaultRuntimeClass is used when neither the request nor the tenant
// names one.
const DefaultRuntimeClass = "runc"

// LookupRuntimeClass finds a class of the catalog.
func LookupRuntimeClass(name string) (RuntimeClass, bool) {
	for _, c := range RuntimeClasses {
		if c.Name == name {
			return c, true
		}
	}
	return RuntimeClass{}, false
}

// RuntimeClassNames lists the catalog's names.
func RuntimeClassNames() []string {
	names := make([]string, len(RuntimeClasses))
	for i, c := range RuntimeClasses {
		names[i] = c.Name
	}
	return names
}

// ValidateRuntimeClasses checks a list of class names, e.g. a tenant's
// allowed classes.
func ValidateRuntimeClasses(field string, names []string) error {
	for _, n := range names {
		if _, ok := LookupRuntimeClass(n); !ok {
			return fmt.Errorf("%s: runtime class %q is not one of %s: %w", field, n, strings.Join(RuntimeClassNames(), ", "), errdefs.ErrInvalidArgument)
		}
	}
	return nil
}

// Unplaceable explains why no host among the given ones can run class,
// or returns "" when one can. hostClasses maps host name to the classes
// it advertises.
func Unplaceable(class string, hostClasses map[string][]string) string {
	for _, cs := range hostClasses {
		if slices.Contains(cs, class) {
			return ""
		}
	}
	msg := fmt.Sprintf("0/%d hosts offer runtime class %s", len(hostClasses), class)
	if c, ok := LookupRuntimeClass(class); ok && len(c.Requires) > 0 {
		msg += fmt.Sprintf(": it needs host capability %s, which no host advertises", strings.Join(c.Requires, ", "))
	}
	return msg
}
