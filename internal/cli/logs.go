package cli

import (
	"io"

	"github.com/spf13/cobra"

	"github.com/kanga-run/kanga/client"
)

func newLogsCommand(o *options) *cobra.Command {
	var opts client.LogsOptions
	cmd := &cobra.Command{
		Use:   "logs [OPTIONS] NAME",
		Short: "Print the output of an instance's container",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			rc, err := c.Logs(cmd.Context(), args[0], opts)
			if err != nil {
				return err
			}
			defer rc.Close()
			_, err = io.Copy(cmd.OutOrStdout(), rc)
			return err
		},
	}
	cmd.Flags().BoolVarP(&opts.Follow, "follow", "f", false, "keep streaming until the instance ends")
	cmd.Flags().StringVarP(&opts.Container, "container", "c", "", "container name (default: the first)")
	cmd.Flags().BoolVarP(&opts.Previous, "previous", "p", false, "only the output of the run before the container's latest restart")
	return cmd
}
