package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/kanga-run/kanga/internal/bench"
)

func newBenchCommand(o *options) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure the platform against baselines",
	}
	cmd.AddCommand(newBenchStartCommand(o), newBenchScheduleCommand())
	return cmd
}

type benchStartFlags struct {
	n           int
	concurrency int
	runtime     string
	image       string
	baseline    bool
	containerd  string
	timeout     time.Duration
	json        bool
	verbose     bool
	securityOpt []string
	// A storage variant of the Kanga path (see bench.Storage).
	emptyDir, emptyDirMedium, disk string
	configMount                    string
}

func newBenchStartCommand(o *options) *cobra.Command {
	f := &benchStartFlags{}
	cmd := &cobra.Command{
		Use:   "start [OPTIONS]",
		Short: "Measure start latency through the API against containerd and the raw OCI runtime",
		Long: `Measure how long an instance takes to start through Kanga's API, from just
before the create call until the instance is Running, and, in the same run,
the same container started through containerd's client and with the OCI
runtime called directly on a prepared bundle (--baseline). Every container
runs "sleep 3600"; everything started is removed afterwards, also on Ctrl-C.

The baselines need root and the socket of the containerd that kanga up runs
(<data-dir>/containerd/containerd.sock), whose "kanga" namespace must hold
the image (kanga image import). The ratios divide each path's p50 by the raw
runtime's, measured minutes apart on the same machine.`,
		Example: `  kanga bench start --runtime crun --n 20
  kanga config create bench --from-literal app.conf=x && kanga bench start --n 20 --config-mount bench --baseline=false
  kanga bench start --n 40 --concurrency 4 --containerd /tmp/kd/containerd/containerd.sock --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runBenchStart(cmd, o, f)
		},
	}
	fl := cmd.Flags()
	fl.IntVar(&f.n, "n", 20, "number of starts per path")
	fl.IntVar(&f.concurrency, "concurrency", 1, "starts in flight at once")
	fl.StringVar(&f.runtime, "runtime", "runc", "runtime class: runc, crun or gvisor")
	fl.StringVar(&f.image, "image", "kanga.test/busybox:latest", "image to start; it must provide sleep")
	fl.BoolVar(&f.baseline, "baseline", true, "also measure containerd's client and the raw OCI runtime")
	fl.StringVar(&f.containerd, "containerd", bench.DefaultContainerd, "containerd socket for the baselines")
	fl.DurationVar(&f.timeout, "timeout", 2*time.Minute, "give up on one start after this long")
	fl.BoolVar(&f.json, "json", false, "print the report as JSON")
	fl.BoolVarP(&f.verbose, "verbose", "v", false, "log progress to stderr")
	fl.StringVar(&f.configMount, "config-mount", "", "also measure the Kanga path, in the same run, with this config (kanga config create) mounted as files at "+bench.ConfigMountPath+" (with --emptydir or --disk, their path mounts it too)")
	fl.StringArrayVar(&f.securityOpt, "security-opt", nil, "the instances' seccomp profile, as for kanga run: seccomp=unconfined measures the start without the default profile (the tenant must be allowed it)")
	fl.StringVar(&f.emptyDir, "emptydir", "", `also measure instances with an emptyDir of this size at /scratch, e.g. "64Mi" (same run, a path of its own)`)
	fl.StringVar(&f.emptyDirMedium, "emptydir-medium", "", `the --emptydir's medium: "" (disk) or Memory`)
	fl.StringVar(&f.disk, "disk", "", `also measure instances whose writable layer is capped at this size, e.g. "1Gi" (with --emptydir: both in one path)`)
	return cmd
}

func runBenchStart(cmd *cobra.Command, o *options, f *benchStartFlags) error {
	if f.baseline && os.Geteuid() != 0 {
		return errors.New("the baselines drive containerd and an OCI runtime directly and need root; run as root or with --baseline=false")
	}
	c, err := o.client()
	if err != nil {
		return err
	}
	// Ctrl-C ends the starts; the suite still removes what it started.
	ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	sc, err := securityContext(nil, nil, f.securityOpt)
	if err != nil {
		return err
	}
	var storage *bench.Storage
	if f.emptyDir != "" || f.disk != "" {
		// The storage path mounts the --config-mount config too: one
		// config file and one emptyDir against the plain path.
		storage = &bench.Storage{EmptyDir: f.emptyDir, EmptyDirMedium: f.emptyDirMedium, Disk: f.disk, Config: f.configMount}
	} else if f.emptyDirMedium != "" {
		return errors.New("--emptydir-medium needs --emptydir SIZE")
	}
	level := slog.LevelWarn
	if f.verbose {
		level = slog.LevelInfo
	}
	rep, runErr := bench.RunSuite(ctx, bench.Config{
		N:           f.n,
		Concurrency: f.concurrency,
		Runtime:     f.runtime,
		Image:       f.image,
		Security:    sc,
		Storage:     storage,
		ConfigMount: f.configMount,
		API:         c,
		Baseline:    f.baseline,
		Containerd:  f.containerd,
		Tenant:      o.tenant,
		Timeout:     f.timeout,
		Logger:      slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: level})),
	})
	if len(rep.Paths) > 0 {
		var err error
		if f.json {
			err = rep.WriteJSON(cmd.OutOrStdout())
		} else {
			err = rep.WriteTable(cmd.OutOrStdout())
		}
		if err != nil {
			return err
		}
	}
	if runErr != nil {
		return runErr
	}
	if ctx.Err() != nil {
		return fmt.Errorf("interrupted: %w", context.Cause(ctx))
	}
	for _, p := range rep.Paths {
		if p.Failed > 0 {
			// The table says which and why; the exit code tells scripts.
			return &ExitError{Code: 1}
		}
	}
	return nil
}
