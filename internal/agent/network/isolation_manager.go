package network

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"

	cnitypes "github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"

	"github.com/kanga-run/kanga/errdefs"
	"github.com/kanga-run/kanga/internal/atomicfile"
	"github.com/kanga-run/kanga/internal/tenant"
)

// isolationDir keeps what the isolation tables are rebuilt from when an
// agent starts: each attachment's tenant (tenants/<id>) and the last view
// of policies and subnets (view.json). Instance addresses of other hosts
// are not kept: until the first view arrives they are unknown, and
// traffic to them is refused (they lie in known subnets).
func (c Config) isolationDir() string { return filepath.Join(c.StateDir, "isolation") }

func (c Config) tenantFile(id string) string {
	return filepath.Join(c.isolationDir(), "tenants", id)
}

// savedView is the part of a View kept across agent restarts.
type savedView struct {
	Tenants []TenantPolicy `json:"tenants"`
	Subnets []netip.Prefix `json:"subnets"`
}

// startIsolation prepares the bridge and installs the isolation tables
// with everything the state dir knows: the attachments (libcni's cache)
// with their tenants, and the last view. A restarted agent thus replaces
// its predecessor's tables in one step, without a moment unprotected.
func (m *Manager) startIsolation() error {
	is, err := newIsolation(m.cfg)
	if err != nil {
		return err
	}
	if err := prepareBridge(m.cfg.Bridge); err != nil {
		return err
	}
	if host, err := os.ReadFile(HostResolvConf); err == nil {
		is.dns = resolvNameservers(host)
	}
	if b, err := os.ReadFile(filepath.Join(m.cfg.isolationDir(), "view.json")); err == nil {
		var sv savedView
		if json.Unmarshal(b, &sv) == nil {
			is.view = View{Tenants: sv.Tenants, Subnets: sv.Subnets}
			m.peers = sv.Subnets
		}
	}
	ids, err := m.List()
	if err != nil {
		return err
	}
	for _, id := range ids {
		res, err := m.cni.GetNetworkListCachedResult(m.list, m.runtimeConf(id, m.NetNSPath(id), nil, Limits{}))
		if err != nil || res == nil {
			continue
		}
		p, err := portFrom(m.cfg.Bridge, res)
		if err != nil {
			slog.Warn("network: attachment without a usable port; it stays cut off", "id", id, "err", err)
			continue
		}
		is.ports[id] = p
		if b, err := os.ReadFile(m.cfg.tenantFile(id)); err == nil {
			if t := strings.TrimSpace(string(b)); tenant.Validate(t) == nil {
				is.local[p.ip] = t
			}
		}
	}
	if err := is.rebuild(); err != nil {
		return err
	}
	m.iso = is
	return nil
}

// isolate records an attachment's port once CNI ADD made it (or finds
// it in the cache after a restart).
func (m *Manager) isolate(id string, res cnitypes.Result) error {
	if m.iso == nil {
		return nil
	}
	p, err := portFrom(m.cfg.Bridge, res)
	if err != nil {
		return fmt.Errorf("network: isolate %s: %w", id, err)
	}
	return m.iso.addPort(id, p)
}

func (m *Manager) unisolate(id string) error {
	if m.iso == nil {
		return nil
	}
	if err := os.Remove(m.cfg.tenantFile(id)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("network: forget the tenant of %s: %w", id, err)
	}
	return m.iso.removePort(id)
}

// Assign gives attachment id to tenant: from now on its instance reaches
// what the tenant may reach, and is reached by what may reach the tenant.
// An attachment without a tenant (a pooled sandbox nobody claimed) reaches
// nothing. Assign is idempotent; without isolation it does nothing.
func (m *Manager) Assign(ctx context.Context, id, tenantName string) error {
	if m.iso == nil {
		return nil
	}
	if err := checkID(id); err != nil {
		return err
	}
	if err := tenant.Validate(tenantName); err != nil {
		return err
	}
	unlock := m.mu.lock(id)
	defer unlock()
	m.iso.mu.Lock()
	p, ok := m.iso.ports[id]
	m.iso.mu.Unlock()
	if !ok {
		return fmt.Errorf("network: assign %s to tenant %s: no such attachment: %w", id, tenantName, errdefs.ErrNotFound)
	}
	// The file first: an agent that dies in between restores the same.
	if err := os.MkdirAll(filepath.Dir(m.cfg.tenantFile(id)), 0o700); err != nil {
		return err
	}
	if err := atomicfile.WriteNoSync(m.cfg.tenantFile(id), []byte(tenantName+"\n"), 0o600); err != nil {
		return err
	}
	return m.iso.assign(p.ip, tenantName)
}

// SetView applies what the control plane says of the rest of the
// platform: tenants' policies, other hosts' subnets and the tenants of
// their instances. Without isolation it does nothing.
func (m *Manager) SetView(ctx context.Context, v View) error {
	if m.iso == nil {
		return nil
	}
	sv := savedView{Tenants: v.Tenants, Subnets: v.Subnets}
	b, err := json.Marshal(sv)
	if err != nil {
		return err
	}
	path := filepath.Join(m.cfg.isolationDir(), "view.json")
	m.primeMu.Lock()
	saved := m.savedView == string(b)
	m.primeMu.Unlock()
	if !saved {
		if err := os.MkdirAll(m.cfg.isolationDir(), 0o700); err != nil {
			return err
		}
		if err := atomicfile.WriteNoSync(path, b, 0o600); err != nil {
			return err
		}
		m.primeMu.Lock()
		m.savedView = string(b)
		m.primeMu.Unlock()
	}
	if err := m.iso.setView(v); err != nil {
		return err
	}
	m.primeMu.Lock()
	defer m.primeMu.Unlock()
	if slices.Equal(m.peers, v.Subnets) {
		return nil
	}
	m.peers = slices.Clone(v.Subnets)
	if m.primed.Load() {
		return ensureMasquerade(ctx, m.cfg, m.peers)
	}
	return nil
}

// portFrom reads an attachment's port from its CNI result: the bridge
// plugin reports the host end of the veth (no sandbox, not the bridge)
// and the instance end with its MAC, which carries the address.
func portFrom(bridge string, r cnitypes.Result) (port, error) {
	res, err := types100.NewResultFromResult(r)
	if err != nil {
		return port{}, err
	}
	var p port
	for _, ipc := range res.IPs {
		if ipc.Address.IP.To4() == nil || ipc.Interface == nil || *ipc.Interface >= len(res.Interfaces) {
			continue
		}
		ifc := res.Interfaces[*ipc.Interface]
		if ifc.Sandbox == "" {
			continue
		}
		mac, err := net.ParseMAC(ifc.Mac)
		if err != nil {
			return port{}, fmt.Errorf("instance interface MAC %q: %w", ifc.Mac, err)
		}
		a, _ := netip.AddrFromSlice(ipc.Address.IP.To4())
		p.ip, p.mac = a, mac
	}
	for _, ifc := range res.Interfaces {
		if ifc.Sandbox == "" && ifc.Name != bridge {
			p.veth = ifc.Name
		}
	}
	if !p.ip.IsValid() || p.veth == "" {
		return port{}, fmt.Errorf("CNI result names no host veth and instance address")
	}
	return p, nil
}

// resolvNameservers lists the IPv4 nameservers of a resolv.conf; the
// isolation lets instances reach those that are host addresses on port 53.
func resolvNameservers(conf []byte) []netip.Addr {
	var out []netip.Addr
	for _, line := range strings.Split(string(conf), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == "nameserver" {
			if a, err := netip.ParseAddr(f[1]); err == nil && a.Is4() && !a.IsLoopback() {
				out = append(out, a)
			}
		}
	}
	return out
}
