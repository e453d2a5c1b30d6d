package cli

import (
	"encoding/csv"
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/client"
)

func newUsageCommand(o *options) *cobra.Command {
	var (
		since, until, by, output string
	)
	cmd := &cobra.Command{
		Use:   "usage",
		Short: "Show metered usage: vCPU- and GiB-seconds promised and used, egress",
		Long: `Show metered usage per tenant (or per instance with --by instance) over a
period: run time, vCPU-seconds and GiB-seconds promised (the instances'
limits) and used (measured), and egress bytes. Hosts measure every second and
report every ~10 seconds, so the last seconds of a running instance show up
shortly after. A tenant sees its own usage; an administrator any tenant's
(--tenant) or, without it, every tenant's.`,
		Example: `  kanga usage --since 1h
  kanga usage --since 2026-03-01T00:00:00Z --by instance -o csv
  kanga --tenant team-a usage --since 7d          # administrators`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			switch output {
			case "", "table", "json", "csv":
			default:
				return fmt.Errorf("invalid -o value %q: expected table, json or csv", output)
			}
			uo := client.UsageOptions{SinceAgo: since, Tenant: o.tenant}
			switch by {
			case "", "tenant":
			case "instance":
				uo.ByInstance = true
			default:
				return fmt.Errorf("invalid --by value %q: expected tenant or instance", by)
			}
			if until != "" {
				t, err := time.Parse(time.RFC3339, until)
				if err != nil {
					return fmt.Errorf("invalid --until %q: an RFC 3339 time such as 2026-03-01T00:00:00Z", until)
				}
				uo.Until = t
			}
			c, err := o.client()
			if err != nil {
				return err
			}
			// --tenant selects whose usage, as a parameter: a deleted
			// tenant's usage stays readable.
			rep, err := c.ForTenant("").Usage(cmd.Context(), uo)
			if err != nil {
				return err
			}
			switch output {
			case "json":
				return writeJSONIndent(cmd.OutOrStdout(), rep)
			case "csv":
				return writeUsageCSV(cmd.OutOrStdout(), rep, uo.ByInstance)
			}
			return writeUsage(cmd.OutOrStdout(), rep, uo.ByInstance)
		},
	}
	cmd.Flags().StringVar(&since, "since", "", "start: a duration before now (1h, 30m, 7d) or an RFC 3339 time (default 24h)")
	cmd.Flags().StringVar(&until, "until", "", "end: an RFC 3339 time (default now)")
	cmd.Flags().StringVar(&by, "by", "tenant", "group by tenant or instance")
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table, json or csv")
	return cmd
}

var usageColumns = []string{"SECONDS", "VCPU-S PROMISED", "VCPU-S USED", "GIB-S PROMISED", "GIB-S USED", "EGRESS BYTES"}

func usageRow(it api.UsageItem) []string {
	f := func(v float64) string { return strconv.FormatFloat(v, 'f', 2, 64) }
	return []string{f(it.Seconds), f(it.VCPUSecondsPromised), f(it.VCPUSecondsUsed), f(it.GiBSecondsPromised), f(it.GiBSecondsUsed),
		strconv.FormatUint(it.EgressBytes, 10)}
}

func writeUsage(w io.Writer, rep api.UsageReport, byInstance bool) error {
	fmt.Fprintf(w, "usage from %s to %s\n", rep.Since.Local().Format(time.RFC3339), rep.Until.Local().Format(time.RFC3339))
	tw := tabwriter.NewWriter(w, 0, 4, 3, ' ', 0)
	head := "TENANT"
	if byInstance {
		head += "\tINSTANCE\tUID"
	}
	for _, c := range usageColumns {
		head += "\t" + c
	}
	fmt.Fprintln(tw, head)
	for _, it := range rep.Items {
		row := it.Tenant
		if byInstance {
			name := it.Instance
			if !it.Final {
				name += " (running)"
			}
			row += "\t" + name + "\t" + it.UID
		}
		for _, v := range usageRow(it) {
			row += "\t" + v
		}
		fmt.Fprintln(tw, row)
	}
	return tw.Flush()
}

func writeUsageCSV(w io.Writer, rep api.UsageReport, byInstance bool) error {
	cw := csv.NewWriter(w)
	head := []string{"tenant"}
	if byInstance {
		head = append(head, "instance", "uid", "final")
	}
	head = append(head, "seconds", "vcpu_seconds_promised", "vcpu_seconds_used", "gib_seconds_promised", "gib_seconds_used", "egress_bytes", "since", "until")
	if err := cw.Write(head); err != nil {
		return err
	}
	for _, it := range rep.Items {
		row := []string{it.Tenant}
		if byInstance {
			row = append(row, it.Instance, it.UID, strconv.FormatBool(it.Final))
		}
		row = append(row, usageRow(it)...)
		row = append(row, rep.Since.Format(time.RFC3339), rep.Until.Format(time.RFC3339))
		if err := cw.Write(row); err != nil {
			return err
		}
	}
	cw.Flush()
	return cw.Error()
}
