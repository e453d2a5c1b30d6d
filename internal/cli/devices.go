package cli

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/kanga-run/kanga/api"
)

// parseDevice reads --device: KIND, KIND=N or KIND=NAME. A number after
// the = is a count, as Kubernetes counts extended resources
// (nvidia.com/gpu: 2); a device whose CDI name is a number (an NVIDIA GPU
// index) is named in a -f spec's devices[].name instead.
func parseDevice(s string) (api.DeviceRequest, error) {
	kind, rest, named := strings.Cut(s, "=")
	if kind == "" || (named && rest == "") {
		return api.DeviceRequest{}, fmt.Errorf("--device %q: want KIND, KIND=N or KIND=NAME, e.g. nvidia.com/gpu=2 or kanga.dev/mock=m0", s)
	}
	if !named {
		return api.DeviceRequest{Kind: kind, Count: 1}, nil
	}
	if n, err := strconv.Atoi(rest); err == nil {
		return api.DeviceRequest{Kind: kind, Count: n}, nil
	}
	return api.DeviceRequest{Kind: kind, Name: s}, nil
}

func newDeviceCommand(o *options) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "device",
		Short: "Attach host devices to running instances, and detach them",
		Long: `Attach a host device to a running instance, or detach it, without a restart:
its host makes the device's nodes in every running container and allows them
in the container's device cgroup. The device stays the instance's until it is
detached or the instance removed (restarts and agent restarts keep it);
kanga inspect shows it in status.devices. Not for gVisor instances.`,
	}
	attach := &cobra.Command{
		Use:   "attach INSTANCE KIND[=N|=NAME]",
		Short: "Give a running instance a device",
		Example: `  kanga device attach web kanga.dev/mock=m0
  kanga device attach web nvidia.com/gpu      # one of the host's free GPUs`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			req, err := parseDevice(args[1])
			if err != nil {
				return err
			}
			c, err := o.client()
			if err != nil {
				return err
			}
			before, err := c.GetInstance(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			inst, err := c.AttachDevice(cmd.Context(), args[0], req)
			if err != nil {
				return err
			}
			for _, d := range inst.Spec.Devices[len(before.Spec.Devices):] {
				fmt.Fprintln(cmd.OutOrStdout(), d.Name)
			}
			return nil
		},
	}
	detach := &cobra.Command{
		Use:     "detach INSTANCE NAME",
		Short:   "Take a device from a running instance",
		Example: `  kanga device detach web kanga.dev/mock=m0`,
		Args:    cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			if _, err := c.DetachDevice(cmd.Context(), args[0], args[1]); err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), args[1])
			return nil
		},
	}
	cmd.AddCommand(attach, detach)
	return cmd
}
