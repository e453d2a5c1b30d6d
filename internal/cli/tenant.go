package cli

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/internal/model"
)

func newTenantCommand(o *options) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "tenant",
		Short: "Manage tenants and their runtime policy (administrators)",
	}
	var (
		req       api.CreateTenantRequest
		quotaFlag string
		netFlags  tenantNetFlags
		sec       tenantSecurityFlags
		newSec    tenantSecurityFlags
	)
	create := &cobra.Command{
		Use:   "create NAME",
		Short: "Create a tenant and print its bearer token (shown only once)",
		Example: `  kanga tenant create untrusted --allowed-runtimes gvisor
  KANGA_TOKEN=<printed token> kanga run kanga.test/busybox echo sandboxed
  kanga tenant create team-a --egress-deny 10.0.0.0/8 --egress-deny 0.0.0.0/0:25/tcp --ingress-from team-b`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			req.Name = args[0]
			if cmd.Flags().Changed("quota") {
				q, err := model.ParseQuota(quotaFlag)
				if err != nil {
					return fmt.Errorf("--quota: %w", err)
				}
				req.Quota = q
			}
			if p := netFlags.policy(); p != nil {
				req.Network = p
			}
			if s := sec.policy(); s != nil {
				req.Security = s
			}
			out, err := c.CreateTenant(cmd.Context(), req)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), out.Token)
			return nil
		},
	}
	create.Flags().StringVar(&req.DefaultRuntime, "default-runtime", "", "runtime class of instances that name none (default: the first allowed, or runc)")
	create.Flags().StringSliceVar(&req.AllowedRuntimes, "allowed-runtimes", nil, "runtime classes the tenant may use (default: all)")
	create.Flags().StringVar(&req.SchedulingPolicy, "scheduling-policy", "", "default placement of the tenant's instances: binpack or spread (default binpack)")
	create.Flags().StringVar(&req.DefaultInstanceType, "default-type", "", "instance type filling in what the tenant's instances leave empty (default: the platform's; none for no limits)")
	create.Flags().StringVar(&quotaFlag, "quota", "", `quota, e.g. "instances=10,cpu=8,memory=16Gi" (fields given replace the platform's default quota for new tenants)`)
	netFlags.add(create)
	sec.register(create)

	security := &cobra.Command{
		Use:   "security NAME",
		Short: "Replace a tenant's security policy: where it publishes ports, what its containers may add",
		Long: `Replace a tenant's security policy. Flags left out return to the platform's
defaults: ports on the addresses and in the range the operator allows, the default
capability set, seccomp always on. An administrator can narrow the ports, and loosen
the sandbox only within what the operator allows (kanga up|server|agent
--tenant-allowed-caps, --tenant-allow-unconfined). Running instances keep what they
were admitted with.`,
		Example: `  kanga tenant security team-a --host-ips 127.0.0.1 --host-ports 8000-8999
  kanga tenant security lab --allow-caps NET_ADMIN,SYS_PTRACE --allow-unconfined
  kanga tenant security team-a          # back to the defaults`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			p := newSec.policy()
			if p == nil {
				p = &api.TenantSecurity{}
			}
			t, err := c.SetTenantSecurity(cmd.Context(), args[0], *p)
			if err != nil {
				return err
			}
			return writeJSONIndent(cmd.OutOrStdout(), t)
		},
	}
	newSec.register(security)

	ls := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List tenants",
		Args:    cobra.NoArgs,
	}
	lsOut := addOutputFlags(ls, true)
	ls.RunE = func(cmd *cobra.Command, args []string) error {
		c, err := o.client()
		if err != nil {
			return err
		}
		ts, err := c.ListTenants(cmd.Context())
		if err != nil {
			return err
		}
		return lsOut.print(cmd.OutOrStdout(), listView(api.TenantList{Items: ts}, ts,
			func(t api.Tenant) string { return t.Name },
			func(w io.Writer, _ bool) error {
				tw := tabwriter.NewWriter(w, 0, 4, 3, ' ', 0)
				fmt.Fprintln(tw, "NAME\tDEFAULT RUNTIME\tALLOWED RUNTIMES")
				for _, t := range ts {
					allowed := strings.Join(t.AllowedRuntimes, ",")
					if allowed == "" {
						allowed = "all"
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\n", t.Name, t.DefaultRuntime, allowed)
				}
				return tw.Flush()
			}))
	}
	rm := &cobra.Command{
		Use:   "rm NAME...",
		Short: "Delete tenants that have no instances, revoking their tokens",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			return forEachName(cmd.ErrOrStderr(), args, func(name string) error {
				if err := c.DeleteTenant(cmd.Context(), name); err != nil {
					return err
				}
				fmt.Fprintln(cmd.OutOrStdout(), name)
				return nil
			})
		},
	}
	cmd.AddCommand(create, newTenantUpdateCommand(o), ls, rm, security, newTenantQuotaCommand(o), newTenantInspectCommand(o))
	return cmd
}

// tenantNetFlags are the network policy flags of tenant create and update.
type tenantNetFlags struct {
	cmd                              *cobra.Command
	egressDeny, egressAllow, ingress []string
}

func (f *tenantNetFlags) add(cmd *cobra.Command) {
	f.cmd = cmd
	fl := cmd.Flags()
	fl.StringArrayVar(&f.egressDeny, "egress-deny", nil, "refuse the tenant's instances this destination, CIDR[:PORT[-PORT]][/tcp|/udp] (repeatable; wins over --egress-allow)")
	fl.StringArrayVar(&f.egressAllow, "egress-allow", nil, "allow only these destinations outside the platform, CIDR[:PORT[-PORT]][/tcp|/udp] (repeatable; none given: all)")
	fl.StringArrayVar(&f.ingress, "ingress-from", nil, "let this tenant's instances open connections to this tenant's (repeatable)")
}

// policy is what the flags say, nil when none was given.
func (f *tenantNetFlags) policy() *api.TenantNetworkPolicy {
	fl := f.cmd.Flags()
	if !fl.Changed("egress-deny") && !fl.Changed("egress-allow") && !fl.Changed("ingress-from") {
		return nil
	}
	return &api.TenantNetworkPolicy{EgressDeny: nonEmpty(f.egressDeny), EgressAllow: nonEmpty(f.egressAllow), IngressFrom: nonEmpty(f.ingress)}
}

// merge applies the flags given to p: each list given replaces p's.
func (f *tenantNetFlags) merge(p api.TenantNetworkPolicy) api.TenantNetworkPolicy {
	fl := f.cmd.Flags()
	if fl.Changed("egress-deny") {
		p.EgressDeny = nonEmpty(f.egressDeny)
	}
	if fl.Changed("egress-allow") {
		p.EgressAllow = nonEmpty(f.egressAllow)
	}
	if fl.Changed("ingress-from") {
		p.IngressFrom = nonEmpty(f.ingress)
	}
	return p
}

// nonEmpty drops the empty values "--egress-deny=" leaves, which clear a
// list.
func nonEmpty(in []string) []string {
	var out []string
	for _, s := range in {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

func newTenantUpdateCommand(o *options) *cobra.Command {
	var netFlags tenantNetFlags
	cmd := &cobra.Command{
		Use:   "update NAME",
		Short: "Change a tenant's network policy; running instances get it within about a second",
		Long: `Change a tenant's network policy. Each list flag given replaces that list
(repeat the flag for several entries; give it empty, e.g. --egress-allow=, to
clear the list); lists not named stay as they are.

By default a tenant's instances reach each other and the outside, never other
tenants' instances or the hosts' own services. --egress-deny refuses
destinations, --egress-allow makes the listed ones the only reachable outside
(deny wins), --ingress-from lets the named tenants' instances connect in.
Destinations: CIDR[:PORT[-PORT]][/tcp|/udp]; a port without a protocol means
tcp and udp, no port every protocol.`,
		Example: `  kanga tenant update team-a --egress-allow 10.20.0.0/16:443/tcp --egress-allow 10.20.0.53:53
  kanga tenant update team-a --ingress-from team-b --ingress-from team-c
  kanga tenant update team-a --egress-allow= --egress-deny=     # back to the default`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if netFlags.policy() == nil {
				return fmt.Errorf("nothing to change: give --egress-deny, --egress-allow or --ingress-from")
			}
			c, err := o.client()
			if err != nil {
				return err
			}
			cur, err := c.GetTenantNetwork(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			t, err := c.SetTenantNetwork(cmd.Context(), args[0], netFlags.merge(cur))
			if err != nil {
				return err
			}
			printTenantNetwork(cmd.OutOrStdout(), t)
			return nil
		},
	}
	netFlags.add(cmd)
	return cmd
}

func printTenantNetwork(w io.Writer, t api.Tenant) {
	p := api.TenantNetworkPolicy{}
	if t.Network != nil {
		p = *t.Network
	}
	list := func(l []string, none string) string {
		if len(l) == 0 {
			return none
		}
		return strings.Join(l, ", ")
	}
	fmt.Fprintf(w, "%s\n  egress deny:   %s\n  egress allow:  %s\n  ingress from:  %s\n", t.Name,
		list(p.EgressDeny, "none"), list(p.EgressAllow, "all outside the platform"), list(p.IngressFrom, "its own instances only"))
}

// tenantSecurityFlags set a tenant's security policy.
type tenantSecurityFlags struct {
	hostIPs    []string
	hostPorts  string
	caps       []string
	unconfined bool
	escalation bool
}

func (f *tenantSecurityFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringSliceVar(&f.hostIPs, "host-ips", nil, "host addresses or CIDRs the tenant may publish ports on, within the operator's (default: the operator's)")
	fl.StringVar(&f.hostPorts, "host-ports", "", "host port range the tenant may publish, FROM-TO within the operator's (default: the operator's)")
	fl.StringSliceVar(&f.caps, "allow-caps", nil, "capabilities the tenant's containers may add beyond the default set, among those the operator allows")
	fl.BoolVar(&f.unconfined, "allow-unconfined", false, "let the tenant's containers run without seccomp, if the operator allows it")
	fl.BoolVar(&f.escalation, "allow-privilege-escalation", false, "let the tenant's containers set allowPrivilegeEscalation (no no_new_privs), if the operator allows it")
}

// policy is the policy the flags give; nil when they give none.
func (f *tenantSecurityFlags) policy() *api.TenantSecurity {
	p := &api.TenantSecurity{HostIPs: f.hostIPs, HostPorts: f.hostPorts, AllowedCapabilities: f.caps, AllowUnconfined: f.unconfined, AllowPrivilegeEscalation: f.escalation}
	if len(p.HostIPs) == 0 && p.HostPorts == "" && len(p.AllowedCapabilities) == 0 && !p.AllowUnconfined && !p.AllowPrivilegeEscalation {
		return nil
	}
	return p
}

func newRuntimesCommand(o *options) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "runtimes",
		Short: "List runtime classes, the hosts that run them and whether you may use them",
		Args:  cobra.NoArgs,
	}
	out := addOutputFlags(cmd, true)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		c, err := o.client()
		if err != nil {
			return err
		}
		rs, err := c.ListRuntimes(cmd.Context())
		if err != nil {
			return err
		}
		return out.print(cmd.OutOrStdout(), listView(api.RuntimeClassList{Items: rs}, rs,
			func(r api.RuntimeClass) string { return r.Name },
			func(w io.Writer, wide bool) error {
				tw := tabwriter.NewWriter(w, 0, 4, 3, ' ', 0)
				fmt.Fprintln(tw, "CLASS\tHOSTS\tALLOWED\tDESCRIPTION")
				for _, r := range rs {
					name := r.Name
					if r.Default {
						name += " (default)"
					}
					allowed := "no"
					if r.Allowed {
						allowed = "yes"
					}
					fmt.Fprintf(tw, "%s\t%d\t%s\t%s\n", name, len(r.Hosts), allowed, r.Description)
				}
				return tw.Flush()
			}))
	}
	return cmd
}

func newTenantQuotaCommand(o *options) *cobra.Command {
	var instances, cpu, memory, ports, volumes, devices, disk string
	cmd := &cobra.Command{
		Use:   "quota NAME",
		Short: "Set a tenant's quota (administrators) and show its usage",
		Long: `Set what a tenant's instances may hold at once across the pool; the flags given
change the quota, the others keep their value, "none" removes a limit. cpu and
memory count what instances reserve (--cpu, --memory) and may be a share of the
pool ("50%"); disk counts their ephemeral storage (--disk), an amount. Instances count from their creation until they are removed, finished
ones included. A quota below what the tenant uses stops new instances only.`,
		Example: `  kanga tenant quota a --instances 10 --cpu 8 --memory 16Gi --disk 200Gi
  kanga tenant quota a --cpu none`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			cur, err := c.GetTenantQuota(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			q := cur.Quota
			changed := cmd.Flags().Changed
			for _, f := range []struct {
				name string
				val  string
				dst  **int64
			}{{"instances", instances, &q.Instances}, {"ports", ports, &q.Ports}, {"volumes", volumes, &q.Volumes}, {"devices", devices, &q.Devices}} {
				if !changed(f.name) {
					continue
				}
				if f.val == "none" {
					*f.dst = nil
					continue
				}
				n, err := strconv.ParseInt(f.val, 10, 64)
				if err != nil || n < 0 {
					return fmt.Errorf("--%s %q: give a count, or none for no limit", f.name, f.val)
				}
				*f.dst = &n
			}
			for _, f := range []struct {
				name string
				val  string
				dst  *string
			}{{"cpu", cpu, &q.CPU}, {"memory", memory, &q.Memory}, {"disk", disk, &q.Disk}} {
				if changed(f.name) {
					*f.dst = f.val
					if f.val == "none" {
						*f.dst = ""
					}
				}
			}
			out, err := c.SetTenantQuota(cmd.Context(), args[0], q)
			if err != nil {
				return err
			}
			return printQuota(cmd.OutOrStdout(), out)
		},
	}
	f := cmd.Flags()
	f.StringVar(&instances, "instances", "", "instances at once (none: no limit)")
	f.StringVar(&cpu, "cpu", "", `CPU the instances reserve: cores ("8", "500m") or a share of the pool ("50%")`)
	f.StringVar(&memory, "memory", "", `memory the instances reserve: "16Gi" or a share of the pool ("50%")`)
	f.StringVar(&ports, "ports", "", "published host ports")
	f.StringVar(&volumes, "volumes", "", "volumes (once instances can have them)")
	f.StringVar(&devices, "devices", "", "devices (once instances can have them)")
	f.StringVar(&disk, "disk", "", `ephemeral storage the instances reserve (--disk): "200Gi"`)
	return cmd
}

// tenantInspected is a tenant as tenant inspect prints it with -o json.
type tenantInspected struct {
	api.Tenant
	Usage api.TenantQuota `json:"usage"`
}

func newTenantInspectCommand(o *options) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "inspect NAME",
		Short: "Show a tenant's policy and its usage against its quota",
		Args:  cobra.ExactArgs(1),
	}
	out := addOutputFlags(cmd, false)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		c, err := o.client()
		if err != nil {
			return err
		}
		t, err := c.GetTenant(cmd.Context(), args[0])
		if err != nil {
			return err
		}
		q, err := c.GetTenantQuota(cmd.Context(), args[0])
		if err != nil {
			return err
		}
		return out.print(cmd.OutOrStdout(), view{
			data:  tenantInspected{Tenant: t, Usage: q},
			names: []string{t.Name},
			table: func(w io.Writer, _ bool) error {
				allowed := strings.Join(t.AllowedRuntimes, ",")
				if allowed == "" {
					allowed = "all"
				}
				typ := t.DefaultInstanceType
				if typ == "" {
					typ = "the platform's"
				}
				fmt.Fprintf(w, "Name:              %s\nDefault runtime:   %s\nAllowed runtimes:  %s\nDefault type:      %s\n\n",
					t.Name, t.DefaultRuntime, allowed, typ)
				return printQuota(w, q)
			},
		})
	}
	return cmd
}

// printQuota writes a tenant's usage against its quota, one resource a
// line.
func printQuota(w io.Writer, q api.TenantQuota) error {
	tw := tabwriter.NewWriter(w, 0, 4, 3, ' ', 0)
	fmt.Fprintln(tw, "RESOURCE\tUSED\tLIMIT\tQUOTA")
	row := func(name string, used, limit int64, set string, format func(int64) string) {
		lim := "-"
		if limit != api.Unlimited {
			lim = format(limit)
		}
		if set == "" {
			set = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", name, format(used), lim, set)
	}
	count := func(p *int64) string {
		if p == nil {
			return ""
		}
		return strconv.FormatInt(*p, 10)
	}
	n := func(v int64) string { return strconv.FormatInt(v, 10) }
	row("instances", q.Used.Instances, q.Limits.Instances, count(q.Quota.Instances), n)
	row("cpu", q.Used.MilliCPU, q.Limits.MilliCPU, q.Quota.CPU, model.FormatMilliCPU)
	row("memory", q.Used.MemoryBytes, q.Limits.MemoryBytes, q.Quota.Memory, model.FormatBytes)
	row("ports", q.Used.Ports, q.Limits.Ports, count(q.Quota.Ports), n)
	row("volumes", q.Used.Volumes, q.Limits.Volumes, count(q.Quota.Volumes), n)
	row("devices", q.Used.Devices, q.Limits.Devices, count(q.Quota.Devices), n)
	row("disk", q.Used.DiskBytes, q.Limits.DiskBytes, q.Quota.Disk, model.FormatBytes)
	return tw.Flush()
}
