package cli

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/internal/model"
)

func newStatsCommand(o *options) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "stats NAME",
		Short: "Show an instance's resource use: CPU, memory, pids, disk and network counters",
		Long: `Show an instance's resource use. Two samples a second apart give the rates
(CPU cores in use, disk and network per second); -o json|yaml and --format
print one raw sample (--json is -o json).`,
		Args: cobra.ExactArgs(1),
	}
	out := addOutputFlags(cmd, false)
	out.addJSONAlias(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		c, err := o.client()
		if err != nil {
			return err
		}
		ctx := cmd.Context()
		a, err := c.Stats(ctx, args[0])
		if err != nil {
			return err
		}
		v := view{data: a, names: []string{args[0]}}
		if out.output == "" || out.output == "table" || out.wide() {
			// Only the table shows rates, which need a second sample.
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(time.Second):
			}
			b, err := c.Stats(ctx, args[0])
			if err != nil {
				return err
			}
			v.table = func(w io.Writer, _ bool) error { return writeStats(w, args[0], a, b) }
		}
		return out.print(cmd.OutOrStdout(), v)
	}
	return cmd
}

func writeStats(w io.Writer, name string, a, b api.InstanceStats) error {
	dt := b.Time.Sub(a.Time).Seconds()
	if dt <= 0 {
		dt = 1
	}
	rate := func(x, y uint64) float64 {
		if y < x {
			return 0
		}
		return float64(y-x) / dt
	}
	tw := tabwriter.NewWriter(w, 0, 4, 3, ' ', 0)
	fmt.Fprintln(tw, "NAME\tCPU\tTHROTTLED\tMEM\tPEAK\tLIMIT\tOOM\tPIDS\tDISK R/W\tNET RX/TX")
	limit := "-"
	if b.MemoryLimit > 0 {
		limit = binaryBytes(int64(b.MemoryLimit))
	}
	pids := fmt.Sprint(b.Pids)
	if b.PidsLimit > 0 {
		pids += "/" + fmt.Sprint(b.PidsLimit)
	}
	throttled := "0%"
	if p := b.CPUPeriods - a.CPUPeriods; b.CPUPeriods > a.CPUPeriods && p > 0 {
		throttled = fmt.Sprintf("%.0f%%", 100*float64(b.CPUThrottledPeriods-a.CPUThrottledPeriods)/float64(p))
	}
	fmt.Fprintf(tw, "%s\t%.2f cores\t%s\t%s\t%s\t%s\t%d\t%s\t%s/s %s/s\t%s/s %s/s\n",
		name, rate(a.CPUUsageNanos, b.CPUUsageNanos)/1e9, throttled,
		binaryBytes(int64(b.MemoryUsage)), binaryBytes(int64(b.MemoryPeak)), limit, b.OOMKills, pids,
		binaryBytes(int64(rate(a.DiskReadBytes, b.DiskReadBytes))), binaryBytes(int64(rate(a.DiskWriteBytes, b.DiskWriteBytes))),
		humanBits(rate(a.NetRxBytes, b.NetRxBytes)*8), humanBits(rate(a.NetTxBytes, b.NetTxBytes)*8))
	if len(b.Storage) > 0 {
		fmt.Fprintln(tw)
		fmt.Fprintln(tw, "STORAGE	KIND	USED	LIMIT	USE%")
		for _, st := range b.Storage {
			kind := st.Kind
			if st.Medium != "" {
				kind += " (" + st.Medium + ")"
			}
			pct := 0.0
			if st.Limit > 0 {
				pct = 100 * float64(st.Used) / float64(st.Limit)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%.0f%%\n", st.Name, kind, binaryBytes(int64(st.Used)), binaryBytes(int64(st.Limit)), pct)
		}
	}
	return tw.Flush()
}

// binaryBytes renders memory and disk sizes in the binary units specs
// are written in ("512Mi", "10.5Mi"), so that a limit reads as it was
// given; under 1Ki, in bytes.
func binaryBytes(n int64) string {
	if n < 1<<10 {
		return fmt.Sprintf("%dB", n)
	}
	return model.FormatBytes(n)
}

func humanBits(bps float64) string {
	switch {
	case bps >= 1e9:
		return fmt.Sprintf("%.1fGbit", bps/1e9)
	case bps >= 1e6:
		return fmt.Sprintf("%.1fMbit", bps/1e6)
	case bps >= 1e3:
		return fmt.Sprintf("%.1fkbit", bps/1e3)
	}
	return fmt.Sprintf("%.0fbit", bps)
}

func newSLACommand(o *options) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "sla NAME",
		Short: "Show, for each promised resource, whether the instance got what it was promised",
		Args:  cobra.ExactArgs(1),
	}
	out := addOutputFlags(cmd, false)
	out.addJSONAlias(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		c, err := o.client()
		if err != nil {
			return err
		}
		r, err := c.SLA(cmd.Context(), args[0])
		if err != nil {
			return err
		}
		return out.print(cmd.OutOrStdout(), view{data: r, names: []string{args[0]}, table: func(w io.Writer, _ bool) error {
			tw := tabwriter.NewWriter(w, 0, 4, 3, ' ', 0)
			fmt.Fprintf(tw, "RESOURCE\tPROMISED\tDELIVERED\tKEPT\tDETAIL\n")
			for _, it := range r.Items {
				kept := "yes"
				if !it.Kept {
					kept = "NO"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", it.Resource, it.Promised, it.Delivered, kept, it.Detail)
			}
			if len(r.Items) == 0 {
				fmt.Fprintln(tw, "(no resource promises in this instance's spec)")
			}
			return tw.Flush()
		}})
	}
	return cmd
}

func newTypesCommand(o *options) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "types",
		Short: "List the instance types (named bundles of resources for --type)",
		Args:  cobra.NoArgs,
	}
	out := addOutputFlags(cmd, true)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		c, err := o.client()
		if err != nil {
			return err
		}
		ts, err := c.ListTypes(cmd.Context())
		if err != nil {
			return err
		}
		return out.print(cmd.OutOrStdout(), listView(api.InstanceTypeList{Items: ts}, ts,
			func(t api.InstanceType) string { return t.Name },
			func(w io.Writer, _ bool) error { return writeTypes(w, ts) }))
	}
	return cmd
}

func writeTypes(w io.Writer, ts []api.InstanceType) error {
	tw := tabwriter.NewWriter(w, 0, 4, 3, ' ', 0)
	fmt.Fprintln(tw, "TYPE\tCPU\tMEMORY\tPIDS\tBANDWIDTH IN/OUT\tDISK\tLOGS\tDESCRIPTION")
	for _, t := range ts {
		r := t.Resources
		cpu := r.CPU
		switch {
		case r.CPUPolicy == "dedicated":
			cpu += " dedicated"
		case cpu == "" && r.CPULimit != "":
			cpu = "0-" + r.CPULimit // nothing reserved, capped
		}
		logs := "-"
		if r.LogSize != "" {
			logs = fmt.Sprintf("%s x %d", r.LogSize, r.LogFiles)
		}
		var disk []string
		if r.DiskReadBPS != "" || r.DiskWriteBPS != "" {
			disk = append(disk, fmt.Sprintf("%s/%s per s", orDash(r.DiskReadBPS), orDash(r.DiskWriteBPS)))
		}
		if r.DiskReadIOPS > 0 || r.DiskWriteIOPS > 0 {
			disk = append(disk, fmt.Sprintf("%d/%d iops", r.DiskReadIOPS, r.DiskWriteIOPS))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s/%s\t%s\t%s\t%s\n", t.Name, cpu, r.Memory, r.Pids,
			orDash(r.IngressBandwidth), orDash(r.EgressBandwidth), orDash(strings.Join(disk, ", ")), logs, t.Description)
	}
	return tw.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
