package virtualnode

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"path"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/virtual-kubelet/virtual-kubelet/node"
	"github.com/virtual-kubelet/virtual-kubelet/node/nodeutil"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/record"

	"github.com/kanga-run/kanga/client"
	"github.com/kanga-run/kanga/errdefs"
	"github.com/kanga-run/kanga/internal/tenant"
)

// Taint keeps pods off the virtual node unless they tolerate it: bursting
// to Kanga is a choice, not where the scheduler spills everything.
var Taint = corev1.Taint{Key: "virtual-kubelet.io/provider", Value: "kanga", Effect: corev1.TaintEffectNoSchedule}

// Config describes one virtual node.
type Config struct {
	// Name is the node's name in the cluster.
	Name string
	// Kubeconfig is the path of the cluster's kubeconfig.
	Kubeconfig string
	// Kanga is the client whose tenant runs the pods.
	Kanga *client.Client
	// TenantPerNamespace runs the pods of namespace N in Kanga tenant
	// TenantPrefix+N (created on first use) instead of in Kanga's tenant;
	// Kanga's token must then be an administrator's.
	TenantPerNamespace bool
	TenantPrefix       string
	// CPU, Memory and Pods are the node's capacity: the share of the pool
	// the cluster may schedule onto it.
	CPU, Memory string
	Pods        int
	// Devices are extended resources the node advertises, by CDI kind
	// (nvidia.com/gpu): the devices of Kanga's hosts the cluster may
	// schedule onto it. A pod's limit of one becomes a device request
	// (see devicesOf).
	Devices map[string]int
	// Addr is the address pods report as their host's and where the API
	// server reaches the node's kubelet API (logs, exec, port-forward).
	Addr string
	// Port is the kubelet API's port.
	Port int
	// TLSCert and TLSKey are the kubelet API's serving pair; empty makes
	// a self-signed one (the API server does not verify kubelets unless
	// told to with --kubelet-certificate-authority).
	TLSCert, TLSKey string
	// ClientCA, if set, makes the kubelet API accept only clients with a
	// certificate it signed (the API server's --kubelet-client-certificate).
	ClientCA string
	// DisableTaint registers the node without Taint, for a cluster whose
	// pods all belong on Kanga (its only worker is this node): pods then
	// need no toleration. virtual-kubelet's own CLI has the same switch.
	DisableTaint bool
	// Workers is the number of pods the node creates, updates and
	// deletes at once (virtual-kubelet's default is one per CPU). Each
	// create is one Kanga API call that waits for the instance to be
	// recorded, so a burst is bound by Workers over that call's latency.
	Workers int
	// KubeQPS and KubeBurst bound the node's requests to the API server
	// (client-go's defaults, 5 and 10, throttle the status updates of a
	// burst of pods to a few pods per second).
	KubeQPS   float32
	KubeBurst int
	Log       *slog.Logger
}

// Run registers the node and serves its pods until ctx ends.
func Run(ctx context.Context, cfg Config) error {
	if cfg.Name == "" || cfg.Kanga == nil {
		return fmt.Errorf("virtual node: a name and a Kanga client are required: %w", errdefs.ErrInvalidArgument)
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.TenantPerNamespace {
		// The longest namespace must still leave room for a readable
		// tenant name; TenantName hashes what does not fit.
		if probe := cfg.TenantPrefix + "a"; len(cfg.TenantPrefix) > 40 || tenant.Validate(probe) != nil {
			return fmt.Errorf("tenant prefix %q: use at most 40 lower-case letters, digits and '-', starting with a letter or digit: %w", cfg.TenantPrefix, errdefs.ErrInvalidArgument)
		}
	}
	capacity := corev1.ResourceList{}
	for name, v := range map[corev1.ResourceName]string{
		corev1.ResourceCPU:    cfg.CPU,
		corev1.ResourceMemory: cfg.Memory,
		corev1.ResourcePods:   strconv.Itoa(cfg.Pods),
	} {
		q, err := resource.ParseQuantity(v)
		if err != nil {
			return fmt.Errorf("virtual node capacity %s %q: %v: %w", name, v, err, errdefs.ErrInvalidArgument)
		}
		capacity[name] = q
	}
	for kind, n := range cfg.Devices {
		if !strings.Contains(kind, "/") || strings.HasPrefix(kind, "kubernetes.io/") || n < 0 {
			return fmt.Errorf("virtual node device capacity %s=%d: want a CDI kind (vendor.com/class) and a count: %w", kind, n, errdefs.ErrInvalidArgument)
		}
		capacity[corev1.ResourceName(kind)] = *resource.NewQuantity(int64(n), resource.DecimalSI)
	}
	restCfg, err := clientcmd.BuildConfigFromFlags("", cfg.Kubeconfig)
	if err != nil {
		return fmt.Errorf("load kubeconfig %s: %w", cfg.Kubeconfig, err)
	}
	if cfg.KubeQPS > 0 {
		restCfg.QPS = cfg.KubeQPS
	}
	if cfg.KubeBurst > 0 {
		restCfg.Burst = cfg.KubeBurst
	}
	kube, err := kubernetes.NewForConfig(restCfg)
	if err != nil {
		return fmt.Errorf("kubernetes client: %w", err)
	}
	tlsCfg, err := serverTLS(cfg)
	if err != nil {
		return err
	}

	// With a tenant per namespace, the namespaces' NetworkPolicies become
	// their tenants' network policies (netpolicy.go).
	var npc *netPolicies
	if cfg.TenantPerNamespace {
		npc = newNetPolicies(kube, cfg.Kanga, cfg.TenantPrefix, cfg.Name, cfg.Log)
		go npc.Run(ctx)
	}

	// One event recorder for the pod controller and the provider (which
	// records the events of env resolution, env.go).
	eb := record.NewBroadcaster()
	defer eb.Shutdown()
	eb.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: kube.CoreV1().Events(corev1.NamespaceAll)})
	recorder := eb.NewRecorder(scheme.Scheme, corev1.EventSource{Component: path.Join(cfg.Name, "pod-controller")})

	// The claims of pods' volumes and the PersistentVolumes they are bound
	// to (volumes.go).
	claimInformers := informers.NewSharedInformerFactory(kube, 0)
	claims := claimInformers.Core().V1().PersistentVolumeClaims().Lister()
	pvs := claimInformers.Core().V1().PersistentVolumes().Lister()
	claimInformers.Start(ctx.Done())
	defer claimInformers.Shutdown()
	for typ, ok := range claimInformers.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return fmt.Errorf("virtual node %s: syncing the %v informer failed", cfg.Name, typ)
		}
	}

	mux := http.NewServeMux()
	var provider *Provider
	n, err := nodeutil.NewNode(cfg.Name,
		func(pc nodeutil.ProviderConfig) (nodeutil.Provider, node.NodeProvider, error) {
			var opts []ProviderOption
			if cfg.TenantPerNamespace {
				opts = append(opts, TenantPerNamespace(cfg.TenantPrefix), NamespaceNetworkPolicy(npc.policyFor))
			}
			opts = append(opts, EnvSources(pc.ConfigMaps, pc.Secrets, pc.Services, capacity), Claims(claims, pvs), Events(recorder))
			provider = NewProvider(cfg.Kanga, cfg.Name, cfg.Addr, pc.Pods, cfg.Log, opts...)
			return provider, nil, nil
		},
		nodeutil.WithClient(kube),
		nodeutil.AttachProviderRoutes(mux),
		func(nc *nodeutil.NodeConfig) error {
			nc.HTTPListenAddr = net.JoinHostPort(cfg.Addr, strconv.Itoa(cfg.Port))
			if cfg.Workers > 0 {
				nc.NumWorkers = cfg.Workers
			}
			nc.Handler = mux
			nc.EventRecorder = recorder
			// The provider resolves env itself (env.go).
			nc.SkipDownwardAPIResolution = true
			nc.TLSConfig = tlsCfg
			spec := &nc.NodeSpec
			spec.Labels["kubernetes.io/os"] = "linux"
			spec.Labels["kubernetes.io/arch"] = runtime.GOARCH
			spec.Labels["node.kubernetes.io/instance-type"] = "kanga"
			if !cfg.DisableTaint {
				spec.Spec.Taints = []corev1.Taint{Taint}
			}
			spec.Status.Capacity = capacity
			spec.Status.Allocatable = capacity.DeepCopy()
			spec.Status.Addresses = []corev1.NodeAddress{
				{Type: corev1.NodeInternalIP, Address: cfg.Addr},
				{Type: corev1.NodeHostName, Address: cfg.Name},
			}
			spec.Status.DaemonEndpoints.KubeletEndpoint.Port = int32(cfg.Port)
			spec.Status.NodeInfo = corev1.NodeSystemInfo{
				OperatingSystem: "linux",
				Architecture:    runtime.GOARCH,
				KubeletVersion:  "kanga",
			}
			return nil
		},
	)
	if err != nil {
		return fmt.Errorf("virtual node %s: %w", cfg.Name, err)
	}
	cfg.Log.Info("virtual node starting", "node", cfg.Name, "addr", cfg.Addr, "port", cfg.Port)
	go func() {
		if err := n.WaitReady(ctx, 0); err == nil {
			cfg.Log.Info("virtual node ready", "node", cfg.Name)
		}
	}()
	if err := n.Run(ctx); err != nil && ctx.Err() == nil {
		return fmt.Errorf("virtual node %s: %w", cfg.Name, err)
	}
	return nil
}

// serverTLS is the kubelet API's TLS config.
func serverTLS(cfg Config) (*tls.Config, error) {
	var opts []func(*tls.Config) error
	if cfg.TLSCert != "" || cfg.TLSKey != "" {
		opts = append(opts, nodeutil.WithKeyPairFromPath(cfg.TLSCert, cfg.TLSKey))
	} else {
		cert, err := selfSigned(cfg.Name, cfg.Addr)
		if err != nil {
			return nil, err
		}
		opts = append(opts, func(c *tls.Config) error {
			c.Certificates = append(c.Certificates, cert)
			return nil
		})
	}
	if cfg.ClientCA != "" {
		opts = append(opts, nodeutil.WithCAFromPath(cfg.ClientCA))
	} else {
		cfg.Log.Warn("no --client-ca: the kubelet API (logs, exec, port-forward) accepts any client that reaches it", "addr", cfg.Addr, "port", cfg.Port)
	}
	var nc nodeutil.NodeConfig
	if err := nodeutil.WithTLSConfig(opts...)(&nc); err != nil {
		return nil, fmt.Errorf("kubelet API TLS: %w", err)
	}
	return nc.TLSConfig, nil
}

// selfSigned makes a serving certificate for the node's name and address.
func selfSigned(name, addr string) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{name},
	}
	if ip := net.ParseIP(addr); ip != nil {
		tmpl.IPAddresses = []net.IP{ip}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("self-signed kubelet certificate: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

// DefaultAddr is the first non-loopback IPv4 address of the host, or
// 127.0.0.1.
func DefaultAddr() string {
	addrs, err := net.InterfaceAddrs()
	if err == nil {
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok && !ipn.IP.IsLoopback() && ipn.IP.To4() != nil {
				return ipn.IP.String()
			}
		}
	}
	return "127.0.0.1"
}
