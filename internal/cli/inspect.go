package cli

import (
	"github.com/spf13/cobra"

	"github.com/kanga-run/kanga/api"
)

// inspected is an instance as inspect prints it: the stored record and,
// while it has a sandbox, a fresh sample of its resource counters.
type inspected struct {
	api.Instance
	Stats *api.InstanceStats `json:"stats,omitempty"`
}

func newInspectCommand(o *options) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "inspect NAME [NAME...]",
		Short: "Show instances in detail, as JSON (with current resource counters)",
		Long: `Show instances in detail: a JSON array of the instances found, as the API
returns them, with a current sample of their counters. Like docker inspect,
what is found is printed and each name that is not is reported; the exit code
is then 1. --format runs on each instance, e.g. '{{.Status.Phase}}'.`,
		Example: `  kanga inspect web --format '{{.UID}} {{.Status.Phase}} {{.Status.IP}}'
  kanga inspect -o yaml web`,
		Args: cobra.MinimumNArgs(1),
	}
	out := addOutputFlags(cmd, false)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		c, err := o.client()
		if err != nil {
			return err
		}
		found := []inspected{}
		err = forEachName(cmd.ErrOrStderr(), args, func(name string) error {
			inst, err := c.GetInstance(cmd.Context(), name)
			if err != nil {
				return err
			}
			item := inspected{Instance: inst}
			// Counters exist only while the sandbox does; their absence
			// is not an error of inspect.
			if inst.Status.Phase == api.PhaseRunning {
				if st, err := c.Stats(cmd.Context(), name); err == nil {
					item.Stats = &st
				}
			}
			found = append(found, item)
			return nil
		})
		if werr := printFound(cmd, out, found, func(i inspected) string { return i.Name }); werr != nil {
			return werr
		}
		return err
	}
	return cmd
}

// printFound prints what an inspect verb found. Nothing found prints
// nothing, not docker's "[]": the errors say what was missing.
func printFound[T any](cmd *cobra.Command, out *outputFlags, found []T, name func(T) string) error {
	if len(found) == 0 {
		return nil
	}
	v := view{data: found, items: itemsOf(found)}
	for _, f := range found {
		v.names = append(v.names, name(f))
	}
	return out.print(cmd.OutOrStdout(), v)
}
