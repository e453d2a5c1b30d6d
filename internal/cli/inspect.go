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
	return &cobra.Command{
		Use:   "inspect NAME [NAME...]",
		Short: "Show instances in detail, as JSON (with current resource counters)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			found := []inspected{}
			// Like docker: print what was found, report the rest, exit 1.
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
			if werr := writeJSONIndent(cmd.OutOrStdout(), found); werr != nil {
				return werr
			}
			return err
		},
	}
}
