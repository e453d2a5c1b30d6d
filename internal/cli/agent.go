package cli

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/kanga-run/kanga/internal/agent"
	"github.com/kanga-run/kanga/internal/agent/pool"
	"github.com/kanga-run/kanga/internal/daemon"
)

func newAgentCommand() *cobra.Command {
	var (
		o      daemon.AgentOptions
		labels []string
		debug  bool
		policy policyFlags
		nice   int
	)
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run a host agent that joins a kanga server and runs the instances placed on this host",
		Long: `Run a host agent: its own containerd under --data-dir, a CNI bridge and subnet
for instances, and the link to the control plane. On first start it joins with the token
the server wrote (the token pins the server's CA; the agent's key never leaves its data
dir), then uses its certificate. The control plane reaches the agent's host API (logs,
exec, stats, images) on --listen.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := requireRoot("agent"); err != nil {
				return err
			}
			if o.Join == "" {
				return fmt.Errorf("--join is required: the server's agent address, e.g. https://10.0.0.1:7421")
			}
			l, err := parseLabels(labels)
			if err != nil {
				return err
			}
			o.Labels = l
			if o.Ports, o.Security, err = policy.policies(); err != nil {
				return err
			}
			if o.Token == "" {
				o.Token = os.Getenv("KANGA_JOIN_TOKEN")
			}
			o.Logger = newDaemonLogger(debug)
			setDaemonNice(nice, o.Logger)
			o.Version = Version
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return daemon.RunAgent(ctx, o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Join, "join", "", "the server's agent address (https://host:7421); several replicas comma-separated, tried in turn")
	f.StringVar(&o.Token, "token", "", "join token from the server's data dir (default $KANGA_JOIN_TOKEN); needed on first start only")
	f.StringVar(&o.DataDir, "data-dir", "/var/lib/kanga-agent", "directory for the agent's state: certificate, containerd, logs")
	f.StringVar(&o.HostName, "host-name", "", "name of this host (default: the hostname)")
	f.StringSliceVar(&labels, "labels", nil, "host labels, key=value (e.g. zone=a), for instances' host selectors")
	f.StringVar(&o.Listen, "listen", "127.0.0.1:7422", "address of the host API the control plane calls")
	f.StringVar(&o.Advertise, "advertise", "", "host:port the control plane reaches the host API at (default: --listen)")
	f.StringVar(&o.Bridge, "bridge", "", "bridge for instance networking (default kanga0)")
	f.StringVar(&o.Subnet, "subnet", "", "subnet for instance IPs (default 10.211.0.0/16)")
	f.StringArrayVar(&o.InsecureRegistries, "insecure-registry", nil, "a registry (HOST:PORT, or HOST) that pulls may reach although it is on a loopback, link-local, private or this host's own address, spoken to over HTTPS without verification or plain HTTP; repeat for more. Nothing is allowed by default")
	f.BoolVar(&o.Isolation, "network-isolation", true, networkIsolationUsage)
	f.IntVar(&o.Pool.Min, "pool-min", pool.DefaultMin, "network sandboxes kept ready even when idle")
	f.IntVar(&o.Pool.Max, "pool-max", pool.DefaultMax, "most network sandboxes kept ready; 0 turns the warm pool off")
	f.DurationVar(&o.Pool.Window, "pool-window", pool.DefaultWindow, "how far back the pool counts creates to size itself")
	f.IntVar(&o.Warm.Max, "warm-max", 0, "warm containers (created and started ahead, see bin/kanga-init) kept per tenant, image and runtime class; 0 turns them off")
	f.IntVar(&o.Warm.Min, "warm-min", pool.DefaultWarmMin, "warm containers kept per tenant, image and class while it had creates within --pool-window")
	f.IntVar(&o.WarmTotal, "warm-total", pool.DefaultWarmTotal, "most warm containers kept on the host")
	f.StringVar(&o.CgroupRoot, "cgroup-root", agent.DefaultCgroupRoot, "parent of the instances' cgroups in each cgroup v1 hierarchy (tenant cgroups below it); agents sharing one machine need one each")
	f.BoolVar(&debug, "debug", false, "log at debug level")
	addStartSlotsFlag(f, &o.StartSlots)
	addCPUSharesFlag(f, &o.RootCPUShares)
	addNiceFlag(f, &nice)
	f.BoolVar(&o.UserNS, "userns", false, "run crun containers in a user namespace: container root is an unprivileged host id (runc 1.1 cannot exec into them; see bench/sandbox-hardening.md)")
	policy.register(f)
	return cmd
}

func parseLabels(kvs []string) (map[string]string, error) {
	if len(kvs) == 0 {
		return nil, nil
	}
	m := map[string]string{}
	for _, kv := range kvs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("--labels %q: want key=value, e.g. zone=a", kv)
		}
		m[k] = v
	}
	return m, nil
}
