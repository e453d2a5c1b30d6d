package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/kanga-run/kanga/client"
)

func newKillCommand(o *options) *cobra.Command {
	var opts client.KillOptions
	cmd := &cobra.Command{
		Use:   "kill [OPTIONS] NAME [NAME...]",
		Short: "Send a signal to the running containers of instances",
		Long: `Send a signal (SIGKILL unless -s names another) to every running container of
the instances, or to one with -c. As with docker kill, the instance is not
stopped: a container that exits is restarted if its restart policy says so
(use kanga stop to end an instance).`,
		Example: `  kanga kill web
  kanga kill -s HUP -c nginx web`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			return forEachName(cmd.ErrOrStderr(), args, func(name string) error {
				if err := c.KillInstance(cmd.Context(), name, opts); err != nil {
					return err
				}
				fmt.Fprintln(cmd.OutOrStdout(), name)
				return nil
			})
		},
	}
	cmd.Flags().StringVarP(&opts.Signal, "signal", "s", "KILL", "signal to send: a name (KILL, SIGTERM, hup) or a number")
	cmd.Flags().StringVarP(&opts.Container, "container", "c", "", "signal only this container (default: every running one)")
	return cmd
}
