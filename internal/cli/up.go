package cli

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/kanga-run/kanga/client"
	"github.com/kanga-run/kanga/internal/allinone"
	"github.com/kanga-run/kanga/internal/assembly/cp"
	"github.com/kanga-run/kanga/internal/model"
)

// DefaultDataDir is where `kanga up` keeps its state unless told otherwise.
const DefaultDataDir = "/var/lib/kanga"

func daemonCommands() []*cobra.Command {
	return []*cobra.Command{newUpCommand(), newDownCommand(), newServerCommand(), newAgentCommand()}
}

func newUpCommand() *cobra.Command {
	var (
		o          allinone.Options
		configPath string
		debug      bool
		nice       int
		pprofAddr  string
		policy     policyFlags
	)
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Run the all-in-one platform: API, embedded etcd and a host agent with its own containerd",
		Long: `Run the all-in-one platform in this process: the API server with its state in an
embedded etcd under --data-dir, and a host agent that starts and supervises its own
containerd. It writes a client config with the API address and an admin token, so
the other commands work with no flags. Stopping it (SIGINT/SIGTERM, or kanga down)
leaves instances running; the next kanga up adopts them.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if os.Geteuid() != 0 {
				return fmt.Errorf("kanga up must run as root: it drives containerd, cgroups and network namespaces")
			}
			ports, security, err := policy.policies()
			if err != nil {
				return err
			}
			o.ControlPlane.Ports, o.ControlPlane.Security = ports, security
			o.Host.Ports, o.Host.Security = ports, security
			log := newDaemonLogger(debug)
			setDaemonNice(nice, log)
			o.ControlPlane.Logger = log
			if configPath == "" {
				p, err := client.DefaultConfigPath()
				if err != nil {
					return err
				}
				configPath = p
			}
			o.ControlPlane.ConfigPath = configPath
			o.ControlPlane.Version = Version
			if pprofAddr != "" {
				if err := servePprof(pprofAddr, log); err != nil {
					return err
				}
			}
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return allinone.Run(ctx, o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.ControlPlane.DataDir, "data-dir", DefaultDataDir, "directory for all state: etcd, containerd, logs")
	f.StringVar(&o.ControlPlane.Listen, "listen", "127.0.0.1:7420", "address of the API")
	f.StringSliceVar(&o.ControlPlane.EtcdEndpoints, "etcd-endpoints", nil, "client URLs of an external etcd cluster (http://host:2379,...) instead of the embedded one; kanga up processes sharing a cluster elect one scheduler among them")
	f.StringVar(&configPath, "write-config", "", "where to write the client config (default $KANGA_CONFIG or ~/.kanga/config.json)")
	addHostFlags(f, &o.Host)
	addNiceFlag(f, &nice)
	f.BoolVar(&debug, "debug", false, "log at debug level")
	addDefaultsFlags(f, &o.ControlPlane.Defaults)
	addFailureFlags(f, &o.ControlPlane.Failure)
	f.StringVar(&pprofAddr, "pprof-listen", "", "serve Go's /debug/pprof/ profiles on this address (e.g. 127.0.0.1:6060), for profiling a benchmark; off by default")
	policy.register(f)
	return cmd
}

// servePprof serves net/http/pprof on its own listener, apart from the
// API, so that profiles are never reachable through the API's address.
func servePprof(addr string, log *slog.Logger) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("--pprof-listen %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	log.Info("serving pprof", "addr", ln.Addr().String())
	go func() { _ = http.Serve(ln, mux) }()
	return nil
}

// addDefaultsFlags adds the flags of what the API gives instances and
// tenants that ask for nothing; kanga up and kanga server share them.
func addDefaultsFlags(f *pflag.FlagSet, d *cp.Defaults) {
	f.StringVar(&d.DefaultType, "default-type", model.DefaultInstanceType,
		"instance type whose CPU, memory, pids and log limits fill in what an instance leaves empty (see kanga types; a tenant may have its own); none: instances without flags get no limits")
	f.StringVar(&d.DefaultQuota, "default-quota", model.DefaultQuota,
		`quota of new tenants: instances, cpu and memory (amounts, or shares of the pool such as 50%), ports, volumes, devices, disk (an amount); none: no quota`)
	f.IntVar(&d.MaxInflightCreates, "max-inflight-creates", -1,
		"most instance creates in flight (recorded, not yet Running or Failed) the API admits; past it a create gets 429 with Retry-After, which clients retry. -1: the ready hosts' start slots (--start-slots); 0: no bound")
}
