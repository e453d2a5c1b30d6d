// Package hostcontract is the contract between a host's agent and the rest
// of Kanga, in both directions, as Go types with no transport in them.
//
// What a host offers (the agent implements it; the public API, the control
// plane and the host API call it) is a set of small interfaces: Node (who
// the host is and what it has), Images, Streams (logs and exec) and Monitor
// (stats and SLA), which together make a Host. Capabilities a host may
// lack are separate interfaces the caller discovers by type assertion, as
// virtual-kubelet's node package does with its optional provider
// interfaces: PreviousLogger, ImagePrewarmer, ImageRemover, PortChecker,
// VolumeHost, Killer, DeviceAttacher, ProcessLister.
//
// What a host needs of the control plane (its instances, its pending
// purges, a place for its usage records) is described by the value types
// at the end of the file: InstanceEvent, Purge and UsageRefusal. They are
// the agent's own view; the store and the host link convert to and from
// them at their edges, so the agent depends on neither.
//
// Every method that acts for a tenant takes the tenant from the context
// (package tenant).
package hostcontract

import (
	"context"
	"io"
	"syscall"
	"time"

	"github.com/kanga-run/kanga/api"
)

// Capacity is a host's total resources.
type Capacity struct {
	CPUs   int
	Memory int64
	// StartSlots is how many instance starts the host runs at once.
	StartSlots int
	// Pods is the most instances the host can run at once (its subnet's
	// addresses less those the sandbox pool may hold); 0 is no limit.
	Pods int
	// Disk is the ephemeral storage (resources.disk) the host can promise
	// in all, in bytes; 0 is not metered.
	Disk int64
}

// ImageConfig is the part of an image's configuration the API checks
// before it accepts an instance.
type ImageConfig struct {
	Entrypoint []string
	Cmd        []string
}

// ExecRequest describes a process to run in a container of an instance.
type ExecRequest struct {
	Container string
	Cmd       []string
	Env       []string
	WorkDir   string
	TTY       bool
	// Size is the terminal's initial size, so that the process never sees
	// a 0x0 terminal before the first resize arrives.
	Size   *api.TerminalSize
	Stdin  io.Reader // nil when the client sends no input
	Stdout io.Writer
	Stderr io.Writer
	Resize <-chan api.TerminalSize
}

// Node is who a host is and what it has.
type Node interface {
	Name() string
	// RuntimeClasses lists the classes the host can run now.
	RuntimeClasses() []string
	// Capacity is what the host has in all, whatever it runs now.
	Capacity() Capacity
}

// Images are the tenant's images on the host.
type Images interface {
	ImageConfig(ctx context.Context, ref string) (ImageConfig, error)
	ListImages(ctx context.Context) ([]api.Image, error)
	ImportImage(ctx context.Context, r io.Reader, progress func(api.Progress)) ([]api.Image, error)
	PullImage(ctx context.Context, ref string, progress func(api.Progress)) (api.Image, error)
}

// Streams are the byte streams of an instance's containers.
type Streams interface {
	// Logs writes the container's output to w; with follow it returns
	// once the instance is terminal and all output is written, or ctx ends.
	Logs(ctx context.Context, inst *api.Instance, container string, follow bool, w io.Writer) error
	// Exec runs a process in a container and returns its exit code.
	Exec(ctx context.Context, inst *api.Instance, req ExecRequest) (int, error)
}

// Monitor reports on a running instance.
type Monitor interface {
	// Stats samples the instance's counters now.
	Stats(ctx context.Context, inst *api.Instance) (api.InstanceStats, error)
	// SLA reports promised against delivered resources from the samples
	// the host kept.
	SLA(ctx context.Context, inst *api.Instance) (api.SLAReport, error)
}

// Host is everything every host does.
type Host interface {
	Node
	Images
	Streams
	Monitor
}

// PreviousLogger is a host that can serve the output of a container's run
// before its latest restart. It is optional so that a host which keeps one
// stream per container still serves logs.
type PreviousLogger interface {
	PreviousLogs(ctx context.Context, inst *api.Instance, container string) (io.ReadCloser, error)
}

// ImagePrewarmer is a host that can make an image ready to start ahead of
// a burst.
type ImagePrewarmer interface {
	PrewarmImage(ctx context.Context, ref string) (img api.Image, pulled bool, err error)
}

// ImageRemover is a host that can take images away: one of the caller's
// tenant (image rm), or all of a deleted tenant's (with its warm
// containers).
type ImageRemover interface {
	RemoveImage(ctx context.Context, ref string) error
	RemoveTenant(ctx context.Context, tenant string) error
}

// PortChecker is a host that can tell at admission whether ports can be
// published on it: whether the address is its own, and whether the port
// is one of its reserved ports or taken by a process of the host. Other
// instances' ports are the API's business.
type PortChecker interface {
	CheckPorts(ctx context.Context, ports []api.PortMapping) error
}

// VolumeKeySize is the size of an encrypted persistent volume's key.
const VolumeKeySize = 64

// VolumeHost is a host that keeps persistent volumes: each a filesystem
// of its own, named by id (unique on the platform), of size bytes that
// the tenant can write. An encrypted volume is made with key, which the
// host does not keep: when it mounts the volume for an instance it asks
// the control plane for it again (VolumeKeySource).
type VolumeHost interface {
	CreateVolume(ctx context.Context, id string, size int64, encrypted bool, key []byte) error
	// RemoveVolume deletes a volume and its data; a volume still mounted
	// is errdefs.ErrConflict. Removing a volume the host does not have is
	// not an error.
	RemoveVolume(ctx context.Context, id string) error
}

// VolumeKeySource is what a host needs of the control plane to mount an
// encrypted volume: its key, which the control plane hands only to the
// volume's own host.
type VolumeKeySource interface {
	VolumeKey(ctx context.Context, id string) ([]byte, error)
}

// InstanceEvent is one change of the instances a host follows.
type InstanceEvent struct {
	// Instance is the new version, or on deletion the last version known
	// (nil if none was).
	Instance *api.Instance
	Deleted  bool
	Tenant   string
	Name     string
	// Revision orders the changes; pass the last one seen to resume a
	// watch after it.
	Revision int64
}

// Purge asks a host to drop what it keeps of a tenant (Image empty: the
// tenant was deleted) or of one of its images.
type Purge struct {
	Tenant string
	// Image is the normalized reference of the removed image; empty for
	// the whole tenant.
	Image string
	At    time.Time
	// Generation tells this purge from an earlier one of the same thing;
	// the acknowledgement carries it back.
	Generation int64
}

// UsageRefusal says why a usage record was not accepted; the host drops
// the record.
type UsageRefusal struct {
	// Index is the record's position in the batch sent.
	Index  int
	Reason string
}

// InstanceFiles is what the host of an instance needs of the secrets and
// configs the instance uses, and only that: the files of its secret and
// config volumes and the env of the containers that take env from
// secrets. The control plane answers it to the instance's own host, for
// that host to keep in memory and on tmpfs; it is never part of the
// instance record.
type InstanceFiles struct {
	Volumes []VolumeFiles
	// Env is, by container name, the whole env of each container that
	// takes env from secrets, references resolved.
	Env map[string][]api.EnvVar
}

// VolumeFiles is one secret or config volume's files.
type VolumeFiles struct {
	Name   string
	Secret bool
	Files  []File
}

// File is one file of a volume: Path relative to the volume's root,
// cleaned, without "..".
type File struct {
	Path string
	Mode uint32
	Data []byte
}

// NetTenant is a tenant's network policy as the network view carries it;
// tenants without a policy are not listed.
type NetTenant struct {
	Name    string
	Network api.TenantNetworkPolicy
}

// NetUpdate is one change of the platform's network view, which a host's
// tenant isolation enforces (the control plane keeps it, package
// netview). Tenants and Subnets are complete in every update (they are
// small); Set and Del change addresses since the previous update, or, with
// Reset, Set is every address.
type NetUpdate struct {
	Reset   bool
	Tenants []NetTenant
	Subnets []string
	Set     map[string]string // address -> tenant
	Del     []string
}

// ApplyNetUpdate folds an update into a host's copy of the addresses (nil
// to start); it returns the copy.
func ApplyNetUpdate(addrs map[string]string, u NetUpdate) map[string]string {
	if u.Reset || addrs == nil {
		addrs = map[string]string{}
	}
	for a, t := range u.Set {
		addrs[a] = t
	}
	for _, a := range u.Del {
		delete(addrs, a)
	}
	return addrs
}

// DeviceAttacher is a host that can give a running instance devices and
// take them back, without a restart.
type DeviceAttacher interface {
	// AttachDevice gives the instance the devices req asks for and
	// returns their qualified names.
	AttachDevice(ctx context.Context, inst *api.Instance, req api.DeviceRequest) ([]string, error)
	// DetachDevice takes device (a qualified name) away.
	DetachDevice(ctx context.Context, inst *api.Instance, device string) error
}

// ProcessLister is a host that can list the processes of an instance's
// containers (kanga top), from the host's /proc: images need no ps.
type ProcessLister interface {
	Top(ctx context.Context, inst *api.Instance) ([]api.Process, error)
}

// Killer is a host that can send a signal to the running containers of an
// instance (kanga kill). A signal ends a container's process as any other
// exit does: the restart policy applies.
type Killer interface {
	// Kill signals container, or every running container when container
	// is empty.
	Kill(ctx context.Context, inst *api.Instance, container string, sig syscall.Signal) error
}
