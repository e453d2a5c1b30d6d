package cli

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/kanga-run/kanga/api"
)

func newVolumeCommand(o *options) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "volume",
		Short: "Create, list, inspect and remove persistent volumes of your tenant",
		Long: `Manage persistent volumes: filesystems of a fixed size on one host whose data
outlives the instances that use them. kanga run -v NAME:/data mounts one;
one instance at a time may hold a volume, from its create until its removal,
and it runs on the volume's host. A write past the size fails with ENOSPC.
--encrypted encrypts the volume at rest with a key of its own, which the
control plane keeps encrypted and hands only to the volume's host.`,
	}
	var req api.CreateVolumeRequest
	create := &cobra.Command{
		Use:   "create NAME --size SIZE [--encrypted] [--host HOST]",
		Short: "Create a persistent volume",
		Example: `  kanga volume create data --size 1Gi
  kanga volume create secrets --size 100Mi --encrypted`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			r := req
			r.Name = args[0]
			v, err := c.CreateVolume(cmd.Context(), r)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), v.Name)
			return nil
		},
	}
	create.Flags().StringVar(&req.Size, "size", "", "size the tenant can write, 16Mi to 1Ti (required)")
	create.Flags().BoolVar(&req.Encrypted, "encrypted", false, "encrypt the volume at rest (fscrypt, a key per volume)")
	create.Flags().StringVar(&req.Host, "host", "", "host to keep the volume on (default: chosen by the platform)")
	_ = create.MarkFlagRequired("size")

	ls := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List persistent volumes",
		Args:    cobra.NoArgs,
	}
	lsOut := addOutputFlags(ls, true)
	ls.RunE = func(cmd *cobra.Command, args []string) error {
		c, err := o.client()
		if err != nil {
			return err
		}
		items, err := c.ListVolumes(cmd.Context())
		if err != nil {
			return err
		}
		now := o.now()
		return lsOut.print(cmd.OutOrStdout(), listView(api.PersistentVolumeList{Items: items}, items,
			func(v api.PersistentVolume) string { return v.Name },
			func(w io.Writer, _ bool) error { return writeVolumes(w, items, now) }))
	}
	inspect := &cobra.Command{
		Use:   "inspect NAME [NAME...]",
		Short: "Show persistent volumes as JSON",
		Args:  cobra.MinimumNArgs(1),
	}
	inOut := addOutputFlags(inspect, false)
	inspect.RunE = func(cmd *cobra.Command, args []string) error {
		c, err := o.client()
		if err != nil {
			return err
		}
		var found []api.PersistentVolume
		err = forEachName(cmd.ErrOrStderr(), args, func(name string) error {
			v, err := c.GetVolume(cmd.Context(), name)
			if err != nil {
				return err
			}
			found = append(found, v)
			return nil
		})
		if werr := printFound(cmd, inOut, found, func(v api.PersistentVolume) string { return v.Name }); werr != nil {
			return werr
		}
		return err
	}
	rm := &cobra.Command{
		Use:     "rm NAME...",
		Aliases: []string{"remove"},
		Short:   "Remove persistent volumes and their data (not one an instance holds)",
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			return forEachName(cmd.ErrOrStderr(), args, func(name string) error {
				if err := c.DeleteVolume(cmd.Context(), name); err != nil {
					return err
				}
				fmt.Fprintln(cmd.OutOrStdout(), name)
				return nil
			})
		},
	}
	cmd.AddCommand(create, ls, inspect, rm)
	return cmd
}

func writeVolumes(w io.Writer, items []api.PersistentVolume, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 4, 3, ' ', 0)
	fmt.Fprintln(tw, "NAME\tSIZE\tENCRYPTED\tHOST\tSTATUS\tHOLDER\tCREATED")
	for _, v := range items {
		enc := "no"
		if v.Encrypted {
			enc = "yes"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", v.Name, binarySize(v.Size), enc, v.Host, v.Status.Phase, orNone(v.Status.Holder), ago(now, v.CreatedAt))
	}
	return tw.Flush()
}

// binarySize renders a size as it was most likely given: "100Mi", "1Gi".
func binarySize(n int64) string {
	for _, u := range []struct {
		s string
		m int64
	}{{"Ti", 1 << 40}, {"Gi", 1 << 30}, {"Mi", 1 << 20}, {"Ki", 1 << 10}} {
		if n >= u.m && n%u.m == 0 {
			return fmt.Sprintf("%d%s", n/u.m, u.s)
		}
	}
	return humanSize(n)
}

// volumeMounts adds run's -v NAME:/PATH[:ro] to every container: NAME is
// a volume the request already declares (in a spec file), or else a
// persistent volume of the tenant, which it declares.
func volumeMounts(req *api.CreateInstanceRequest, vols []string) error {
	for _, v := range vols {
		parts := strings.Split(v, ":")
		if len(parts) < 2 || len(parts) > 3 || parts[0] == "" || !strings.HasPrefix(parts[1], "/") {
			return fmt.Errorf("-v %q: give NAME:/PATH or NAME:/PATH:ro, e.g. -v data:/data", v)
		}
		name, path, ro := parts[0], parts[1], false
		if len(parts) == 3 {
			switch parts[2] {
			case "ro":
				ro = true
			case "rw":
			default:
				return fmt.Errorf("-v %q: the mode is ro or rw, not %q", v, parts[2])
			}
		}
		declared := false
		for _, sv := range req.Spec.Volumes {
			declared = declared || sv.Name == name
		}
		if !declared {
			req.Spec.Volumes = append(req.Spec.Volumes, api.Volume{Name: name, PersistentVolume: &api.PersistentVolumeSource{Name: name}})
		}
		for j := range req.Spec.Containers {
			c := &req.Spec.Containers[j]
			c.VolumeMounts = append(c.VolumeMounts, api.VolumeMount{Name: name, MountPath: path, ReadOnly: ro})
		}
	}
	return nil
}
