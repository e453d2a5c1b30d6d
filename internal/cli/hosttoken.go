package cli

import (
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/kanga-run/kanga/api"
)

// newHostTokenCommand is `kanga host token`: join tokens bound to one host.
func newHostTokenCommand(o *options) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Issue, list and revoke join tokens bound to one host name (kanga server)",
		Long: `Issue, list and revoke join tokens bound to one host name. An agent that
joins with such a token gets a certificate for that host and no other, and
cannot take over a name another agent holds. Revoking a token also revokes
the certificates issued with it: the agent link refuses them at once (open
streams are cut), so the host cannot act or join again.`,
	}
	var expires string
	create := &cobra.Command{
		Use:     "create HOST",
		Short:   "Issue a join token for HOST and print it (shown only once)",
		Example: "  kanga host token create h1 --expires 1h\n  kanga agent --join https://10.0.0.1:7421 --token <printed token> --host-name h1",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			out, err := c.CreateJoinToken(cmd.Context(), api.CreateJoinTokenRequest{Host: args[0], Expires: expires})
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), out.Token)
			exp := "never expires"
			if out.JoinToken.ExpiresAt != nil {
				exp = "usable until " + out.JoinToken.ExpiresAt.Local().Format(time.RFC3339)
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "join token %s for host %s, %s\n", out.JoinToken.ID, out.JoinToken.Host, exp)
			return nil
		},
	}
	create.Flags().StringVar(&expires, "expires", "24h", "how long the token may be used to join, e.g. 1h or 7d; 0 for no expiry")
	ls := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List join tokens",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			jts, err := c.ListJoinTokens(cmd.Context())
			if err != nil {
				return err
			}
			return writeJoinTokens(cmd.OutOrStdout(), jts, o.now())
		},
	}
	revoke := &cobra.Command{
		Use:   "revoke ID...",
		Short: "Revoke join tokens and the agent certificates issued with them",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			return forEachName(cmd.ErrOrStderr(), args, func(id string) error {
				jt, err := c.RevokeJoinToken(cmd.Context(), id)
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s (host %s)\n", jt.ID, jt.Host)
				return nil
			})
		},
	}
	cmd.AddCommand(create, ls, revoke)
	return cmd
}

// newHostRevokeCommand is `kanga host revoke`: every credential of a host.
func newHostRevokeCommand(o *options) *cobra.Command {
	return &cobra.Command{
		Use:   "revoke HOST...",
		Short: "Revoke every join token and agent certificate of hosts (kanga server)",
		Long: `Revoke every join token and agent certificate of each host. The agent link
refuses the host from then on: its lease runs out and its instances are
handled as on a lost host. The name can be joined again only with a new
token from kanga host token create.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			return forEachName(cmd.ErrOrStderr(), args, func(name string) error {
				rev, err := c.RevokeHost(cmd.Context(), name)
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s revoked: %d join tokens, %d certificates\n", rev.Host, len(rev.JoinTokens), len(rev.Certificates))
				return nil
			})
		},
	}
}

func writeJoinTokens(w io.Writer, jts []api.JoinToken, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 4, 3, ' ', 0)
	fmt.Fprintln(tw, "ID\tHOST\tJOINS\tCREATED\tEXPIRES")
	for _, jt := range jts {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\n", jt.ID, jt.Host, jt.Joins, ago(now, jt.CreatedAt), expiry(now, jt.ExpiresAt))
	}
	return tw.Flush()
}
