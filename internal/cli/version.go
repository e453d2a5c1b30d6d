package cli

import (
	"fmt"
	"io"
	"runtime"

	"github.com/spf13/cobra"
)

// versions is what version prints; docker's templates such as
// '{{.Server.Version}}' work on it.
type versions struct {
	Client clientVersion  `json:"client"`
	Server *serverVersion `json:"server,omitempty"`
}

type clientVersion struct {
	Version   string `json:"version"`
	GoVersion string `json:"goVersion"`
	Os        string `json:"os"`
	Arch      string `json:"arch"`
}

type serverVersion struct {
	Address string `json:"address"`
	Version string `json:"version"`
	Tenant  string `json:"tenant"`
}

func newVersionCommand(o *options) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Show the client and server versions",
		Args:  cobra.NoArgs,
	}
	out := addOutputFlags(cmd, false)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		v := versions{Client: clientVersion{Version: Version, GoVersion: runtime.Version(), Os: runtime.GOOS, Arch: runtime.GOARCH}}
		// Like docker, the client's part is printed even when the server
		// cannot be asked.
		var serverErr error
		if c, err := o.client(); err != nil {
			serverErr = err
		} else if sv, err := c.Version(cmd.Context()); err != nil {
			serverErr = err
		} else {
			v.Server = &serverVersion{Address: c.Addr(), Version: sv.Version, Tenant: sv.Tenant}
		}
		if err := out.print(cmd.OutOrStdout(), view{data: v, names: []string{Version}, table: func(w io.Writer, _ bool) error {
			fmt.Fprintf(w, "Client:\n Version:     %s\n Go version:  %s\n OS/Arch:     %s/%s\n",
				v.Client.Version, v.Client.GoVersion, v.Client.Os, v.Client.Arch)
			if v.Server != nil {
				fmt.Fprintf(w, "\nServer:\n Address:     %s\n Version:     %s\n Tenant:      %s\n", v.Server.Address, v.Server.Version, v.Server.Tenant)
			}
			return nil
		}}); err != nil {
			return err
		}
		return serverErr
	}
	return cmd
}
