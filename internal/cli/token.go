package cli

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/kanga-run/kanga/api"
)

func newTokenCommand(o *options) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Create, list and revoke bearer tokens of your tenant",
		Long: `Create, list and revoke bearer tokens of your tenant (an administrator:
of any tenant, with --tenant).

Scopes: instances:read, instances:write, exec, images:read, images:write,
usage:read, tokens:read, tokens:write, secrets:read, secrets:write,
secrets:reveal, configs:read, configs:write; an administrator's also tenants:admin,
hosts:read, hosts:write, audit:read and metrics:read. "all" stands for every tenant scope,
"read-only" for every :read scope you hold. A token never gets a scope the
token that creates it lacks, and never outlives it.`,
	}
	var req api.CreateTokenRequest
	create := &cobra.Command{
		Use:   "create",
		Short: "Create a token and print its secret (shown only once)",
		Example: `  kanga token create --name ci --scope instances:read,instances:write --expires 24h
  kanga token create --name dashboard --scope read-only
  kanga --tenant team-a token create --name deploy      # administrators`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			out, err := c.CreateToken(cmd.Context(), req)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), out.Secret)
			exp := "never expires"
			if out.Token.ExpiresAt != nil {
				exp = "expires " + out.Token.ExpiresAt.Local().Format(time.RFC3339)
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "token %s of tenant %s, scopes %s, %s\n", out.Token.ID, out.Token.Tenant, strings.Join(out.Token.Scopes, ","), exp)
			return nil
		},
	}
	create.Flags().StringVar(&req.Name, "name", "", "a name for the token, shown by ls")
	create.Flags().StringSliceVar(&req.Scopes, "scope", nil, "scopes of the token, comma-separated or repeated (default: your token's own)")
	create.Flags().StringVar(&req.Expires, "expires", "", "lifetime, e.g. 24h, 90m or 30d (default: never, or when your token expires)")

	var all bool
	var output string
	ls := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List tokens (never their secrets)",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if output != "" && output != "json" {
				return fmt.Errorf("invalid -o value %q: expected json", output)
			}
			c, err := o.client()
			if err != nil {
				return err
			}
			toks, err := c.ListTokens(cmd.Context(), all)
			if err != nil {
				return err
			}
			if output == "json" {
				return writeJSONIndent(cmd.OutOrStdout(), api.TokenList{Items: toks})
			}
			return writeTokens(cmd.OutOrStdout(), toks, o.now())
		},
	}
	ls.Flags().BoolVarP(&all, "all-tenants", "A", false, "every tenant's tokens (administrators)")
	ls.Flags().StringVarP(&output, "output", "o", "", "output format: json")

	revoke := &cobra.Command{
		Use:   "revoke ID...",
		Short: "Revoke tokens by ID; they are refused (401) from then on",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			return forEachName(cmd.ErrOrStderr(), args, func(id string) error {
				if _, err := c.RevokeToken(cmd.Context(), id); err != nil {
					return err
				}
				fmt.Fprintln(cmd.OutOrStdout(), id)
				return nil
			})
		},
	}
	cmd.AddCommand(create, ls, revoke)
	return cmd
}

func writeTokens(w io.Writer, toks []api.Token, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 4, 3, ' ', 0)
	fmt.Fprintln(tw, "ID\tNAME\tTENANT\tSCOPES\tCREATED\tEXPIRES")
	for _, t := range toks {
		created := ""
		if t.CreatedAt != nil {
			created = ago(now, *t.CreatedAt)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", t.ID, orNone(t.Name), t.Tenant, strings.Join(t.Scopes, ","), created, expiry(now, t.ExpiresAt))
	}
	return tw.Flush()
}

// expiry renders when a token expires, relative to now.
func expiry(now time.Time, at *time.Time) string {
	switch {
	case at == nil:
		return "never"
	case at.After(now):
		return "in " + humanDuration(at.Sub(now))
	}
	return "expired"
}
