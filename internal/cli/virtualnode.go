package cli

import (
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/kanga-run/kanga/internal/virtualnode"
)

func newVirtualNodeCommand(o *options) *cobra.Command {
	cfg := virtualnode.Config{}
	var debug bool
	cmd := &cobra.Command{
		Use:   "virtual-node --kubeconfig FILE [OPTIONS]",
		Short: "Join a Kubernetes cluster as a virtual node that runs its pods as Kanga instances",
		Long: `Register a node in the Kubernetes cluster of --kubeconfig that stands for the
Kanga pool. Pods scheduled onto it (they must tolerate the taint
virtual-kubelet.io/provider=kanga:NoSchedule) become instances in the tenant of
the Kanga token ($KANGA_TOKEN or the client config), or, with
--tenant-per-namespace, in tenant <prefix><namespace>, created on first use
(the token must then be an administrator's). Their status, logs, exec and
port-forward come from Kanga. Restarting the command re-adopts the instances
it made.`,
		Example: `  kanga virtual-node --kubeconfig ~/.kube/config --name kanga --cpu 64 --memory 256Gi
  kanga virtual-node --kubeconfig ~/.kube/config --tenant-per-namespace --tenant-prefix prod-`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			level := slog.LevelInfo
			if debug {
				level = slog.LevelDebug
			}
			cfg.Log = slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: level}))
			c, err := o.client()
			if err != nil {
				return err
			}
			cfg.Kanga = c
			if cfg.Addr == "" {
				cfg.Addr = virtualnode.DefaultAddr()
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return virtualnode.Run(ctx, cfg)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&cfg.Kubeconfig, "kubeconfig", os.Getenv("KUBECONFIG"), "kubeconfig of the cluster to join (default $KUBECONFIG)")
	fl.StringVar(&cfg.Name, "name", "kanga", "node name")
	fl.StringVar(&cfg.CPU, "cpu", "64", "CPU capacity the node advertises")
	fl.StringVar(&cfg.Memory, "memory", "256Gi", "memory capacity the node advertises")
	fl.IntVar(&cfg.Pods, "pods", 1000, "number of pods the node accepts")
	fl.StringToIntVar(&cfg.Devices, "device", nil, "extended resources the node advertises, by CDI kind: KIND=N (e.g. nvidia.com/gpu=8); a pod's limit of one runs as a Kanga device request (kanga run --device). Repeatable")
	fl.StringVar(&cfg.Addr, "addr", "", "address of the node's kubelet API, as the API server reaches it (default: the host's first non-loopback IPv4 address)")
	fl.IntVar(&cfg.Port, "port", 10250, "port of the node's kubelet API")
	fl.StringVar(&cfg.TLSCert, "tls-cert", "", "kubelet API serving certificate (default: self-signed)")
	fl.StringVar(&cfg.TLSKey, "tls-key", "", "kubelet API serving key")
	fl.StringVar(&cfg.ClientCA, "client-ca", "", "accept only kubelet API clients with a certificate from this CA (the API server's --kubelet-client-certificate)")
	fl.BoolVar(&cfg.DisableTaint, "disable-taint", false, "register the node without the taint virtual-kubelet.io/provider=kanga:NoSchedule, for a cluster whose only worker is Kanga")
	fl.IntVar(&cfg.Workers, "workers", 16, "pods created, updated or deleted at once (a burst is bound by this over the Kanga API's create latency)")
	fl.Float32Var(&cfg.KubeQPS, "kube-api-qps", 50, "requests per second to the Kubernetes API server (client-go's default of 5 throttles pod status updates in a burst)")
	fl.IntVar(&cfg.KubeBurst, "kube-api-burst", 100, "burst of requests to the Kubernetes API server")
	fl.BoolVar(&cfg.TenantPerNamespace, "tenant-per-namespace", false, "run each namespace's pods in its own Kanga tenant, <tenant-prefix><namespace>, created on first use (needs an administrator's token)")
	fl.StringVar(&cfg.TenantPrefix, "tenant-prefix", "k8s-", "prefix of the tenant names --tenant-per-namespace makes")
	fl.BoolVar(&debug, "debug", false, "log at debug level")
	return cmd
}
