package cli

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/client"
)

func newHostCommand(o *options) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "host",
		Short: "List, cordon and drain the hosts of the pool (administrators)",
	}
	ls := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List hosts with their health, capacity, labels and images",
		Long: `List hosts with their health, capacity, labels and images. IMAGES counts
the images the host reported holding (for all tenants) and, in brackets, the
hot ones (started from since its agent started); -o json lists them.`,
		Args: cobra.NoArgs,
	}
	out := addOutputFlags(ls, true)
	ls.RunE = func(cmd *cobra.Command, args []string) error {
		c, err := o.client()
		if err != nil {
			return err
		}
		hosts, err := c.ListHosts(cmd.Context())
		if err != nil {
			return err
		}
		return out.print(cmd.OutOrStdout(), listView(api.HostList{Items: hosts}, hosts,
			func(h api.Host) string { return h.Name },
			func(w io.Writer, _ bool) error { return writeHosts(w, hosts) }))
	}
	cordon := o.hostStateCommand("cordon HOST...", "Place no new instances on hosts; what runs there keeps running",
		"cordoned", (*client.Client).CordonHost)
	uncordon := o.hostStateCommand("uncordon HOST...", "Let the scheduler place instances on hosts again",
		"uncordoned", (*client.Client).UncordonHost)
	drain := &cobra.Command{
		Use:   "drain HOST...",
		Short: "Cordon hosts and re-create their restartable instances on other hosts",
		Long: `Cordon each host and re-create its instances whose restart policy is Always
or OnFailure, Pending, so that the scheduler places them on other hosts; the
host stops its copies. Instances that would not run again (restart policy
Never, stopped, being removed) stay, and are listed with why.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			return forEachName(cmd.ErrOrStderr(), args, func(name string) error {
				rep, err := c.DrainHost(cmd.Context(), name)
				if err != nil {
					return err
				}
				writeDrain(cmd.OutOrStdout(), rep)
				return nil
			})
		},
	}
	cmd.AddCommand(ls, cordon, uncordon, drain, newHostTokenCommand(o), newHostRevokeCommand(o))
	return cmd
}

func writeHosts(w io.Writer, hosts []api.Host) error {
	tw := tabwriter.NewWriter(w, 0, 4, 3, ' ', 0)
	fmt.Fprintln(tw, "NAME\tSTATUS\tCPUS\tMEMORY\tSTART SLOTS\tRUNTIMES\tLABELS\tIMAGES")
	for _, h := range hosts {
		status := h.Status.Phase
		if h.Status.Condition != "" && h.Status.Phase != api.HostReady {
			// Why the host's instances are kept (LeaseLapsed,
			// SafetyBrake) or were moved (Lost).
			status += "," + h.Status.Condition
		}
		if h.Cordoned {
			status += ",Cordoned"
		}
		var labels []string
		for k, v := range h.Labels {
			labels = append(labels, k+"="+v)
		}
		slices.Sort(labels)
		hot := 0
		for _, img := range h.Images {
			if img.Hot {
				hot++
			}
		}
		// An older agent does not report its slots; the API counts it
		// with the default, and so does this column.
		slots := h.Capacity.StartSlots
		if slots <= 0 {
			slots = api.DefaultStartSlots(h.Capacity.CPUs)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%d\t%s\t%s\t%d (%d hot)\n", h.Name, status, h.Capacity.CPUs, humanSize(h.Capacity.MemoryBytes), slots,
			orNone(strings.Join(h.RuntimeClasses, ",")), orNone(strings.Join(labels, ",")), len(h.Images), hot)
	}
	return tw.Flush()
}

func orNone(s string) string {
	if s == "" {
		return "<none>"
	}
	return s
}

func writeDrain(w io.Writer, rep api.DrainReport) {
	fmt.Fprintf(w, "%s cordoned; %d instances moved, %d stay\n", rep.Host, len(rep.Moved), len(rep.Remaining))
	for _, m := range rep.Moved {
		fmt.Fprintf(w, "  moved   %s\n", m)
	}
	for _, r := range rep.Remaining {
		fmt.Fprintf(w, "  stays   %s: %s\n", r.Instance, r.Reason)
	}
}

// hostStateCommand is cordon or uncordon: one call per named host, and a
// line saying what became of it.
func (o *options) hostStateCommand(use, short, done string, call func(*client.Client, context.Context, string) (api.Host, error)) *cobra.Command {
	return &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			return forEachName(cmd.ErrOrStderr(), args, func(name string) error {
				if _, err := call(c, cmd.Context(), name); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s %s\n", name, done)
				return nil
			})
		},
	}
}
