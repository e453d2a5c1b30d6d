package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/kanga-run/kanga/internal/bench"
)

func newBenchScheduleCommand() *cobra.Command {
	var (
		cfg    bench.ScheduleConfig
		asJSON bool
		prof   string
	)
	cmd := &cobra.Command{
		Use:   "schedule [OPTIONS]",
		Short: "Measure the control plane end to end with simulated hosts",
		Long: `Run, in this process, the whole control plane (API over HTTP, embedded etcd,
scheduler loop with fenced apply, the agents' link with mutual TLS, heartbeats and
per-host streams) with --hosts simulated hosts whose runtime reports an instance
Running as soon as it is placed on them. It creates --instances instances of --cpu
cores each through the API and reports when the last was created, placed and
Running. Simulated hosts connect over in-memory pipes, not TCP (ten thousand hosts
need more file descriptors than a process may have). Needs no root and leaves
nothing behind.`,
		Example: `  kanga bench schedule --hosts 1000 --instances 10000
  kanga bench schedule --hosts 10000 --instances 100000 --host-cpus 128 --cpu 10`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			cfg.Progress = func(format string, a ...any) {
				fmt.Fprintf(cmd.ErrOrStderr(), "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, a...)...)
			}
			if prof != "" {
				f, err := os.Create(prof)
				if err != nil {
					return err
				}
				defer f.Close()
				if err := pprof.StartCPUProfile(f); err != nil {
					return err
				}
				defer pprof.StopCPUProfile()
			}
			rep, err := bench.Schedule(ctx, cfg)
			if err != nil {
				return err
			}
			if asJSON {
				return json.NewEncoder(cmd.OutOrStdout()).Encode(rep)
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "hosts %d, instances %d, cores %d\n", rep.Hosts, rep.Instances, rep.Cores)
			fmt.Fprintf(w, "setup (store, control plane, hosts Ready): %s\n", rep.Setup.Round(time.Millisecond))
			fmt.Fprintf(w, "all created:  %s  (create call p50 %s, p99 %s)\n", rep.CreateDone.Round(time.Millisecond), rep.CreateP50.Round(time.Microsecond), rep.CreateP99.Round(time.Microsecond))
			fmt.Fprintf(w, "all placed:   %s\n", rep.PlacedDone.Round(time.Millisecond))
			fmt.Fprintf(w, "all Running:  %s  (%.0f instances/s, %.0f cores/s)\n", rep.RunningDone.Round(time.Millisecond),
				float64(rep.Instances)/rep.RunningDone.Seconds(), float64(rep.Cores)/rep.RunningDone.Seconds())
			return nil
		},
	}
	f := cmd.Flags()
	f.IntVar(&cfg.Hosts, "hosts", 1000, "simulated hosts")
	f.IntVar(&cfg.HostCPUs, "host-cpus", 128, "cores each simulated host offers")
	f.IntVar(&cfg.Instances, "instances", 10000, "instances to create")
	f.IntVar(&cfg.CPU, "cpu", 10, "cores each instance asks for")
	f.IntVar(&cfg.Concurrency, "concurrency", 32, "API clients creating instances at once")
	f.DurationVar(&cfg.LeaseTTL, "lease-ttl", 30*time.Second, "host lease TTL (heartbeats keep it)")
	f.BoolVar(&asJSON, "json", false, "print the report as JSON")
	f.StringVar(&prof, "cpuprofile", "", "write a CPU profile of the run to this file (where the time goes)")
	return cmd
}
