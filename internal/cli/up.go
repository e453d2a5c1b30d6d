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
	"github.com/kanga-run/kanga/internal/agent"
	"github.com/kanga-run/kanga/internal/agent/pool"
	"github.com/kanga-run/kanga/internal/allinone"
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
		pprofAddr  string
		policy     policyFlags
		nice       int
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
			var err error
			if o.Ports, o.Security, err = policy.policies(); err != nil {
				return err
			}
			level := slog.LevelInfo
			if debug {
				level = slog.LevelDebug
			}
			o.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
			slog.SetDefault(o.Logger)
			setDaemonNice(nice, o.Logger)
			if configPath == "" {
				p, err := client.DefaultConfigPath()
				if err != nil {
					return err
				}
				configPath = p
			}
			o.ConfigPath = configPath
			o.Version = Version
			if pprofAddr != "" {
				if err := servePprof(pprofAddr, o.Logger); err != nil {
					return err
				}
			}
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return allinone.Run(ctx, o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.DataDir, "data-dir", DefaultDataDir, "directory for all state: etcd, containerd, logs")
	f.StringVar(&o.Listen, "listen", "127.0.0.1:7420", "address of the API")
	f.StringVar(&o.HostName, "host-name", "", "name of this host (default: the hostname)")
	f.StringSliceVar(&o.EtcdEndpoints, "etcd-endpoints", nil, "client URLs of an external etcd cluster (http://host:2379,...) instead of the embedded one; kanga up processes sharing a cluster elect one scheduler among them")
	f.StringVar(&configPath, "write-config", "", "where to write the client config (default $KANGA_CONFIG or ~/.kanga/config.json)")
	f.StringVar(&o.Bridge, "bridge", "", "bridge for instance networking (default kanga0)")
	f.StringVar(&o.Subnet, "subnet", "", "subnet for instance IPs (default 10.211.0.0/16)")
	f.StringArrayVar(&o.InsecureRegistries, "insecure-registry", nil, "a registry (HOST:PORT, or HOST) that pulls may reach although it is on a loopback, link-local, private or this host's own address, spoken to over HTTPS without verification or plain HTTP; repeat for more. Nothing is allowed by default")
	f.BoolVar(&o.Isolation, "network-isolation", true, networkIsolationUsage)
	f.IntVar(&o.Pool.Min, "pool-min", pool.DefaultMin, "network sandboxes kept ready even when idle")
	f.IntVar(&o.Pool.Max, "pool-max", pool.DefaultMax, "most network sandboxes kept ready; 0 turns the warm pool off")
	f.DurationVar(&o.Pool.Window, "pool-window", pool.DefaultWindow, "how far back the pool counts creates to size itself, and how long it waits idle before shrinking to --pool-min")
	f.IntVar(&o.Warm.Max, "warm-max", 0, "warm containers (created and started ahead, see bin/kanga-init) kept per tenant, image and runtime class; 0 turns them off")
	f.IntVar(&o.Warm.Min, "warm-min", pool.DefaultWarmMin, "warm containers kept per tenant, image and class while it had creates within --pool-window")
	f.IntVar(&o.WarmTotal, "warm-total", pool.DefaultWarmTotal, "most warm containers kept on the host")
	f.StringVar(&o.CgroupRoot, "cgroup-root", agent.DefaultCgroupRoot, "parent of the instances' cgroups in each cgroup v1 hierarchy (tenant cgroups below it); agents sharing one machine need one each")
	f.BoolVar(&debug, "debug", false, "log at debug level")
	addDefaultsFlags(f, &o.Defaults)
	addFailureFlags(f, &o.Failure)
	addStartSlotsFlag(f, &o.StartSlots)
	addCPUSharesFlag(f, &o.RootCPUShares)
	addNiceFlag(f, &nice)
	f.BoolVar(&o.UserNS, "userns", false, "run crun containers in a user namespace: container root is an unprivileged host id (runc 1.1 cannot exec into them; see bench/sandbox-hardening.md)")
	f.StringVar(&pprofAddr, "pprof-listen", "", "serve Go's /debug/pprof/ profiles on this address (e.g. 127.0.0.1:6060), for profiling a benchmark; off by default")
	policy.register(f)
	return cmd
}

const networkIsolationUsage = "keep tenants' instances apart and away from the host's services, with ARP/IP anti-spoofing and the tenants' network policies (nftables); =false gives a plain bridge where every instance reaches every other and the host"

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
func addDefaultsFlags(f *pflag.FlagSet, d *allinone.Defaults) {
	f.StringVar(&d.DefaultType, "default-type", model.DefaultInstanceType,
		"instance type whose CPU, memory, pids and log limits fill in what an instance leaves empty (see kanga types; a tenant may have its own); none: instances without flags get no limits")
	f.StringVar(&d.DefaultQuota, "default-quota", model.DefaultQuota,
		`quota of new tenants: instances, cpu and memory (amounts, or shares of the pool such as 50%), ports, volumes, devices; none: no quota`)
	f.IntVar(&d.MaxInflightCreates, "max-inflight-creates", -1,
		"most instance creates in flight (recorded, not yet Running or Failed) the API admits; past it a create gets 429 with Retry-After, which clients retry. -1: the ready hosts' start slots (--start-slots); 0: no bound")
}

// addCPUSharesFlag adds the flag of the instances' CPU weight; kanga up
// and kanga agent share it.
func addCPUSharesFlag(f *pflag.FlagSet, n *int) {
	f.IntVar(n, "instances-cpu-shares", agent.DefaultRootCPUShares, "cpu.shares of the instances' cgroup root (--cgroup-root): the weight of all instances together against each Kanga thread (1024), so that busy instances cannot starve the API, etcd and the lease keep-alives; idle CPU still goes to the instances. -1: the kernel's default (1024)")
}

// addStartSlotsFlag adds the flag of a host's concurrent starts; kanga up
// and kanga agent share it.
func addStartSlotsFlag(f *pflag.FlagSet, n *int) {
	f.IntVar(n, "start-slots", 0, "most instance starts the host runs at once; more wait their turn, Pending. The host reports it (kanga host ls) and the API admits creates up to the ready hosts' sum. 0: twice the host's cores")
}
