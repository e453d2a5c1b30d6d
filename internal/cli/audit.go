package cli

import (
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/client"
)

func newAuditCommand(o *options) *cobra.Command {
	var (
		ao     client.AuditOptions
		output string
	)
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "Show and verify the audit log (administrators)",
		Long: `Show the audit log: every mutating API call and every exec, with who
(the token's ID), the tenant it acted in, what, when, the answer's status
and the request ID (the Kanga-Request-Id header, also in the server's and
the host's log lines). --tenant shows the calls that acted in one tenant.

The log is a hash chain: each record carries the hash of the one before.
--verify checks the whole chain and names every record that was altered,
removed or inserted; it exits with status 1 when any was.`,
		Example: `  kanga audit --since 1h
  kanga audit --tenant team-a -o json
  kanga audit --verify`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if output != "" && output != "json" {
				return fmt.Errorf("invalid -o value %q: expected json", output)
			}
			c, err := o.client()
			if err != nil {
				return err
			}
			ao.Tenant = o.tenant
			list, err := c.ForTenant("").Audit(cmd.Context(), ao)
			if err != nil {
				return err
			}
			if output == "json" {
				if err := writeJSONIndent(cmd.OutOrStdout(), list); err != nil {
					return err
				}
			} else if err := writeAudit(cmd.OutOrStdout(), list.Items); err != nil {
				return err
			}
			if v := list.Verification; v != nil {
				if v.OK {
					fmt.Fprintf(cmd.ErrOrStderr(), "audit log verified: %d records, chain intact\n", v.Records)
					return nil
				}
				for _, p := range v.Problems {
					fmt.Fprintf(cmd.ErrOrStderr(), "record %d: %s\n", p.Seq, p.Problem)
				}
				return &ExitError{Code: 1, Err: fmt.Errorf("audit log verification failed: %d problems in %d records", len(v.Problems), v.Records)}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&ao.Since, "since", "", "only records since: a duration before now (1h, 7d) or an RFC 3339 time")
	cmd.Flags().IntVar(&ao.Limit, "limit", 0, "at most this many records, the newest (default 1000)")
	cmd.Flags().BoolVar(&ao.Verify, "verify", false, "check the whole hash chain and report altered records")
	cmd.Flags().StringVarP(&output, "output", "o", "", "output format: json")
	return cmd
}

func writeAudit(w io.Writer, recs []api.AuditRecord) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SEQ\tTIME\tPRINCIPAL\tTENANT\tVERB\tOBJECT\tSTATUS\tREQUEST ID")
	for _, r := range recs {
		who := r.Principal
		if r.PrincipalName != "" {
			who += " (" + r.PrincipalName + ")"
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%d\t%s\n", r.Seq, r.Time.Local().Format(time.RFC3339), orNone(who), orNone(r.Tenant),
			r.Verb, orNone(r.Object), r.Status, r.RequestID)
	}
	return tw.Flush()
}
