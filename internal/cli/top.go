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

func newTopCommand(o *options) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "top NAME",
		Short: "List the processes of an instance",
		Long: `List the processes of a running instance's containers. The host reads them
from its /proc, so the image needs no ps; PIDs and UIDs are those the instance
sees. -q and -o name print the PIDs. docker's ps options after NAME are not
taken.`,
		Example: `  kanga top web
  kanga top web --format '{{.PID}} {{join .Command " "}}'`,
		Args: cobra.ExactArgs(1),
	}
	out := addOutputFlags(cmd, true)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		c, err := o.client()
		if err != nil {
			return err
		}
		procs, err := c.Top(cmd.Context(), args[0])
		if err != nil {
			return err
		}
		v := view{
			data:  api.ProcessList{Items: procs},
			items: itemsOf(procs),
			table: func(w io.Writer, wide bool) error { return writeTop(w, procs, wide) },
		}
		for _, p := range procs {
			v.names = append(v.names, fmt.Sprint(p.PID))
		}
		return out.print(cmd.OutOrStdout(), v)
	}
	return cmd
}

func writeTop(w io.Writer, procs []api.Process, wide bool) error {
	tw := tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)
	fmt.Fprintln(tw, "CONTAINER\tPID\tPPID\tUID\tSTAT\tTIME\tRSS\tCMD")
	for _, p := range procs {
		cmd := strings.Join(p.Command, " ")
		if !wide && len(cmd) > 80 {
			cmd = cmd[:77] + "..."
		}
		cpu := time.Duration(p.CPUMillis) * time.Millisecond
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%s\t%s\t%s\t%s\n", p.Container, p.PID, p.PPID, p.UID, p.State,
			fmt.Sprintf("%d:%02d", int(cpu.Minutes()), int(cpu.Seconds())%60), humanSize(p.RSSBytes), cmd)
	}
	return tw.Flush()
}
