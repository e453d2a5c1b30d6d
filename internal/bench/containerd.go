package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/containerd/containerd"
	runcoptions "github.com/containerd/containerd/api/types/runc/options"
	"github.com/containerd/containerd/cio"
	cerrdefs "github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/oci"

	"github.com/kanga-run/kanga/errdefs"
)

// PathContainerd names the path through containerd's client.
const PathContainerd = "containerd client"

// Namespace is the containerd namespace the containerd path works in. It is
// Kanga's own, because images are per namespace and the platform's image is
// the one to start; the containers are told apart by LabelBench and their
// "bench-" ids.
const Namespace = "kanga"

// LabelBench marks containers the benchmark made.
const LabelBench = "kanga.dev/bench"

// shimRuntime is the shim every Kanga runtime class uses; the class picks
// the OCI runtime through the shim's BinaryName option.
const shimRuntime = "io.containerd.runc.v2"

// snapshotter is the one Kanga's agent unpacks images for.
const snapshotter = "overlayfs"

// ContainerdStarter starts containers with containerd's Go client, the
// way Kanga's agent does underneath, but with a long-lived client and
// nothing else: no API, no store, no network setup.
type ContainerdStarter struct {
	Client *containerd.Client
	// Image is the normalized name of an image in Namespace.
	Image string
	// Binary is the OCI runtime the shim runs.
	Binary string
	Args   []string
	// TempDir is where the runtime state directory is made; "" means
	// os.TempDir().
	TempDir string

	img  containerd.Image
	root string
}

var _ Starter = (*ContainerdStarter)(nil)

func (c *ContainerdStarter) Path() string { return PathContainerd }

func (c *ContainerdStarter) ns(ctx context.Context) context.Context {
	return namespaces.WithNamespace(ctx, Namespace)
}

// Prepare resolves the image and makes sure it is unpacked, so that no
// start pays for the unpack.
func (c *ContainerdStarter) Prepare(ctx context.Context) error {
	ctx = c.ns(ctx)
	img, err := c.Client.GetImage(ctx, c.Image)
	if err != nil {
		if cerrdefs.IsNotFound(err) {
			return fmt.Errorf("image %s is not in containerd namespace %s: import it with `kanga image import`: %w", c.Image, Namespace, errdefs.ErrNotFound)
		}
		return fmt.Errorf("looking up image %s: %w", c.Image, err)
	}
	ok, err := img.IsUnpacked(ctx, snapshotter)
	if err != nil {
		return err
	}
	if !ok {
		if err := img.Unpack(ctx, snapshotter); err != nil {
			return fmt.Errorf("unpacking %s: %w", c.Image, err)
		}
	}
	c.img = img
	// The runtime's own state lives apart from Kanga's (the class's Root
	// under the data dir) so that nothing here can touch the platform's.
	c.root, err = os.MkdirTemp(c.TempDir, "kanga-bench-ctrd-")
	return err
}

// Start times NewContainer (snapshot, spec, record) through NewTask and
// Start, as the agent does for each container.
func (c *ContainerdStarter) Start(ctx context.Context, id string) (Sample, error) {
	ctx = c.ns(ctx)
	t0 := time.Now()
	ctr, err := c.Client.NewContainer(ctx, id,
		containerd.WithImage(c.img),
		containerd.WithSnapshotter(snapshotter),
		containerd.WithNewSnapshot(id, c.img),
		containerd.WithRuntime(shimRuntime, &runcoptions.Options{
			BinaryName: c.Binary,
			Root:       filepath.Join(c.root, "runtime"),
		}),
		containerd.WithNewSpec(
			oci.WithImageConfig(c.img),
			oci.WithProcessArgs(c.Args...),
			oci.WithCgroup(benchCgroupParent+"/"+id),
		),
		containerd.WithContainerLabels(map[string]string{LabelBench: "true"}),
	)
	if err != nil {
		return Sample{}, fmt.Errorf("new container: %w", err)
	}
	t1 := time.Now()
	task, err := ctr.NewTask(ctx, cio.NullIO)
	if err != nil {
		return Sample{}, fmt.Errorf("new task: %w", err)
	}
	t2 := time.Now()
	if err := task.Start(ctx); err != nil {
		return Sample{}, fmt.Errorf("start task: %w", err)
	}
	t3 := time.Now()
	return Sample{Total: t3.Sub(t0), Phases: []Phase{
		{Name: "new container", Duration: t1.Sub(t0)},
		{Name: "new task (shim, runtime create)", Duration: t2.Sub(t1)},
		{Name: "task start", Duration: t3.Sub(t2)},
	}}, nil
}

// Remove kills and deletes the task, then the container and its snapshot.
func (c *ContainerdStarter) Remove(ctx context.Context, id string) error {
	ctx = c.ns(ctx)
	ctr, err := c.Client.LoadContainer(ctx, id)
	if cerrdefs.IsNotFound(err) {
		return nil
	} else if err != nil {
		return err
	}
	if task, err := ctr.Task(ctx, nil); err == nil {
		if _, err := task.Delete(ctx, containerd.WithProcessKill); err != nil && !cerrdefs.IsNotFound(err) {
			return fmt.Errorf("deleting task: %w", err)
		}
	} else if !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("loading task: %w", err)
	}
	if err := ctr.Delete(ctx, containerd.WithSnapshotCleanup); err != nil && !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("deleting container: %w", err)
	}
	return nil
}

// Close removes the runtime state directory and the cgroup parent.
func (c *ContainerdStarter) Close(context.Context) error {
	removeCgroupParent(benchCgroupParent)
	if c.root == "" {
		return nil
	}
	err := removeWorkDir(c.root)
	c.root = ""
	return err
}
