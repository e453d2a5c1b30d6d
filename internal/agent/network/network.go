// Package network gives each instance its own network namespace, attached
// to a host bridge through CNI (bridge + host-local + portmap + bandwidth)
// via libcni. Outbound NAT is one masquerade rule for the whole subnet
// (masq.go), not one per instance.
//
// All state that CNI DEL needs lives under Config.StateDir (libcni's result
// cache, host-local's leases), so an agent that restarts can still tear down
// what its previous incarnation set up, including published ports.
package network

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	cnitypes "github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"

	"github.com/kanga-run/kanga/errdefs"
	"github.com/kanga-run/kanga/internal/atomicfile"
)

// Defaults for the zero fields of Config.
const (
	DefaultBridge      = "kanga0"
	DefaultSubnet      = "10.211.0.0/16"
	DefaultNetworkName = "kanga"
	// defaultNetNSRoot holds one directory per StateDir, so two agents (or
	// an agent and its tests) on one host never share namespace names.
	defaultNetNSRoot = "/run/kanga/netns"
	// ifName is the instance's interface inside its namespace.
	ifName = "eth0"
)

// DefaultPluginDirs is where CNI plugins are searched when
// Config.PluginDirs is empty: Debian's package, then the upstream location.
var DefaultPluginDirs = []string{"/usr/lib/cni", "/opt/cni/bin"}

// Config describes the host's instance network.
type Config struct {
	// StateDir holds the generated conflist, host-local's IPAM data and
	// libcni's cache. It must persist across agent restarts.
	StateDir string
	// NetNSDir is where namespace files live, one per instance, named after
	// the instance ID. Default: /run/kanga/netns/<hash of StateDir>.
	NetNSDir string
	// PluginDirs are searched for CNI plugin binaries.
	PluginDirs []string
	// Bridge is the host bridge name (at most 15 bytes).
	Bridge string
	// Subnet is the IPv4 CIDR instances get addresses from; the bridge
	// takes the first address as gateway.
	Subnet string
	// NetworkName names the CNI network; it appears in iptables comments
	// and in the cache file names.
	NetworkName string
	// Isolation keeps tenants apart and instances away from the host's
	// services and from spoofing (isolation.go). Off, every instance
	// reaches every other and the host, as on a plain bridge.
	Isolation bool
}

// Port publishes ContainerPort of an instance on HostIP:HostPort. An empty
// HostIP means every host address, 127.0.0.1 included.
type Port struct {
	HostIP        string
	HostPort      int
	ContainerPort int
	Protocol      string // tcp (default) or udp
}

// Attachment is an instance's place on the network.
type Attachment struct {
	NetNS   string // path of the bind-mounted namespace, for the OCI spec
	IP      string // instance address, without prefix length
	Gateway string // bridge address, reachable from the instance
}

// Manager sets up and tears down instance networks. It is safe for
// concurrent use; operations on one ID are serialised.
type Manager struct {
	cfg  Config
	cni  *libcni.CNIConfig
	list *libcni.NetworkConfigList
	// lists holds the list an ADD uses, by the plugins it needs after the
	// bridge (see buildConfListFor); lists[extras{true, true}] is list.
	lists map[extras]*libcni.NetworkConfigList
	mu    idLocks

	// The first ADD creates host-wide state (the subnet's masquerade, the
	// bridge, portmap's shared chains and their jump rules) with
	// check-then-create steps that race between plugin processes and leave
	// duplicate rules. Running the first ADD alone avoids that; later ADDs
	// only add per-instance state.
	primeMu sync.Mutex
	primed  atomic.Bool
	// peers are the other hosts' instance subnets, which the subnet's
	// masquerade leaves alone so that their agents see who is calling
	// (guarded by primeMu).
	peers []netip.Prefix
	// savedView is view.json's content as last written (see SetView).
	savedView string

	iso *isolation // nil without Config.Isolation

	// links remembers each attachment's host interfaces (hostLinksOf).
	linksMu sync.Mutex
	links   map[string][2]string
}

// New validates cfg, fills defaults, writes the conflist to StateDir and
// checks that the plugins it needs are installed.
func New(cfg Config) (*Manager, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	for _, dir := range []string{cfg.StateDir, cfg.NetNSDir, cfg.ipamDir(), cfg.cacheDir()} {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("create network state dir: %w", err)
		}
	}
	for _, p := range pluginTypes() {
		if _, err := invoke.FindInPath(p, cfg.PluginDirs); err != nil {
			return nil, fmt.Errorf("CNI plugin %q not found in %v (install containernetworking-plugins): %w",
				p, cfg.PluginDirs, errdefs.ErrFailedPrecondition)
		}
	}
	lists := map[extras]*libcni.NetworkConfigList{}
	for _, e := range []extras{{false, false}, {true, false}, {false, true}, {true, true}} {
		b, err := buildConfListFor(cfg, e)
		if err != nil {
			return nil, err
		}
		if lists[e], err = libcni.ConfListFromBytes(b); err != nil {
			return nil, fmt.Errorf("parse generated CNI conflist: %w", err)
		}
	}
	list := lists[extras{portmap: true, bandwidth: true}]
	// Written for operators to inspect; the Manager uses the bytes in
	// memory and DEL uses the copy libcni cached at ADD time.
	if err := atomicfile.WriteNoSync(filepath.Join(cfg.StateDir, cfg.NetworkName+".conflist"), list.Bytes, 0o600); err != nil {
		return nil, err
	}
	m := &Manager{
		cfg:   cfg,
		cni:   libcni.NewCNIConfigWithCacheDir(cfg.PluginDirs, cfg.cacheDir(), newNiceExec()),
		list:  list,
		lists: lists,
	}
	if cfg.Isolation {
		if err := m.startIsolation(); err != nil {
			return nil, err
		}
	} else if err := RemoveIsolation(cfg.Bridge); err != nil {
		// Turned off: an earlier run's tables would go on isolating.
		slog.Debug("network: no isolation tables to remove", "bridge", cfg.Bridge, "err", err)
	}
	return m, nil
}

func (c Config) withDefaults() (Config, error) {
	if c.StateDir == "" {
		return c, fmt.Errorf("network: StateDir is required: %w", errdefs.ErrInvalidArgument)
	}
	abs, err := filepath.Abs(c.StateDir)
	if err != nil {
		return c, fmt.Errorf("network: StateDir %q: %w", c.StateDir, errdefs.ErrInvalidArgument)
	}
	c.StateDir = abs
	if c.NetNSDir == "" {
		sum := sha256.Sum256([]byte(c.StateDir))
		c.NetNSDir = filepath.Join(defaultNetNSRoot, hex.EncodeToString(sum[:])[:12])
	}
	if len(c.PluginDirs) == 0 {
		c.PluginDirs = DefaultPluginDirs
	}
	if c.Bridge == "" {
		c.Bridge = DefaultBridge
	}
	if len(c.Bridge) > 15 || strings.ContainsAny(c.Bridge, "/ \t\n") {
		return c, fmt.Errorf("network: bridge name %q is not a valid interface name (max 15 bytes): %w",
			c.Bridge, errdefs.ErrInvalidArgument)
	}
	if c.Subnet == "" {
		c.Subnet = DefaultSubnet
	}
	ip, ipnet, err := net.ParseCIDR(c.Subnet)
	if err != nil || ip.To4() == nil {
		return c, fmt.Errorf("network: subnet %q is not an IPv4 CIDR: %w", c.Subnet, errdefs.ErrInvalidArgument)
	}
	if ones, _ := ipnet.Mask.Size(); ones > 30 {
		return c, fmt.Errorf("network: subnet %q is too small (need at least /30): %w", c.Subnet, errdefs.ErrInvalidArgument)
	}
	c.Subnet = ipnet.String()
	if c.NetworkName == "" {
		c.NetworkName = DefaultNetworkName
	}
	if !validID.MatchString(c.NetworkName) {
		return c, fmt.Errorf("network: network name %q: %w", c.NetworkName, errdefs.ErrInvalidArgument)
	}
	return c, nil
}

func (c Config) ipamDir() string  { return filepath.Join(c.StateDir, "ipam") }
func (c Config) cacheDir() string { return filepath.Join(c.StateDir, "cache") }

// validID is libcni's container ID rule; IDs also name files, so no slashes.
var validID = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.\-]{0,127}$`)

func checkID(id string) error {
	if !validID.MatchString(id) {
		return fmt.Errorf("network: instance id %q must match %s: %w", id, validID, errdefs.ErrInvalidArgument)
	}
	return nil
}

// Subnet is the instance subnet, masked (the default filled in).
func (m *Manager) Subnet() string { return m.cfg.Subnet }

// Addresses is how many attachments the subnet has addresses for:
// host-local hands out every address but the network's, the broadcast
// and the bridge's (the gateway).
func (m *Manager) Addresses() int { return subnetAddresses(m.cfg.Subnet) }

func subnetAddresses(subnet string) int {
	p, err := netip.ParsePrefix(subnet)
	if err != nil || !p.Addr().Is4() {
		return 0
	}
	hostBits := 32 - p.Bits()
	if hostBits < 2 {
		return 0
	}
	if hostBits > 30 {
		hostBits = 30 // no host holds a billion instances
	}
	return 1<<hostBits - 3
}

// NetNSPath is the namespace file of instance id.
func (m *Manager) NetNSPath(id string) string { return filepath.Join(m.cfg.NetNSDir, id) }

// Setup gives instance id a network namespace with an address on the bridge,
// publishes ports and shapes its traffic to limits. It is idempotent: if id
// is already attached, the existing attachment is returned and ports and
// limits are not changed.
func (m *Manager) Setup(ctx context.Context, id string, ports []Port, limits Limits) (*Attachment, error) {
	if err := checkID(id); err != nil {
		return nil, err
	}
	pm, err := portMappings(ports)
	if err != nil {
		return nil, err
	}
	if err := limits.validate(); err != nil {
		return nil, err
	}
	unlock := m.mu.lock(id)
	defer unlock()
	m.forgetLinks(id)

	nsPath := m.NetNSPath(id)
	state, err := statNetNS(nsPath)
	if err != nil {
		return nil, err
	}
	rt := m.runtimeConf(id, nsPath, pm, limits)
	cached, err := m.cni.GetNetworkListCachedResult(m.list, rt)
	if err != nil {
		slog.WarnContext(ctx, "ignoring unreadable CNI cache", "id", id, "error", err)
		cached = nil
	}
	if cached != nil {
		if state == netnsMounted {
			if err := m.isolate(id, cached); err != nil {
				return nil, err
			}
			return attachmentFrom(nsPath, cached)
		}
		// The namespace is gone (host reboot, manual cleanup) but the lease
		// and rules may not be: release them before starting over.
		if err := m.teardown(ctx, id, nsPath, pm); err != nil {
			return nil, fmt.Errorf("network: clean up stale attachment of %s: %w", id, err)
		}
		state = netnsAbsent
	}

	switch state {
	case netnsStale:
		if err := removeNetNS(nsPath); err != nil {
			return nil, err
		}
		fallthrough
	case netnsAbsent:
		if err := createNetNS(nsPath); err != nil {
			return nil, fmt.Errorf("network: %s: %w", id, err)
		}
	}

	res, err := m.add(ctx, rt)
	if err == nil {
		var att *Attachment
		if att, err = attachmentFrom(nsPath, res); err == nil {
			if err = m.isolate(id, res); err == nil {
				return att, nil
			}
		}
	}
	// Undo the half-done ADD: plugins that ran may hold an address or rules.
	// A fresh context, because ctx may be the reason ADD failed.
	if derr := m.teardown(context.WithoutCancel(ctx), id, nsPath, pm); derr != nil {
		slog.WarnContext(ctx, "network cleanup after failed setup", "id", id, "error", derr)
	}
	return nil, fmt.Errorf("network: CNI ADD for %s: %w", id, err)
}

// Teardown releases instance id's address and published ports and removes
// its namespace. It works from libcni's cache, so it also tears down what a
// previous agent set up; ports is only used when there is no cache entry.
// Tearing down an unknown or already torn down id is not an error.
func (m *Manager) Teardown(ctx context.Context, id string, ports []Port) error {
	if err := checkID(id); err != nil {
		return err
	}
	pm, err := portMappings(ports)
	if err != nil {
		return err
	}
	unlock := m.mu.lock(id)
	defer unlock()
	if err := m.teardown(ctx, id, m.NetNSPath(id), pm); err != nil {
		return fmt.Errorf("network: teardown %s: %w", id, err)
	}
	return nil
}

func (m *Manager) teardown(ctx context.Context, id, nsPath string, pm []map[string]any) error {
	m.forgetLinks(id)
	state, err := statNetNS(nsPath)
	if err != nil {
		return err
	}
	// Before DEL releases the address: whoever gets it next starts with
	// no tenant.
	if err := m.unisolate(id); err != nil {
		return err
	}
	rt := m.runtimeConf(id, nsPath, pm, Limits{})
	list := m.list
	confBytes, cachedRT, err := m.cni.GetNetworkListCachedConfig(m.list, rt)
	if err != nil {
		slog.WarnContext(ctx, "ignoring unreadable CNI cache", "id", id, "error", err)
	} else if confBytes != nil {
		// DEL with the config and port mappings used at ADD time, which may
		// differ from today's.
		if l, err := libcni.ConfListFromBytes(confBytes); err == nil {
			list, rt = l, cachedRT
		} else {
			slog.WarnContext(ctx, "ignoring unparsable cached CNI config", "id", id, "error", err)
		}
	}
	var cached *types100.Result
	if r, err := m.cni.GetNetworkListCachedResult(list, rt); err == nil && r != nil {
		cached, _ = types100.NewResultFromResult(r)
	}
	if state != netnsMounted {
		// Plugins skip in-namespace work when NetNS is empty, and the bridge
		// plugin treats a missing path as already cleaned up.
		rt.NetNS = ""
	}
	if err := m.cni.DelNetworkList(ctx, list, rt); err != nil {
		return fmt.Errorf("CNI DEL: %w", err)
	}
	if cached != nil && pluginMasquerades(list) {
		// Only attachments made before the subnet-wide masquerade (see
		// masq.go) have a per-instance chain. The bridge plugin learns
		// the address to unmasquerade from the interface in the
		// namespace. Without the namespace, or when a sandbox took the
		// address off the interface (gVisor's netstack does), it finds
		// none and leaves its masquerade chain behind; remove it
		// ourselves (missing rules are fine).
		if err := teardownIPMasq(ctx, list.Name, id, cached); err != nil {
			return err
		}
	}
	return removeNetNS(nsPath)
}

func (m *Manager) add(ctx context.Context, rt *libcni.RuntimeConf) (cnitypes.Result, error) {
	if !m.primed.Load() {
		m.primeMu.Lock()
		defer m.primeMu.Unlock()
		if !m.primed.Load() {
			// Before the first instance can send: its traffic leaves
			// through this rule (see masq.go).
			if err := ensureMasquerade(ctx, m.cfg, m.peers); err != nil {
				return nil, err
			}
		}
	}
	_, ports := rt.CapabilityArgs["portMappings"]
	_, bw := rt.CapabilityArgs["bandwidth"]
	list := m.lists[extras{portmap: ports, bandwidth: bw}]
	res, err := m.cni.AddNetworkList(ctx, list, rt)
	if err == nil {
		m.primed.Store(true)
	}
	return res, err
}

// Close removes the host-wide state the Manager installed, the subnet's
// masquerade, once no instance is attached any more (after kanga down
// --purge, or when the last instance went before the agent stopped).
// With instances left it changes nothing: they keep running across an
// agent restart and need their outbound NAT, and the next Manager's first
// ADD finds the rule in place. The bridge stays, like the plugins' own
// shared chains: other software may have come to rely on either. Call it
// after the last Setup: an ADD after Close installs the rule again.
func (m *Manager) Close(ctx context.Context) error {
	ids, err := m.List()
	if err != nil {
		return err
	}
	if len(ids) > 0 {
		slog.DebugContext(ctx, "network: instances still attached; keeping the subnet masquerade", "count", len(ids))
		return nil
	}
	m.primeMu.Lock()
	defer m.primeMu.Unlock()
	m.primed.Store(false)
	if err := removeMasquerade(ctx, m.cfg); err != nil {
		return err
	}
	if m.iso != nil {
		if err := m.iso.remove(); err != nil {
			return err
		}
		resetBridgeSysctls(m.cfg.Bridge)
		_ = os.RemoveAll(m.cfg.isolationDir())
	}
	// The namespace directory is per host (named after StateDir's hash);
	// with no instance left it is empty and would otherwise stay in /run
	// after `kanga down --purge`. Remove refuses a directory that is not
	// empty, so a namespace made meanwhile is never lost.
	if err := os.Remove(m.cfg.NetNSDir); err != nil && !errors.Is(err, fs.ErrNotExist) {
		slog.DebugContext(ctx, "network: keeping the namespace directory", "dir", m.cfg.NetNSDir, "err", err)
	}
	return nil
}

func (m *Manager) runtimeConf(id, nsPath string, pm []map[string]any, limits Limits) *libcni.RuntimeConf {
	rt := &libcni.RuntimeConf{ContainerID: id, NetNS: nsPath, IfName: ifName, CapabilityArgs: map[string]any{}}
	if len(pm) > 0 {
		rt.CapabilityArgs["portMappings"] = pm
	}
	if bw := limits.bandwidthArgs(); bw != nil {
		rt.CapabilityArgs["bandwidth"] = bw
	}
	return rt
}

// List returns the IDs that have a namespace or a cached CNI attachment,
// sorted. The agent compares them with the instances it knows to clean up
// after a crash or reboot.
func (m *Manager) List() ([]string, error) {
	seen := map[string]bool{}
	entries, err := os.ReadDir(m.cfg.NetNSDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("network: list namespaces: %w", err)
	}
	for _, e := range entries {
		if validID.MatchString(e.Name()) {
			seen[e.Name()] = true
		}
	}
	atts, err := m.cni.GetCachedAttachments("")
	if err != nil {
		return nil, fmt.Errorf("network: list CNI cache: %w", err)
	}
	for _, a := range atts {
		if a.Network == m.list.Name {
			seen[a.ContainerID] = true
		}
	}
	ids := make([]string, 0, len(seen))
	for id := range seen {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids, nil
}

func portMappings(ports []Port) ([]map[string]any, error) {
	var pm []map[string]any
	for _, p := range ports {
		proto := strings.ToLower(p.Protocol)
		if proto == "" {
			proto = "tcp"
		}
		if proto != "tcp" && proto != "udp" {
			return nil, fmt.Errorf("network: port protocol %q (want tcp or udp): %w", p.Protocol, errdefs.ErrInvalidArgument)
		}
		if p.HostPort < 1 || p.HostPort > 65535 || p.ContainerPort < 1 || p.ContainerPort > 65535 {
			return nil, fmt.Errorf("network: port %d->%d out of range 1-65535: %w", p.HostPort, p.ContainerPort, errdefs.ErrInvalidArgument)
		}
		m := map[string]any{"hostPort": p.HostPort, "containerPort": p.ContainerPort, "protocol": proto}
		if p.HostIP != "" {
			ip := net.ParseIP(p.HostIP)
			if ip == nil || ip.To4() == nil {
				return nil, fmt.Errorf("network: host IP %q is not an IPv4 address: %w", p.HostIP, errdefs.ErrInvalidArgument)
			}
			m["hostIP"] = ip.String()
		}
		pm = append(pm, m)
	}
	return pm, nil
}

// attachmentFrom picks the address CNI put on the instance's interface.
func attachmentFrom(nsPath string, r cnitypes.Result) (*Attachment, error) {
	res, err := types100.NewResultFromResult(r)
	if err != nil {
		return nil, fmt.Errorf("convert CNI result: %w", err)
	}
	for _, ipc := range res.IPs {
		if ipc.Address.IP.To4() == nil {
			continue
		}
		// Skip addresses on host-side interfaces; CNI marks the instance's
		// with its sandbox path.
		if ipc.Interface != nil && *ipc.Interface < len(res.Interfaces) && res.Interfaces[*ipc.Interface].Sandbox == "" {
			continue
		}
		att := &Attachment{NetNS: nsPath, IP: ipc.Address.IP.String()}
		if ipc.Gateway != nil {
			att.Gateway = ipc.Gateway.String()
		}
		return att, nil
	}
	return nil, fmt.Errorf("CNI result has no IPv4 address for the instance")
}
