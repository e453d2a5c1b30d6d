package cli

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/kanga-run/kanga/client"
	"github.com/kanga-run/kanga/internal/assembly/cp"
)

func newServerCommand() *cobra.Command {
	var (
		o          cp.Options
		configPath string
		debug      bool
		policy     policyFlags
		nice       int
	)
	cmd := &cobra.Command{
		Use:   "server",
		Short: "Run the control plane only: API, store, scheduler, failure detector and the agents' link",
		Long: `Run a control-plane replica: the API on --listen (HTTPS with the cluster CA), the store (embedded etcd under
--data-dir, or an external cluster with --etcd-endpoints), the scheduler loop and failure
detector (one replica leads), the cluster CA, and the link agents join on --agent-listen
(HTTPS, mutual TLS). It writes the join token for agents to <data-dir>/join-token and a
client config with an admin token. Hosts join with:

  kanga agent --join https://SERVER:7421 --token "$(cat <data-dir>/join-token)"

Replicas on one etcd cluster share the CA and the join token.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var err error
			if o.Ports, o.Security, err = policy.policies(); err != nil {
				return err
			}
			o.Logger = newDaemonLogger(debug)
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
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return cp.Run(ctx, o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.DataDir, "data-dir", "/var/lib/kanga-server", "directory for the server's state: embedded etcd, admin token, join token")
	f.StringVar(&o.Listen, "listen", "127.0.0.1:7420", "address of the API")
	f.BoolVar(&o.PlainAPI, "plain-api", false, "serve the API over plain HTTP instead of HTTPS (only on a trusted network: bearer tokens travel in the clear)")
	f.StringVar(&o.AgentListen, "agent-listen", "127.0.0.1:7421", "address agents join and connect to (HTTPS, mutual TLS)")
	f.StringSliceVar(&o.SANs, "tls-san", nil, "extra DNS names or IPs for the server certificate (API and agent link) (127.0.0.1, localhost and the hostname are always in)")
	f.StringSliceVar(&o.EtcdEndpoints, "etcd-endpoints", nil, "client URLs of an external etcd cluster (http://host:2379,...) instead of the embedded one; replicas sharing a cluster elect one scheduler")
	f.StringVar(&o.ReplicaName, "replica-name", "", "name of this replica in the control plane's election (default hostname-pid)")
	f.StringArrayVar(&o.InsecureRegistries, "insecure-registry", nil, "a registry (HOST:PORT, or HOST) every agent may pull from although it is on a loopback, link-local or private address, in addition to each agent's own --insecure-registry (agents learn the list when they register; give every replica the same); repeat for more")
	f.StringVar(&configPath, "write-config", "", "where to write the client config (default $KANGA_CONFIG or ~/.kanga/config.json)")
	f.BoolVar(&debug, "debug", false, "log at debug level")
	addDefaultsFlags(f, &o.Defaults)
	addFailureFlags(f, &o.Failure)
	addNiceFlag(f, &nice)
	policy.register(f)
	return cmd
}

func newDaemonLogger(debug bool) *slog.Logger {
	level := slog.LevelInfo
	if debug {
		level = slog.LevelDebug
	}
	l := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	slog.SetDefault(l)
	return l
}

func requireRoot(verb string) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("kanga %s must run as root: it drives containerd, cgroups and network namespaces", verb)
	}
	return nil
}
