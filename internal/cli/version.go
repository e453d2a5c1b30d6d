package cli

import (
	"fmt"
	"runtime"

	"github.com/spf13/cobra"
)

func newVersionCommand(o *options) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Show the client and server versions",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "Client:\n Version:     %s\n Go version:  %s\n OS/Arch:     %s/%s\n",
				Version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
			c, err := o.client()
			if err != nil {
				return err
			}
			v, err := c.Version(cmd.Context())
			if err != nil {
				return err
			}
			fmt.Fprintf(w, "\nServer:\n Address:     %s\n Version:     %s\n Tenant:      %s\n", c.Addr(), v.Version, v.Tenant)
			return nil
		},
	}
}
