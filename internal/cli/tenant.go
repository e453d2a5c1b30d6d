package cli

import (
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/kanga-run/kanga/api"
)

func newTenantCommand(o *options) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "tenant",
		Short: "Manage tenants and their runtime policy (administrators)",
	}
	var req api.CreateTenantRequest
	create := &cobra.Command{
		Use:   "create NAME",
		Short: "Create a tenant and print its bearer token (shown only once)",
		Example: `  kanga tenant create untrusted --allowed-runtimes gvisor
  KANGA_TOKEN=<printed token> kanga run kanga.test/busybox echo sandboxed`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			req.Name = args[0]
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

	ls := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List tenants",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			ts, err := c.ListTenants(cmd.Context())
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 3, ' ', 0)
			fmt.Fprintln(tw, "NAME\tDEFAULT RUNTIME\tALLOWED RUNTIMES")
			for _, t := range ts {
				allowed := strings.Join(t.AllowedRuntimes, ",")
				if allowed == "" {
					allowed = "all"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\n", t.Name, t.DefaultRuntime, allowed)
			}
			return tw.Flush()
		},
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
	cmd.AddCommand(create, ls, rm)
	return cmd
}

func newRuntimesCommand(o *options) *cobra.Command {
	return &cobra.Command{
		Use:   "runtimes",
		Short: "List runtime classes, the hosts that run them and whether you may use them",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			rs, err := c.ListRuntimes(cmd.Context())
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 3, ' ', 0)
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
		},
	}
}
