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

func newPsCommand(o *options) *cobra.Command {
	var all bool
	var selector string
	cmd := &cobra.Command{
		Use:   "ps [OPTIONS]",
		Short: "List instances",
		Long: `List instances, newest first. --format runs a Go template on each row, whose
fields are those of psRow: .ID (the UID), .Name, .Image, .Status ("Up 5
seconds"), .State (the phase), .IP, .Ports, .CreatedAt, .RunningFor, .Host,
.Runtime, .Restarts, .Tenant and .Labels; -o json|yaml print the instances as
the API returns them.`,
		Example: `  kanga ps -a --format '{{.Name}} {{.Status}}'
  kanga ps --format 'table {{.ID}}\t{{.Name}}\t{{.State}}'
  kanga ps -o yaml -l app=web`,
		Args: cobra.NoArgs,
	}
	out := addOutputFlags(cmd, true)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		c, err := o.client()
		if err != nil {
			return err
		}
		items, err := c.ListInstancesSelected(cmd.Context(), selector)
		if err != nil {
			return err
		}
		items = filterInstances(items, all)
		now := o.now()
		v := view{
			data: api.InstanceList{Items: items},
			// Not nil: an empty list runs --format on nothing.
			items: make([]any, 0, len(items)),
			table: func(w io.Writer, wide bool) error { return writePS(w, items, now, wide) },
		}
		for _, inst := range items {
			v.names = append(v.names, inst.Name)
			v.items = append(v.items, newPSRow(inst, now))
		}
		return out.print(cmd.OutOrStdout(), v)
	}
	cmd.Flags().BoolVarP(&all, "all", "a", false, "show all instances (default shows those not yet ended)")
	cmd.Flags().StringVarP(&selector, "selector", "l", "", "only instances whose labels match, e.g. app=web,tier!=db or 'env in (a,b)'")
	return cmd
}

// psRow is an instance as ps --format sees it: the table's columns by
// docker's names, so that docker's templates mostly work.
type psRow struct {
	ID         string
	Name       string
	Names      string
	Image      string
	Status     string
	State      string
	IP         string
	Ports      string
	CreatedAt  string
	RunningFor string
	Host       string
	Runtime    string
	Restarts   int
	Tenant     string
	Labels     map[string]string
}

func newPSRow(inst api.Instance, now time.Time) psRow {
	return psRow{
		ID: inst.UID, Name: inst.Name, Names: inst.Name,
		Image: imageSummary(inst.Spec), Status: statusText(inst, now), State: string(inst.Status.Phase),
		IP: inst.Status.IP, Ports: formatPorts(inst.Spec.Ports),
		CreatedAt: inst.CreatedAt.Format(time.RFC3339), RunningFor: humanDuration(now.Sub(inst.CreatedAt)),
		Host: inst.Status.Host, Runtime: inst.Spec.Runtime, Restarts: restarts(inst.Status),
		Tenant: inst.Tenant, Labels: inst.Labels,
	}
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
