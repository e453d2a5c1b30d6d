package cli

import (
	"github.com/spf13/cobra"

	"github.com/kanga-run/kanga/api"
)

func newInspectCommand(o *options) *cobra.Command {
	return &cobra.Command{
		Use:   "inspect NAME [NAME...]",
		Short: "Show instances in detail, as JSON",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			found := []api.Instance{}
			// Like docker: print what was found, report the rest, exit 1.
			err = forEachName(cmd.ErrOrStderr(), args, func(name string) error {
				inst, err := c.GetInstance(cmd.Context(), name)
				if err == nil {
					found = append(found, inst)
				}
				return err
			})
			if werr := writeJSONIndent(cmd.OutOrStdout(), found); werr != nil {
				return werr
			}
			return err
		},
	}
}
