package network

import (
	"encoding/json"
	"fmt"
)

// cniVersion is the spec version of the generated conflist. Debian's plugins
// 1.1.1 speak up to 1.0.0, and 1.0.0 makes libcni cache results so that DEL
// works after an agent restart.
const cniVersion = "1.0.0"

// buildConfList renders the CNI network list for cfg with every plugin. It
// is the one place the instance network is described; firewall and tenant
// isolation plug in here later as extra entries of "plugins".
//
// The loopback interface is not part of the list: it is brought up when the
// namespace is created, which saves a plugin exec per instance.
func buildConfList(cfg Config) ([]byte, error) {
	return buildConfListFor(cfg, extras{portmap: true, bandwidth: true})
}

// extras says which plugins after the bridge an attachment needs: portmap
// when it publishes ports, bandwidth when it has limits.
type extras struct{ portmap, bandwidth bool }

// buildConfListFor renders the list for an attachment that needs e: the
// bridge, then only the plugins that have something to do, under the same
// network name (so the same address leases). portmap and bandwidth would
// pass an ADD without their capability argument through unchanged, but
// each is a process to start, and portmap's DEL runs iptables to look for
// chains it never made: for an attachment without ports, that was about
// a third of the plugin time of its whole network lifecycle. DEL uses the
// list cached at ADD, so an attachment is always torn down by the plugins
// that set it up.
func buildConfListFor(cfg Config, e extras) ([]byte, error) {
	list := confList(cfg)
	all := list["plugins"].([]any)
	plugins := all[:1]
	if e.portmap {
		plugins = append(plugins, all[1])
	}
	if e.bandwidth {
		plugins = append(plugins, all[2])
	}
	list["plugins"] = plugins
	return encodeConfList(list)
}

func confList(cfg Config) map[string]any {
	return map[string]any{
		"cniVersion": cniVersion,
		"name":       cfg.NetworkName,
		"plugins": []any{
			map[string]any{
				"type":   "bridge",
				"bridge": cfg.Bridge,
				// The bridge gets the gateway address, so the host can reach
				// instance IPs directly and instances reach the host.
				"isGateway": true,
				// Outbound traffic is masqueraded behind the host's
				// address by one rule for the whole subnet that the
				// Manager installs (masq.go), not by a chain per
				// instance: that made each ADD and DEL run iptables
				// about nine times, slower with every instance.
				"ipMasq": false,
				// Hairpin lets an instance reach itself through a published port.
				"hairpinMode": true,
				"ipam": map[string]any{
					"type":    "host-local",
					"ranges":  [][]map[string]string{{{"subnet": cfg.Subnet}}},
					"routes":  []map[string]string{{"dst": "0.0.0.0/0"}},
					"dataDir": cfg.ipamDir(),
				},
			},
			map[string]any{
				"type":         "portmap",
				"capabilities": map[string]bool{"portMappings": true},
				// snat masquerades hairpin and 127.0.0.1 traffic and sets
				// route_localnet on the bridge, so a port published on
				// 127.0.0.1 is reachable from the host itself.
				"snat": true,
			},
			map[string]any{
				// Shapes the instance's traffic when the runtime config
				// carries rates; without them it passes the result through.
				// DEL removes its ifb device; its qdiscs go with the veth.
				"type":         "bandwidth",
				"capabilities": map[string]bool{"bandwidth": true},
			},
		},
	}
}

func encodeConfList(list map[string]any) ([]byte, error) {
	b, err := json.MarshalIndent(list, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode CNI conflist: %w", err)
	}
	return b, nil
}

// pluginTypes returns the plugin binaries the conflist needs.
func pluginTypes() []string { return []string{"bridge", "host-local", "portmap", "bandwidth"} }
