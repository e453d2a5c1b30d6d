package cli

import (
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/kanga-run/kanga/api"
)

func newPortCommand(o *options) *cobra.Command {
	return &cobra.Command{
		Use:   "port NAME [PRIVATE_PORT[/PROTO]]",
		Short: "List an instance's published ports, or the host address of one",
		Example: `  kanga port web
  kanga port web 80/tcp`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			var want *portKey
			if len(args) == 2 {
				k, err := parsePortKey(args[1])
				if err != nil {
					return err
				}
				want = &k
			}
			c, err := o.client()
			if err != nil {
				return err
			}
			inst, err := c.GetInstance(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return printPorts(cmd.OutOrStdout(), inst, args[0], want)
		},
	}
}

// portKey is a container port and its protocol.
type portKey struct {
	port  int
	proto string
}

func (k portKey) String() string { return strconv.Itoa(k.port) + "/" + k.proto }

// parsePortKey parses PORT[/PROTO] as docker port does.
func parsePortKey(s string) (portKey, error) {
	p, proto, hasProto := strings.Cut(s, "/")
	k := portKey{proto: "tcp"}
	if hasProto {
		k.proto = strings.ToLower(proto)
	}
	n, err := strconv.Atoi(p)
	if err != nil || n < 1 || n > 65535 || (k.proto != "tcp" && k.proto != "udp") {
		return k, fmt.Errorf("invalid port %q: expected PRIVATE_PORT[/tcp|udp], a port from 1 to 65535", s)
	}
	k.port = n
	return k, nil
}

// printPorts prints the published ports as docker port does:
// "80/tcp -> 0.0.0.0:8080" for each, or just the host addresses of want.
func printPorts(w io.Writer, inst api.Instance, ref string, want *portKey) error {
	found := false
	for _, p := range inst.Spec.Ports {
		k := portKey{port: p.ContainerPort, proto: p.Protocol}
		if k.proto == "" {
			k.proto = "tcp"
		}
		if want != nil && k != *want {
			continue
		}
		found = true
		hostIP := p.HostIP
		if hostIP == "" {
			// Published on every address of the host.
			hostIP = "0.0.0.0"
		}
		addr := net.JoinHostPort(hostIP, strconv.Itoa(p.HostPort))
		if want != nil {
			fmt.Fprintln(w, addr)
		} else {
			fmt.Fprintf(w, "%s -> %s\n", k, addr)
		}
	}
	if want != nil && !found {
		return fmt.Errorf("no public port '%s' published for %s", want, ref)
	}
	return nil
}
