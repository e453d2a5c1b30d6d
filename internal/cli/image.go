package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"sort"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/kanga-run/kanga/api"
)

func newImageCommand(o *options) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "image",
		Short: "Manage images",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return cmd.Help()
		},
	}
	cmd.AddCommand(newImageImportCommand(o), newImagePullCommand(o), newImageLsCommand(o, "ls"), newImageRmCommand(o), newImageInspectCommand(o), newImagePrewarmCommand(o))
	return cmd
}

// newImagesCommand is `kanga images`, docker's alias of `image ls`.
func newImagesCommand(o *options) *cobra.Command {
	return newImageLsCommand(o, "images")
}

func newImageImportCommand(o *options) *cobra.Command {
	return &cobra.Command{
		Use:   "import FILE",
		Short: `Import images from an archive (docker save or OCI layout tar; "-" reads stdin)`,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			var (
				r    io.Reader = cmd.InOrStdin()
				size int64     = -1
			)
			if args[0] != "-" {
				f, err := os.Open(args[0])
				if err != nil {
					return err
				}
				defer f.Close()
				if st, err := f.Stat(); err == nil && st.Mode().IsRegular() {
					size = st.Size()
				}
				r = f
			}
			pp := newProgressPrinter(cmd.ErrOrStderr(), o.now)
			ctx, cancel := context.WithCancel(cmd.Context())
			defer cancel()
			cr := &countingReader{r: r, onEOF: func(n int64) {
				pp.finish("upload", uploadLine("Uploaded", n, size))
			}}
			ticked := make(chan struct{})
			go func() {
				defer close(ticked)
				tickUpload(ctx, pp, cr, size)
			}()
			images, err := c.ImportImage(ctx, cr, size, func(pr api.Progress) {
				pp.update(pr.Status, progressLine(pr))
			})
			cancel()
			<-ticked
			pp.end()
			if err != nil {
				return err
			}
			for _, img := range images {
				fmt.Fprintln(cmd.OutOrStdout(), img.Name)
			}
			return nil
		},
	}
}

// tickUpload redraws the upload progress until ctx ends.
func tickUpload(ctx context.Context, pp *progressPrinter, cr *countingReader, size int64) {
	interval := time.Second
	if pp.tty {
		interval = 200 * time.Millisecond
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		pp.update("upload", uploadLine("Uploading", cr.n.Load(), size))
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func newImagePullCommand(o *options) *cobra.Command {
	return &cobra.Command{
		Use:   "pull REF",
		Short: "Pull an image from a registry",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			pp := newProgressPrinter(cmd.ErrOrStderr(), o.now)
			img, err := c.PullImage(cmd.Context(), args[0], func(pr api.Progress) {
				pp.update(pr.Status, progressLine(pr))
			})
			pp.end()
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s %s\n", img.Name, img.Digest)
			return nil
		},
	}
}

func newImageRmCommand(o *options) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:     "rm REF...",
		Aliases: []string{"remove"},
		Short:   "Remove images of your tenant from every host",
		Long: `Remove images of your tenant from every host. Content another tenant's image
shares stays. An image that an instance of yours uses (one that is not
terminal) is not removed unless -f is given: the instance then keeps running
and its containers keep restarting from the layers they have, but no new
instance can use the image until it is imported or pulled again.`,
		Example: "  kanga image rm kanga.test/app:v1\n  kanga image rm -f kanga.test/app:v1",
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			return forEachName(cmd.ErrOrStderr(), args, func(ref string) error {
				if err := c.RemoveImage(cmd.Context(), ref, force); err != nil {
					return err
				}
				fmt.Fprintln(cmd.OutOrStdout(), ref)
				return nil
			})
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "remove the image even while instances use it")
	return cmd
}

func newImagePrewarmCommand(o *options) *cobra.Command {
	var hosts int
	cmd := &cobra.Command{
		Use:   "prewarm REF",
		Short: "Make an image ready to start on hosts ahead of a burst",
		Long: `Make an image ready to start on hosts ahead of a burst: each host pulls
it if it is missing (an imported image must be there already), unpacks it
and resolves its layers and config, so the first start of the burst is as
fast as the others. Prints the hosts that have it ready.`,
		Example: "  kanga image prewarm kanga.test/busybox:latest --hosts 3",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if hosts < 0 {
				return fmt.Errorf("--hosts %d: give how many hosts should have the image ready, or 0 for all", hosts)
			}
			c, err := o.client()
			if err != nil {
				return err
			}
			res, err := c.PrewarmImage(cmd.Context(), args[0], hosts)
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 8, 3, ' ', 0)
			fmt.Fprintln(tw, "HOST\tIMAGE\tDIGEST\tPULLED")
			for _, h := range res.Hosts {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%v\n", h.Host, res.Image.Name, shortDigest(res.Image.Digest), h.Pulled)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			if hosts > len(res.Hosts) {
				fmt.Fprintf(cmd.ErrOrStderr(), "asked for %d hosts; the platform has %d that can run it\n", hosts, len(res.Hosts))
			}
			return nil
		},
	}
	cmd.Flags().IntVar(&hosts, "hosts", 0, "how many hosts should have the image ready (0: every host)")
	return cmd
}

func newImageInspectCommand(o *options) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "inspect IMAGE [IMAGE...]",
		Short: "Show images as JSON: digest, size, default command and the hosts that hold them",
		Long: `Show images as JSON: a JSON array of the images found, with their digest,
size, default command (entrypoint and cmd) and the hosts that hold them.
Inspecting never pulls. Like docker image inspect, what is found is printed
and each image that is not is reported; the exit code is then 1.`,
		Example: `  kanga image inspect kanga.test/busybox --format '{{.Digest}} {{join .Cmd " "}}'`,
		Args:    cobra.MinimumNArgs(1),
	}
	out := addOutputFlags(cmd, false)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		c, err := o.client()
		if err != nil {
			return err
		}
		var found []api.ImageDetail
		err = forEachName(cmd.ErrOrStderr(), args, func(ref string) error {
			d, err := c.GetImage(cmd.Context(), ref)
			if err != nil {
				return err
			}
			found = append(found, d)
			return nil
		})
		if werr := printFound(cmd, out, found, func(d api.ImageDetail) string { return d.Name }); werr != nil {
			return werr
		}
		return err
	}
	return cmd
}

func newImageLsCommand(o *options, use string) *cobra.Command {
	cmd := &cobra.Command{
		Use:     use,
		Aliases: []string{"list"},
		Short:   "List images",
		Args:    cobra.NoArgs,
	}
	out := addOutputFlags(cmd, true)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		c, err := o.client()
		if err != nil {
			return err
		}
		images, err := c.ListImages(cmd.Context())
		if err != nil {
			return err
		}
		sort.Slice(images, func(i, j int) bool { return images[i].Name < images[j].Name })
		now := o.now()
		return out.print(cmd.OutOrStdout(), listView(api.ImageList{Items: images}, images,
			func(img api.Image) string { return img.Name },
			func(w io.Writer, _ bool) error { return writeImages(w, images, now) }))
	}
	if use == "images" {
		cmd.Aliases = nil
	}
	return cmd
}

func writeImages(w io.Writer, images []api.Image, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)
	fmt.Fprintln(tw, "IMAGE\tDIGEST\tSIZE\tCREATED\tLAST STARTED")
	for _, img := range images {
		last := "-"
		if img.LastUsedAt != nil {
			last = ago(now, *img.LastUsedAt)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", img.Name, shortDigest(img.Digest), humanSize(img.Size), ago(now, img.CreatedAt), last)
	}
	return tw.Flush()
}
