package cli

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/client"
)

func newEventsCommand(o *options) *cobra.Command {
	var (
		opts   client.EventsOptions
		output string
	)
	cmd := &cobra.Command{
		Use:   "events",
		Short: "Show the events of your instances",
		Long: `Show the events of your tenant's instances (scheduling, starts, restarts,
probe failures, OOM kills...), oldest first. -f keeps following them as
they happen until interrupted.`,
		Example: `  kanga events --since 10m
  kanga events -f --type Warning
  kanga events -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if output != "" && output != "json" {
				return fmt.Errorf("invalid -o value %q: expected json", output)
			}
			if opts.Type != "" && opts.Type != api.EventNormal && opts.Type != api.EventWarning {
				return fmt.Errorf("invalid --type %q: expected %s or %s", opts.Type, api.EventNormal, api.EventWarning)
			}
			c, err := o.client()
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			enc := json.NewEncoder(w)
			if output == "" {
				fmt.Fprintf(w, "%-20s  %-7s  %-20s  %-18s  %s\n", "TIME", "TYPE", "INSTANCE", "REASON", "MESSAGE")
			}
			return c.Events(cmd.Context(), opts, func(r api.EventRecord) error {
				if output == "json" {
					return enc.Encode(r)
				}
				// Lines as they come: a table would wait for the widths.
				_, err := fmt.Fprintf(w, "%-20s  %-7s  %-20s  %-18s  %s\n",
					r.Time.Local().Format(time.DateTime), r.Type, r.Instance, r.Reason, r.Message)
				return err
			})
		},
	}
	cmd.Flags().BoolVarP(&opts.Follow, "follow", "f", false, "keep printing events as they happen")
	cmd.Flags().StringVar(&opts.Since, "since", "", "only events since this time (RFC 3339) or this long ago (10m, 2h, 1d)")
	cmd.Flags().StringVar(&opts.Type, "type", "", "only events of this type: Normal or Warning")
	cmd.Flags().StringVarP(&output, "output", "o", "", "output format: json (one event per line)")
	return cmd
}
