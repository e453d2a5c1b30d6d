package cli

import (
	"errors"

	"github.com/spf13/pflag"

	"github.com/kanga-run/kanga/internal/model"
)

// policyFlags are the operator's flags, shared by kanga up, server and
// agent, that bound what tenants may do on the platform: where instances
// publish ports, and what an administrator may allow a tenant beyond the
// default sandbox.
type policyFlags struct {
	addresses  []string
	portRange  string
	reserved   []int
	caps       []string
	unconfined bool
	escalation bool
}

func (p *policyFlags) register(f *pflag.FlagSet) {
	f.StringSliceVar(&p.addresses, "host-port-addresses", nil, "host addresses or CIDRs instances may publish ports on, e.g. 127.0.0.1,10.0.0.0/8 (default: every address of the host)")
	f.StringVar(&p.portRange, "host-port-range", model.DefaultPortRange.String(), "host ports instances may publish; include ports below 1024 to allow privileged ones, e.g. 80-65535")
	f.IntSliceVar(&p.reserved, "host-port-reserved", nil, "more host ports never published, on any address (the platform's own ports, etcd's 2379 and 2380 and every port a host process listens on are refused anyway)")
	f.StringSliceVar(&p.caps, "tenant-allowed-caps", nil, "capabilities an administrator may allow a tenant's containers to add beyond the default set, e.g. NET_ADMIN (default: none)")
	f.BoolVar(&p.unconfined, "tenant-allow-unconfined", false, "let an administrator allow a tenant's containers to run without seccomp")
	f.BoolVar(&p.escalation, "tenant-allow-privilege-escalation", false, "let an administrator allow a tenant's containers to run without no_new_privs (allowPrivilegeEscalation)")
}

// policies returns the port policy and security bounds the flags give.
func (p *policyFlags) policies() (model.PortPolicy, model.SecurityBounds, error) {
	ports := model.DefaultPortPolicy()
	var errs []error
	r, err := model.ParsePortRange("--host-port-range", p.portRange)
	errs = append(errs, err)
	ports.Range = r
	if len(p.addresses) > 0 {
		ports.Addresses, err = model.ParseAddresses("--host-port-addresses", p.addresses)
		errs = append(errs, err)
	}
	ports.Reserve("--host-port-reserved", p.reserved...)
	caps, err := model.ParseCapabilities("--tenant-allowed-caps", p.caps)
	errs = append(errs, err)
	return ports, model.SecurityBounds{Capabilities: caps, Unconfined: p.unconfined, PrivilegeEscalation: p.escalation}, errors.Join(errs...)
}
