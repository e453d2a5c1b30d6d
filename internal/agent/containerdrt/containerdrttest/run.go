package containerdrttest

import (
	"context"
	"os"
	"testing"

	containerd "github.com/containerd/containerd"
	"github.com/containerd/containerd/cio"
	"github.com/containerd/containerd/oci"

	"github.com/kanga-run/kanga/internal/agent/containerdrt"
)

// ImportBusybox imports the busybox OCI archive straight through the
// containerd client (not the image service) as ref and unpacks it into
// overlayfs.
func ImportBusybox(ctx context.Context, t testing.TB, c *containerd.Client, ref string) containerd.Image {
	t.Helper()
	f, err := os.Open(BusyboxArchive(t, OCI, ref))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	imgs, err := c.Import(ctx, f)
	if err != nil {
		t.Fatalf("import busybox: %v", err)
	}
	if len(imgs) != 1 || imgs[0].Name != ref {
		t.Fatalf("imported %+v, want one image named %s", imgs, ref)
	}
	img := containerd.NewImage(c, imgs[0])
	if err := img.Unpack(ctx, "overlayfs"); err != nil {
		t.Fatalf("unpack busybox: %v", err)
	}
	return img
}

// StartTask creates container id from img with the runtime class and args
// and starts its task with no I/O. It returns the task and its exit channel.
func StartTask(ctx context.Context, t testing.TB, c *containerd.Client, img containerd.Image, class containerdrt.Class, id string, args ...string) (containerd.Task, <-chan containerd.ExitStatus) {
	t.Helper()
	ctr, err := c.NewContainer(ctx, id,
		containerd.WithImage(img),
		containerd.WithSnapshotter("overlayfs"),
		containerd.WithNewSnapshot(id, img),
		containerd.WithRuntime(class.Runtime, class.Options),
		containerd.WithNewSpec(oci.WithImageConfig(img), oci.WithProcessArgs(args...)),
	)
	if err != nil {
		t.Fatalf("create container %s (%s): %v", id, class.Name, err)
	}
	task, err := ctr.NewTask(ctx, cio.NullIO)
	if err != nil {
		t.Fatalf("create task %s (%s): %v", id, class.Name, err)
	}
	exit, err := task.Wait(ctx)
	if err != nil {
		t.Fatalf("wait task %s: %v", id, err)
	}
	if err := task.Start(ctx); err != nil {
		t.Fatalf("start task %s (%s): %v", id, class.Name, err)
	}
	return task, exit
}
