package cli

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/client"
)

func newWaitCommand(o *options) *cobra.Command {
	return &cobra.Command{
		Use:   "wait NAME [NAME...]",
		Short: "Block until instances end, then print their exit codes",
		Long: `Block until each instance ends (Succeeded or Failed), then print its exit
code: the first non-zero one of its containers, else 0. An instance whose
restart policy restarts its containers ends only when it is stopped.
NAME may also be an instance's UID or a unique prefix of it.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			return forEachName(cmd.ErrOrStderr(), args, func(name string) error {
				inst, err := c.WaitInstance(cmd.Context(), name, client.WaitTerminal)
				if err != nil {
					return err
				}
				code, ok := exitCode(inst.Status)
				if !ok && inst.Status.Phase == api.PhaseFailed {
					// Failed before any container ran: there is no
					// code to print.
					return errors.New(failureText(inst))
				}
				fmt.Fprintln(cmd.OutOrStdout(), code)
				return nil
			})
		},
	}
}
