package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/containers"
	"github.com/containerd/containerd/oci"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
	"github.com/kanga-run/kanga/internal/agent/warm/holder"
	"github.com/kanga-run/kanga/internal/model"
)

// Env from secrets never reaches the host's disk in the clear.
//
// A container's OCI spec is not the place for it: containerd records the
// spec in its metadata database (bolt, under its root on the host's
// disk, whose freed pages keep old bytes), the shim writes it into the
// bundle's config.json under containerd's state directory, and runc and
// crun copy it into their own state. So a container that takes env from
// secrets gets a spec whose process is the launcher, /.kanga/init
// --launch (bin/kanga-init, bound read-only, as into warm containers),
// with the image's env and HOSTNAME only. Its real process, args and
// the whole env, is written before each start of a task (the first and
// every restart) to a file of its own on a tmpfs of the instance,
// <sandbox>/launch/<container>, owned by the process's user and bound
// read-write at /.kanga/env; the launcher reads it, empties it and execs
// the process (package holder): same pid, and the argv and env the
// process would have had from runc. The tmpfs goes with the sandbox.
//
// A warm container's holder takes the process over its stdin FIFO, held
// in memory; the spec recorded after its claim is the launcher's, for
// its restarts. A process started by exec (kanga exec, exec probes and
// hooks) runs through the launcher too, /.kanga/init --exec [NAME=VALUE...]
// -- CMD..., whose spec passes through containerd's state directory
// without a secret: the launcher gives CMD the env of the container's
// process (/proc/1/environ), the exec's own variables over it.

// launch is what the launcher of container c execs, and who owns its
// file on the host.
type launch struct {
	proc     holder.Process // Args and Env
	uid, gid uint32         // host ids
}

func (a *Agent) launchDir(uid string) string { return filepath.Join(a.sandboxDir(uid), "launch") }

func (a *Agent) launchFile(uid, name string) string { return filepath.Join(a.launchDir(uid), name) }

// launched tells whether container c of spec starts through the launcher.
func launched(c *api.ContainerSpec) bool { return model.EnvFromSecrets(c) }

// launchers counts the containers of spec that start through the
// launcher.
func launchers(spec *api.InstanceSpec) int {
	n := 0
	for _, c := range model.AllContainers(spec) {
		if launched(c.Spec) {
			n++
		}
	}
	return n
}

// launcherOpts turns the spec of container c into the launcher's once the
// other options made it: it must come last. base is the env before the
// container's own (the image's), which the spec keeps with hostEnv.
func (r *runner) launcherOpts(c *ctr, base *[]string, hostEnv string) oci.SpecOpts {
	return func(ctx context.Context, client oci.Client, cc *containers.Container, s *oci.Spec) error {
		if s.Process == nil {
			return errors.New("the spec has no process")
		}
		l := &launch{proc: holder.Process{Args: slices.Clone(s.Process.Args), Env: slices.Clone(s.Process.Env)}}
		l.uid, l.gid = s.Process.User.UID, s.Process.User.GID
		if s.Linux != nil {
			l.uid, l.gid = hostID(l.uid, s.Linux.UIDMappings), hostID(l.gid, s.Linux.GIDMappings)
		}
		s.Process.Env = slices.Clone(*base)
		if err := oci.WithEnv([]string{hostEnv})(ctx, client, cc, s); err != nil {
			return err
		}
		s.Process.Args = []string{holder.Path, holder.LaunchArg}
		s.Mounts = append(s.Mounts,
			specs.Mount{Destination: holder.Path, Type: "bind", Source: r.a.initPath, Options: []string{"bind", "ro"}},
			specs.Mount{Destination: holder.EnvPath, Type: "bind", Source: r.a.launchFile(r.uid, c.spec.Name),
				Options: []string{"bind", "rw", "nosuid", "nodev", "noexec"}},
		)
		c.launch = l
		return nil
	}
}

// hostID is the host's id of id of a user namespace with mappings m (id
// itself without them).
func hostID(id uint32, m []specs.LinuxIDMapping) uint32 {
	for _, e := range m {
		if id >= e.ContainerID && id-e.ContainerID < e.Size {
			return e.HostID + id - e.ContainerID
		}
	}
	return id
}

// ensureLaunch makes sure the runner knows what the launcher of c execs:
// an agent that did not create the container (it restarted since) asks
// the control plane for the env from secrets again and makes the spec
// anew, as at create.
func (r *runner) ensureLaunch(ctx context.Context, inst *api.Instance, c *ctr) error {
	if c.launch != nil {
		return nil
	}
	if _, err := r.generateSpec(ctx, inst, c); err != nil {
		return err
	}
	if c.launch == nil {
		return fmt.Errorf("container %s: no launcher in its spec: %w", c.spec.Name, errdefs.ErrFailedPrecondition)
	}
	return nil
}

// generateSpec makes the spec container c of inst would be created with
// now, on its existing containerd container.
func (r *runner) generateSpec(ctx context.Context, inst *api.Instance, c *ctr) (*oci.Spec, error) {
	img, err := r.a.cfg.Images.Resolve(ctx, r.tenant, c.spec.Image)
	if err != nil {
		return nil, err
	}
	netns := ""
	if r.att != nil {
		netns = r.att.NetNS
	}
	if err := r.ensureSecretEnv(ctx, inst); err != nil {
		return nil, err
	}
	opts, err := r.instanceSpecOpts(inst, img, netns, c, r.a.sandboxDir(r.uid))
	if err != nil {
		return nil, err
	}
	info, err := c.c.Info(ctx, containerd.WithoutRefreshedMetadata)
	if err != nil {
		return nil, err
	}
	return oci.GenerateSpec(ctx, r.a.cfg.Client, &info, opts...)
}

// writeLaunch writes the launcher's file of c, mounting the instance's
// launch tmpfs first if it is not there.
func (r *runner) writeLaunch(inst *api.Instance, c *ctr) error {
	dir := r.a.launchDir(r.uid)
	n := launchers(&inst.Spec)
	if _, err := mountTmpfs(dir, "kanga-launch", n*(holder.MaxLaunchBytes+4096), n+4); err != nil {
		return fmt.Errorf("mounting the launcher's tmpfs: %w", err)
	}
	b, err := json.Marshal(holder.Process{Args: c.launch.proc.Args, Env: c.launch.proc.Env})
	if err != nil {
		return err
	}
	if len(b) > holder.MaxLaunchBytes {
		return fmt.Errorf("container %s: its args and env take %d bytes, past the %d a process can have: %w",
			c.spec.Name, len(b), holder.MaxLaunchBytes, errdefs.ErrInvalidArgument)
	}
	p := r.a.launchFile(r.uid, c.spec.Name)
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return err
	}
	// Owned before it is filled: the container's process (its own user,
	// also in a user namespace) reads and empties it, nobody else.
	if err := errors.Join(f.Chown(int(c.launch.uid), int(c.launch.gid)), f.Chmod(0o600)); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// clearLaunch empties the launcher's file of c, after a start that may not
// have run it.
func (r *runner) clearLaunch(c *ctr) {
	if err := os.Truncate(r.a.launchFile(r.uid, c.spec.Name), 0); err != nil && !os.IsNotExist(err) {
		r.log.Warn("emptying the launcher's file failed", "container", c.spec.Name, "err", err)
	}
}

// launcherSpec tells whether p is the launcher's process (launcherOpts).
func launcherSpec(p *specs.Process) bool {
	return p != nil && len(p.Args) == 2 && p.Args[0] == holder.Path && p.Args[1] == holder.LaunchArg
}

// withExecEnv is the args of an exec of cmd in a container started by the
// launcher, with the exec's own env vars extra over the container's.
func withExecEnv(cmd, extra []string) []string {
	args := make([]string, 0, 3+len(extra)+len(cmd))
	args = append(args, holder.Path, holder.ExecArg)
	args = append(args, extra...)
	args = append(args, "--")
	return append(args, cmd...)
}

// launchProcess is what the holder of a warm container execs: the spec's
// process, or, for the launcher's spec, the process it would launch.
func launchProcess(c *ctr, p *specs.Process) holder.Process {
	hp := holder.Process{
		Args: p.Args, Env: p.Env, Cwd: p.Cwd,
		UID: p.User.UID, GID: p.User.GID, AdditionalGids: p.User.AdditionalGids,
	}
	if c.launch != nil {
		hp.Args, hp.Env = c.launch.proc.Args, c.launch.proc.Env
	}
	return hp
}
