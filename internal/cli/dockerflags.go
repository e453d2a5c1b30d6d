package cli

import (
	"fmt"

	"github.com/spf13/cobra"
)

// refusedFlag is a docker flag a Kanga verb does not take, with why and
// what to do instead: a docker user gets that rather than cobra's bare
// "unknown flag".
type refusedFlag struct {
	name, short, why string
}

// refusedRunFlags are docker run's flags that kanga run refuses. The
// README's compatibility table lists them.
var refusedRunFlags = []refusedFlag{
	{name: "privileged", why: "instances are never privileged; add single capabilities with --cap-add, within what the tenant's security policy allows"},
	{name: "network", why: "every instance has its own network namespace on the platform's network; what it may reach is the tenant's network policy (kanga tenant update --egress-allow, --ingress-from)"},
	{name: "net", why: "every instance has its own network namespace on the platform's network"},
	{name: "pid", why: "instances never share the host's or another instance's namespaces; the containers of one instance (kanga run -f) share theirs"},
	{name: "ipc", why: "instances never share the host's or another instance's namespaces; the containers of one instance (kanga run -f) share theirs"},
	{name: "uts", why: "instances never share the host's namespaces; the hostname is the instance's name"},
	{name: "userns", why: "instances never share the host's namespaces"},
	{name: "cgroupns", why: "instances never share the host's namespaces"},
	{name: "hostname", why: "the hostname is the instance's name: use --name"},
	{name: "gpus", why: "ask for devices by CDI kind: --device nvidia.com/gpu=2 (see kanga host ls -o json for a host's devices)"},
	{name: "mount", why: "mount volumes with -v NAME:/PATH (a persistent volume, or one the -f file declares) or --tmpfs"},
	{name: "interactive", short: "i", why: "run attaches to the output only; start it with -d, then kanga exec -it NAME sh"},
	{name: "tty", short: "t", why: "run attaches to the output only; start it with -d, then kanga exec -it NAME sh"},
	{name: "cpus", why: "use --cpu, e.g. --cpu 0.5 (or --cpu-limit for a cap above the reservation)"},
	{name: "platform", why: "instances run on the hosts' architecture"},
	{name: "pull", why: "images are imported or pulled first: kanga image import, kanga image pull"},
}

// refusedExecFlags are docker exec's flags that kanga exec refuses.
var refusedExecFlags = []refusedFlag{
	{name: "privileged", why: "instances are never privileged, and neither is what runs in them"},
	{name: "detach", short: "d", why: "exec runs attached; start background work in the instance's own command"},
	{name: "user", short: "u", why: "a command runs as its container's user"},
}

// refuseFlags registers flags as hidden flags that, when given, fail the
// verb with their reason.
func refuseFlags(cmd *cobra.Command, flags []refusedFlag) {
	fl := cmd.Flags()
	for _, r := range flags {
		if fl.Lookup(r.name) != nil || (r.short != "" && fl.ShorthandLookup(r.short) != nil) {
			panic(fmt.Sprintf("kanga %s: refused flag --%s is a flag of the verb", cmd.Name(), r.name))
		}
		// A string with a default when bare, so that both --privileged
		// and --network=host parse, and are refused.
		fl.StringP(r.name, r.short, "", r.why)
		fl.Lookup(r.name).NoOptDefVal = "true"
		_ = fl.MarkHidden(r.name)
	}
	prev := cmd.PreRunE
	cmd.PreRunE = func(c *cobra.Command, args []string) error {
		for _, r := range flags {
			if c.Flags().Changed(r.name) {
				return fmt.Errorf("docker's --%s is not supported by kanga %s: %s", r.name, c.Name(), r.why)
			}
		}
		if prev != nil {
			return prev(c, args)
		}
		return nil
	}
}
