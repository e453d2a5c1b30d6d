package cli

import (
	"fmt"

	"github.com/spf13/cobra"
)

func newRmCommand(o *options) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:     "rm [OPTIONS] NAME [NAME...]",
		Aliases: []string{"remove"},
		Short:   "Remove instances",
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			return forEachName(cmd.ErrOrStderr(), args, func(name string) error {
				if err := c.DeleteInstance(cmd.Context(), name, force); err != nil {
					return err
				}
				fmt.Fprintln(cmd.OutOrStdout(), name)
				return nil
			})
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "stop and remove running instances")
	return cmd
}
