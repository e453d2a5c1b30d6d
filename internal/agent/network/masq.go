package network

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os/exec"
	"strings"

	"github.com/containernetworking/cni/libcni"
)

// Outbound NAT for the whole instance subnet is one chain and one jump to
// it, installed once per host by the Manager, instead of the bridge
// plugin's ipMasq, which creates a chain and three rules per instance at
// ADD and removes them at DEL: about nine iptables executions each way,
// every one of which reads (and with the nft backend, checks the rule
// against) the whole nat table, so each instance made the next one's ADD
// and DEL slower. The chain does what the plugin's per-instance chain did,
// for every source address of the subnet:
//
//	-A POSTROUTING -s <subnet> -m comment --comment "..." -j KANGA-MASQ-<bridge>
//	-A KANGA-MASQ-<bridge> -d <subnet> -j ACCEPT
//	-A KANGA-MASQ-<bridge> ! -d 224.0.0.0/4 -j MASQUERADE
//
// so traffic that stays inside the subnet (instance to instance, instance
// to its gateway) keeps its addresses, multicast is left alone, and all
// else leaves behind the host's address. With tenant isolation, traffic
// to other hosts' instance subnets keeps its address too (one more
// ACCEPT line each): their agents check the caller's tenant by it. The jump is appended, after
// portmap's hairpin masquerade jump, which portmap puts first.

// masqChain names the subnet's masquerade chain after the bridge: one
// bridge, one subnet, one agent per host. iptables chain names may be 28
// bytes; a bridge name is at most 15.
func masqChain(bridge string) string { return "KANGA-MASQ-" + bridge }

func (c Config) masqComment() string {
	return fmt.Sprintf("kanga: masquerade %s leaving bridge %s (chain %s)", c.Subnet, c.Bridge, masqChain(c.Bridge))
}

func (c Config) masqJump() []string {
	return []string{"POSTROUTING", "-s", c.Subnet, "-m", "comment", "--comment", c.masqComment(), "-j", masqChain(c.Bridge)}
}

// multicastNet is left unmasqueraded, as the bridge plugin does: instances
// may talk to others on the local network by multicast.
const multicastNet = "224.0.0.0/4"

// ensureMasquerade installs the subnet's masquerade chain and the jump to
// it, or puts them back as they should be. It is idempotent: the chain is
// replaced atomically (iptables-restore flushes a chain it declares, even
// with --noflush, and touches no other chain), and the jump is only added
// when missing.
func ensureMasquerade(ctx context.Context, c Config, peers []netip.Prefix) error {
	chain := masqChain(c.Bridge)
	var b strings.Builder
	fmt.Fprintf(&b, "*nat\n:%[1]s - [0:0]\n-A %[1]s -d %[2]s -j ACCEPT\n", chain, c.Subnet)
	for _, p := range peers {
		if p.String() != c.Subnet {
			fmt.Fprintf(&b, "-A %s -d %s -j ACCEPT\n", chain, p)
		}
	}
	fmt.Fprintf(&b, "-A %[1]s ! -d %[2]s -j MASQUERADE\nCOMMIT\n", chain, multicastNet)
	rules := b.String()
	cmd := exec.CommandContext(ctx, "iptables-restore", "-w", "--noflush")
	cmd.Stdin = strings.NewReader(rules)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("network: install masquerade chain %s: iptables-restore: %w: %s", chain, err, bytes.TrimSpace(out))
	}
	jump := c.masqJump()
	if iptables(ctx, append([]string{"-t", "nat", "-C"}, jump...)...) == nil {
		return nil
	}
	if err := iptables(ctx, append([]string{"-t", "nat", "-A"}, jump...)...); err != nil {
		return fmt.Errorf("network: install masquerade for %s: %w", c.Subnet, err)
	}
	return nil
}

// RemoveMasquerade removes the outbound NAT that a Manager on bridge and
// subnet installed, whether or not instances are left: for cleaning up a
// host whose agent is gone for good (tests, decommissioning). A running
// agent's Manager.Close does it by itself once no instance is left.
func RemoveMasquerade(ctx context.Context, bridge, subnet string) error {
	c, err := Config{StateDir: "/", Bridge: bridge, Subnet: subnet}.withDefaults()
	if err != nil {
		return err
	}
	return removeMasquerade(ctx, c)
}

// removeMasquerade removes the jump (every copy) and the chain; missing
// ones are fine.
func removeMasquerade(ctx context.Context, c Config) error {
	del := append([]string{"-t", "nat", "-D"}, c.masqJump()...)
	for range 100 { // a crashed install may have added it more than once
		if iptables(ctx, del...) != nil {
			break
		}
	}
	chain := masqChain(c.Bridge)
	if iptables(ctx, "-t", "nat", "-n", "-L", chain) != nil {
		return nil // no such chain
	}
	if err := iptables(ctx, "-t", "nat", "-F", chain); err != nil {
		return fmt.Errorf("network: remove masquerade chain: %w", err)
	}
	if err := iptables(ctx, "-t", "nat", "-X", chain); err != nil {
		return fmt.Errorf("network: remove masquerade chain: %w", err)
	}
	return nil
}

// pluginMasquerades says whether list's bridge plugin masquerades per
// instance (ipMasq), as lists cached by agents before the subnet-wide
// masquerade did: only their attachments may have a per-instance chain
// to clean up.
func pluginMasquerades(list *libcni.NetworkConfigList) bool {
	for _, p := range list.Plugins {
		if p.Network.Type != "bridge" {
			continue
		}
		var conf struct {
			IPMasq bool `json:"ipMasq"`
		}
		if json.Unmarshal(p.Bytes, &conf) == nil && conf.IPMasq {
			return true
		}
	}
	return false
}
