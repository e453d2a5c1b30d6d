package cli

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/kanga-run/kanga/internal/daemon"
)

func newAgentCommand() *cobra.Command {
	var (
		o      daemon.AgentOptions
		labels []string
		debug  bool
		nice   int
		policy policyFlags
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
	f.StringSliceVar(&labels, "labels", nil, "host labels, key=value (e.g. zone=a), for instances' host selectors")
	f.StringVar(&o.Listen, "listen", "127.0.0.1:7422", "address of the host API the control plane calls")
	f.StringVar(&o.Advertise, "advertise", "", "host:port the control plane reaches the host API at (default: --listen)")
	addHostFlags(f, &o.Options)
	addNiceFlag(f, &nice)
	f.BoolVar(&debug, "debug", false, "log at debug level")
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
