package cli

import (
	"fmt"
	"io"
	"sort"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/kanga-run/kanga/api"
)

type psFlags struct {
	all      bool
	quiet    bool
	output   string
	selector string
}

func newPsCommand(o *options) *cobra.Command {
	f := &psFlags{}
	cmd := &cobra.Command{
		Use:   "ps [OPTIONS]",
		Short: "List instances",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if f.output != "" && f.output != "json" && f.output != "wide" {
				return fmt.Errorf("invalid -o value %q: expected json or wide", f.output)
			}
			c, err := o.client()
			if err != nil {
				return err
			}
			items, err := c.ListInstancesSelected(cmd.Context(), f.selector)
			if err != nil {
				return err
			}
			items = filterInstances(items, f.all)
			w := cmd.OutOrStdout()
			switch {
			case f.quiet:
				for _, inst := range items {
					fmt.Fprintln(w, inst.Name)
				}
				return nil
			case f.output == "json":
				return writeJSONIndent(w, api.InstanceList{Items: items})
			default:
				return writePS(w, items, o.now(), f.output == "wide")
			}
		},
	}
	cmd.Flags().BoolVarP(&f.all, "all", "a", false, "show all instances (default shows those not yet ended)")
	cmd.Flags().BoolVarP(&f.quiet, "quiet", "q", false, "only print names")
	cmd.Flags().StringVarP(&f.output, "output", "o", "", "output format: json or wide")
	cmd.Flags().StringVarP(&f.selector, "selector", "l", "", "only instances whose labels match, e.g. app=web,tier!=db or 'env in (a,b)'")
	return cmd
}

// filterInstances drops ended instances unless all, and orders the rest
// newest first, as docker ps does.
func filterInstances(items []api.Instance, all bool) []api.Instance {
	out := make([]api.Instance, 0, len(items))
	for _, inst := range items {
		if all || !inst.Status.Phase.Terminal() {
			out = append(out, inst)
		}
	}
	sort.SliceStable(out, func(i, j int) bool {
		if !out[i].CreatedAt.Equal(out[j].CreatedAt) {
			return out[i].CreatedAt.After(out[j].CreatedAt)
		}
		return out[i].Name < out[j].Name
	})
	return out
}

func writePS(w io.Writer, items []api.Instance, now time.Time, wide bool) error {
	tw := tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)
	header := "NAME\tIMAGE\tSTATUS\tIP\tPORTS\tCREATED"
	if wide {
		header += "\tHOST\tRUNTIME\tRESTARTS\tTENANT"
	}
	fmt.Fprintln(tw, header)
	for _, inst := range items {
		row := fmt.Sprintf("%s\t%s\t%s\t%s\t%s\t%s",
			inst.Name, imageSummary(inst.Spec), statusText(inst, now), inst.Status.IP,
			formatPorts(inst.Spec.Ports), ago(now, inst.CreatedAt))
		if wide {
			row += fmt.Sprintf("\t%s\t%s\t%s\t%s", inst.Status.Host, inst.Spec.Runtime,
				strconv.Itoa(restarts(inst.Status)), inst.Tenant)
		}
		fmt.Fprintln(tw, row)
	}
	return tw.Flush()
}
