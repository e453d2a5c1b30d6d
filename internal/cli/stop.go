package cli

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"
)

func newStopCommand(o *options) *cobra.Command {
	var seconds int
	cmd := &cobra.Command{
		Use:   "stop [OPTIONS] NAME [NAME...]",
		Short: "Stop instances",
		Long:  "Stop every container of the instances: SIGTERM, then SIGKILL after the grace period. Stopped instances are not restarted.",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if seconds < 0 {
				return fmt.Errorf("invalid -t value %d: expected seconds >= 0", seconds)
			}
			c, err := o.client()
			if err != nil {
				return err
			}
			return forEachName(cmd.ErrOrStderr(), args, func(name string) error {
				if _, err := c.StopInstance(cmd.Context(), name, time.Duration(seconds)*time.Second); err != nil {
					return err
				}
				fmt.Fprintln(cmd.OutOrStdout(), name)
				return nil
			})
		},
	}
	cmd.Flags().IntVarP(&seconds, "time", "t", 10, "seconds to wait after SIGTERM before killing")
	return cmd
}
