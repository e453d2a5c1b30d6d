package agent

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/containers"
	cerrdefs "github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/mount"
	"github.com/containerd/containerd/oci"
	"github.com/containerd/containerd/snapshots"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/kanga-run/kanga/internal/agent/image"
)

// User namespaces (kanga up|agent --userns, off by default; the
// measurements and the reasons are in bench/sandbox-hardening.md): the
// root of a crun container is host id UserNSBase, and every id of the
// container 0-65535 maps into one range of unprivileged host ids, the same
// for every instance, as Docker's userns-remap does. crun 1.8 with
// containerd 1.6 has no idmapped rootfs, so each image gets one copy of
// its layers owned by the range (its "remapped" snapshot, made on the
// first start and kept as a garbage collection root), from which the
// containers' writable layers are made as usual.
//
// runc 1.1.5 runs such a container, but cannot exec into it: runc exec
// joins the container's user namespace before its network namespace, which
// the host made and the user namespace does not own, and setns refuses
// ("error executing setns process"). runc containers therefore stay in the
// host's user namespace. gVisor runs its own kernel and is left as it is.

// UserNSBase is the first host id of the range; UserNSSize ids follow.
const (
	UserNSBase = 1 << 30
	UserNSSize = 65536
)

// userNSClasses are the runtime classes that get a user namespace.
var userNSClasses = map[string]bool{"crun": true}

// usesUserNS reports whether containers of class run in a user namespace.
func (a *Agent) usesUserNS(class string) bool { return a.cfg.UserNS && userNSClasses[class] }

// userNSSpecOpts map the container's ids into the range. The runtime joins
// the instance's network namespace, made by the host, before it creates the
// user namespace, which therefore does not own it: the kernel refuses a
// new sysfs mount there, so /sys is the host's, read-only, as for rootless
// containers.
func userNSSpecOpts() []oci.SpecOpts {
	m := []specs.LinuxIDMapping{{ContainerID: 0, HostID: UserNSBase, Size: UserNSSize}}
	return []oci.SpecOpts{
		oci.WithUserNamespace(m, m),
		func(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
			for i, mt := range s.Mounts {
				if mt.Destination == "/sys" {
					s.Mounts[i] = specs.Mount{Destination: "/sys", Type: "bind", Source: "/sys",
						Options: []string{"rbind", "nosuid", "noexec", "nodev", "ro"}}
				}
			}
			return nil
		},
	}
}

// newSnapshot prepares container id's writable snapshot on top of the
// image's layers (withNewSnapshot), or on top of their remapped copy when
// the container runs in a user namespace.
func (a *Agent) newSnapshot(id string, img image.Resolved, class string) containerd.NewContainerOpts {
	if !a.usesUserNS(class) {
		return withNewSnapshot(id, img)
	}
	return func(ctx context.Context, client *containerd.Client, c *containers.Container) error {
		parent, err := a.remapped(ctx, img)
		if err != nil {
			return fmt.Errorf("the image's layers for the user namespace: %w", err)
		}
		return withNewSnapshot(id, image.Resolved{Snapshotter: img.Snapshotter, ChainID: parent})(ctx, client, c)
	}
}

// remapped returns the key of the image's layers owned by the range,
// making them on first use: a snapshot of the layers whose every file is
// chowned into the range (the overlay copies each one up), committed with
// a garbage collection label so that it outlives its containers.
func (a *Agent) remapped(ctx context.Context, img image.Resolved) (string, error) {
	key := img.ChainID + "-userns-" + strconv.Itoa(UserNSBase)
	if _, ok := a.remappedKeys.Load(key); ok {
		return key, nil
	}
	a.remapMu.Lock()
	defer a.remapMu.Unlock()
	sn := a.cfg.Client.SnapshotService(img.Snapshotter)
	if _, err := sn.Stat(ctx, key); err == nil {
		a.remappedKeys.Store(key, true)
		return key, nil
	} else if !cerrdefs.IsNotFound(err) {
		return "", err
	}
	tmp := key + "-remap"
	// A leftover of an agent that died while remapping.
	if err := sn.Remove(ctx, tmp); err != nil && !cerrdefs.IsNotFound(err) {
		return "", err
	}
	mounts, err := sn.Prepare(ctx, tmp, img.ChainID)
	if err != nil {
		return "", err
	}
	start := time.Now()
	if err := mount.WithTempMount(ctx, mounts, func(root string) error { return shiftOwnership(root, UserNSBase) }); err != nil {
		_ = sn.Remove(context.WithoutCancel(ctx), tmp)
		return "", err
	}
	if err := sn.Commit(ctx, key, tmp, snapshots.WithLabels(map[string]string{
		"containerd.io/gc.root": time.Now().UTC().Format(time.RFC3339),
	})); err != nil {
		_ = sn.Remove(context.WithoutCancel(ctx), tmp)
		return "", err
	}
	a.log.Info("made the image's layers for user namespaces", "chain_id", img.ChainID, "ms", time.Since(start).Milliseconds())
	a.remappedKeys.Store(key, true)
	return key, nil
}

// shiftOwnership adds base to the owner and group of every file under root
// (symbolic links themselves, never their targets). chown clears the
// set-user-ID and set-group-ID bits, even root's: they are set again.
// File capabilities (security.capability) are lost, as the kernel drops
// them on chown too.
func shiftOwnership(root string, base uint32) error {
	return filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		st, ok := info.Sys().(*syscall.Stat_t)
		if !ok {
			return errors.New("no owner information")
		}
		if st.Uid >= UserNSSize || st.Gid >= UserNSSize {
			return fmt.Errorf("%s is owned by %d:%d, outside the container's ids 0-%d", path, st.Uid, st.Gid, UserNSSize-1)
		}
		if err := os.Lchown(path, int(base+st.Uid), int(base+st.Gid)); err != nil {
			return err
		}
		if mode := info.Mode(); mode.IsRegular() && mode&(fs.ModeSetuid|fs.ModeSetgid) != 0 {
			return os.Chmod(path, mode)
		}
		return nil
	})
}
