// Package api holds the wire types of Kanga's public REST API. The OpenAPI
// document in openapi.yaml describes the same shapes; a test in
// internal/server keeps the two from drifting.
package api

import "time"

// RestartPolicy says what happens to a container of an instance when it exits.
type RestartPolicy string

const (
	RestartNever     RestartPolicy = "Never"
	RestartOnFailure RestartPolicy = "OnFailure"
	RestartAlways    RestartPolicy = "Always"
)

// Phase is the coarse lifecycle state of an instance.
type Phase string

const (
	PhasePending   Phase = "Pending"
	PhaseCreating  Phase = "Creating"
	PhaseRunning   Phase = "Running"
	PhaseSucceeded Phase = "Succeeded"
	PhaseFailed    Phase = "Failed"
)

// Terminal reports whether no container of the instance will run again.
func (p Phase) Terminal() bool { return p == PhaseSucceeded || p == PhaseFailed }

// EnvVar is one environment variable of a container.
type EnvVar struct {
	Name  string `json:"name"`
	Value string `json:"value"`
	// ValueFrom takes the value from a secret or config instead.
	ValueFrom *EnvVarSource `json:"valueFrom,omitempty"`
}

// ContainerSpec describes one container of an instance. Command replaces
// the image's entrypoint and Args its cmd, as in a Kubernetes pod.
type ContainerSpec struct {
	Name    string   `json:"name"`
	Image   string   `json:"image"`
	Command []string `json:"command,omitempty"`
	Args    []string `json:"args,omitempty"`
	Env     []EnvVar `json:"env,omitempty"`
	// EnvFrom sets variables from every key of secrets and configs.
	EnvFrom    []EnvFromSource `json:"envFrom,omitempty"`
	WorkingDir string          `json:"workingDir,omitempty"`
	// VolumeMounts mount the instance's volumes into the container.
	VolumeMounts []VolumeMount `json:"volumeMounts,omitempty"`
	// SecurityContext changes the container's sandbox from the platform's
	// default: Docker's default capabilities without NET_RAW, Docker's
	// default seccomp profile and no_new_privs.
	SecurityContext *SecurityContext `json:"securityContext,omitempty"`
	// RestartPolicy is Kubernetes' per-container field, which makes an
	// init container with Always a sidecar (Kubernetes 1.29). Kanga does
	// not run sidecar init containers: the field is accepted only empty,
	// so that a spec carrying it is refused by name rather than run
	// differently.
	RestartPolicy RestartPolicy `json:"restartPolicy,omitempty"`
	// LivenessProbe failing restarts the container (per the restart
	// policy); ReadinessProbe decides whether it is ready; StartupProbe,
	// until it passes, holds the other two back (see Probe).
	LivenessProbe  *Probe `json:"livenessProbe,omitempty"`
	ReadinessProbe *Probe `json:"readinessProbe,omitempty"`
	StartupProbe   *Probe `json:"startupProbe,omitempty"`
	// Lifecycle holds actions run right after the container starts and
	// before it is stopped, as Kubernetes' lifecycle hooks.
	Lifecycle *Lifecycle `json:"lifecycle,omitempty"`
	// TerminationMessagePath is a file in the container (Kubernetes'
	// default is /dev/termination-log; unset, none) whose first 4 KiB,
	// when the container ends, are its status' message.
	TerminationMessagePath string `json:"terminationMessagePath,omitempty"`
	// TerminationMessagePolicy File (the default) takes the message from
	// the file only; FallbackToLogsOnError takes the end of the run's log
	// (80 lines, 2 KiB at most) when the file is empty and the container
	// failed.
	TerminationMessagePolicy string `json:"terminationMessagePolicy,omitempty"`
}

// Termination message policies.
const (
	TerminationMessageReadFile              = "File"
	TerminationMessageFallbackToLogsOnError = "FallbackToLogsOnError"
)

// SecurityContext is a container's sandbox settings, shaped as in a
// Kubernetes container. Dropping is always allowed; adding a capability
// outside the default set, or running unconfined, only where the tenant's
// policy allows it (see TenantSecurity).
type SecurityContext struct {
	Capabilities   *Capabilities   `json:"capabilities,omitempty"`
	SeccompProfile *SeccompProfile `json:"seccompProfile,omitempty"`
	// RunAsUser and RunAsGroup are the numeric user and group the
	// container's process runs as; unset, the image's USER (and its
	// group), or root. Names are not taken: the API has no way to resolve
	// them against the image before it runs.
	RunAsUser  *int64 `json:"runAsUser,omitempty"`
	RunAsGroup *int64 `json:"runAsGroup,omitempty"`
	// SupplementalGroups are added to the process's groups, after those
	// the image's /etc/group gives its user (and the instance's fsGroup).
	SupplementalGroups []int64 `json:"supplementalGroups,omitempty"`
	// RunAsNonRoot refuses to start the container (reason
	// CreateContainerConfigError) when its user, from RunAsUser or the
	// image, is root (uid 0).
	RunAsNonRoot *bool `json:"runAsNonRoot,omitempty"`
	// ReadOnlyRootFilesystem mounts the root filesystem read-only; volume
	// mounts, /dev/shm and the other runtime mounts stay writable.
	ReadOnlyRootFilesystem bool `json:"readOnlyRootFilesystem,omitempty"`
	// AllowPrivilegeEscalation true lets a process gain privileges
	// through set-user-ID binaries and file capabilities (no
	// no_new_privs): only where the tenant's policy allows it
	// (TenantSecurity.AllowPrivilegeEscalation). Unset or false is the
	// default: no_new_privs.
	AllowPrivilegeEscalation *bool `json:"allowPrivilegeEscalation,omitempty"`
	// Privileged is accepted only as false: Kanga never runs privileged
	// containers.
	Privileged *bool `json:"privileged,omitempty"`
}

// InstanceSecurityContext holds the instance-wide security settings, as
// a Kubernetes pod's securityContext does.
type InstanceSecurityContext struct {
	// FSGroup owns the instance's emptyDirs and writable persistent
	// volumes (group ownership and the set-group-ID bit on directories, so
	// new files get it too, as the kubelet does) and their secret and
	// config files (readable by the group), and is added to every
	// container's supplemental groups.
	FSGroup *int64 `json:"fsGroup,omitempty"`
}

// Capabilities adds to and drops from the default set. Names are those of
// capabilities(7), with or without the CAP_ prefix, in any case; drop
// also takes ALL.
type Capabilities struct {
	Add  []string `json:"add,omitempty"`
	Drop []string `json:"drop,omitempty"`
}

// Seccomp profile types.
const (
	// SeccompRuntimeDefault is Docker's and containerd's default profile.
	SeccompRuntimeDefault = "RuntimeDefault"
	// SeccompUnconfined runs the container without a seccomp filter.
	SeccompUnconfined = "Unconfined"
)

// SeccompProfile picks the container's seccomp filter.
type SeccompProfile struct {
	// Type is RuntimeDefault (the default) or Unconfined.
	Type string `json:"type"`
}

// Resources is the instance-wide resource spec. Quantities are strings in
// Kubernetes notation: cpu "0.5" or "500m", memory "256Mi" or "1G".
type Resources struct {
	CPU    string `json:"cpu,omitempty"`
	Memory string `json:"memory,omitempty"`
	// CPUPolicy is shared (CFS quota on shared cores, the default) or
	// dedicated (whole cores that no other dedicated instance gets; cpu
	// must then be a whole number).
	CPUPolicy string `json:"cpuPolicy,omitempty"`
	// Pids caps the number of processes and threads.
	Pids int64 `json:"pids,omitempty"`
	// Disk throttles apply to the device backing the writable layer.
	// Byte rates are quantities ("10M", "1Mi"); IOPS are counts.
	DiskReadBPS   string `json:"diskReadBps,omitempty"`
	DiskWriteBPS  string `json:"diskWriteBps,omitempty"`
	DiskReadIOPS  int64  `json:"diskReadIops,omitempty"`
	DiskWriteIOPS int64  `json:"diskWriteIops,omitempty"`
	// Bandwidths are bit rates: "5M" or "5Mbit" is 5,000,000 bit/s,
	// "100k" 100,000; Bandwidth sets both directions.
	IngressBandwidth string `json:"ingressBandwidth,omitempty"`
	EgressBandwidth  string `json:"egressBandwidth,omitempty"`
	// CPULimit caps the CPU the instance may use (CFS quota) without
	// reserving it: the scheduler and the tenant's quota count CPU only.
	// With CPU set it must be at least CPU and lets the instance burst
	// above its reservation; a dedicated instance has no use for it.
	CPULimit string `json:"cpuLimit,omitempty"`
	// LogSize caps each container's log file ("10Mi"); LogFiles is how
	// many files of that size are kept, the current one included, so a
	// container's log takes at most LogSize x LogFiles on its host.
	LogSize  string `json:"logSize,omitempty"`
	LogFiles int    `json:"logFiles,omitempty"`
	// Disk caps the instance's ephemeral storage: the writable layers of
	// all its containers (their root filesystems' changes to the image),
	// its disk emptyDirs without a sizeLimit and its logs, together, on one
	// filesystem: "10Gi", 4Mi to 16Ti. A write past it fails with ENOSPC.
	// Empty is no cap.
	Disk string `json:"disk,omitempty"`
}

// PortMapping publishes a container port on a host address.
type PortMapping struct {
	HostIP        string `json:"hostIP,omitempty"`
	HostPort      int    `json:"hostPort"`
	ContainerPort int    `json:"containerPort"`
	Protocol      string `json:"protocol,omitempty"` // tcp (default) or udp
}

// InstanceSpec is what the user asked for.
type InstanceSpec struct {
	Containers    []ContainerSpec `json:"containers"`
	Resources     Resources       `json:"resources,omitempty"`
	RestartPolicy RestartPolicy   `json:"restartPolicy,omitempty"`
	Ports         []PortMapping   `json:"ports,omitempty"`
	// AutoRemove removes the instance once it ends (docker run --rm): the
	// host that ran it asks for its deletion in the same write that
	// records the terminal phase. Only with restart policy Never.
	AutoRemove bool `json:"autoRemove,omitempty"`
	// Runtime is the runtime class (see GET /v1/runtimes).
	Runtime string `json:"runtime,omitempty"`
	// InstanceType names a catalog entry (see GET /v1/types) whose
	// resources fill in what Resources leaves empty.
	InstanceType string `json:"instanceType,omitempty"`
	// HostSelector lists host labels (e.g. "zone": "a") that the host
	// running the instance must carry with exactly these values.
	HostSelector map[string]string `json:"hostSelector,omitempty"`
	// SchedulingPolicy is binpack (fill busy hosts first, the default) or
	// spread (prefer the least loaded host).
	SchedulingPolicy string `json:"schedulingPolicy,omitempty"`
	// Volumes are what the containers' VolumeMounts name.
	Volumes []Volume `json:"volumes,omitempty"`
	// InitContainers run one after another, each to completion, in the
	// instance's sandbox before any of Containers starts. One that fails
	// is retried with backoff (restartPolicy OnFailure or Always) or fails
	// the instance (Never) with reason Init:Error. Names are unique across
	// InitContainers and Containers.
	InitContainers []ContainerSpec `json:"initContainers,omitempty"`
	// SecurityContext holds the instance-wide security settings (fsGroup).
	SecurityContext *InstanceSecurityContext `json:"securityContext,omitempty"`
	// ActiveDeadlineSeconds is how long the instance may run, from its
	// start: then its containers are stopped and it fails with reason
	// DeadlineExceeded, as a Kubernetes pod's activeDeadlineSeconds.
	ActiveDeadlineSeconds *int64 `json:"activeDeadlineSeconds,omitempty"`
	// TerminationGracePeriodSeconds is how long a container has between
	// its stop signal (after its preStop hook) and SIGKILL when the
	// platform stops it: a stop without a timeout, the deadline, a failed
	// liveness or startup probe or postStart hook (0-3600; default 10). A
	// stop with a timeout (kanga stop -t, a pod deletion's grace period)
	// uses that instead.
	TerminationGracePeriodSeconds *int64 `json:"terminationGracePeriodSeconds,omitempty"`
	// Hostname is the containers' hostname (and the name /etc/hosts
	// gives the instance's address); the instance name if empty.
	Hostname string `json:"hostname,omitempty"`
	// HostAliases are extra /etc/hosts entries.
	HostAliases []HostAlias `json:"hostAliases,omitempty"`
	// DNSPolicy is Default (the host's upstream resolvers, with DNSConfig
	// merged in; the default) or None (DNSConfig alone).
	DNSPolicy string `json:"dnsPolicy,omitempty"`
	// DNSConfig adds to (or with DNSPolicy None, makes) the instance's
	// /etc/resolv.conf, as a Kubernetes pod's dnsConfig.
	DNSConfig *DNSConfig `json:"dnsConfig,omitempty"`
	// Devices are host devices the containers get, by Container Device
	// Interface kind (see DeviceRequest).
	Devices []DeviceRequest `json:"devices,omitempty"`
}

// DeviceRequest asks for host devices of one CDI kind
// (vendor.com/class): Count of any of the kind's devices, or, with Name,
// the one device of that fully qualified CDI name (vendor.com/class=name;
// Kind may then be left out). The host's agent picks the devices of a
// count and records them in status.devices; each container gets them
// (device nodes, mounts and environment from the device's CDI spec).
type DeviceRequest struct {
	Kind  string `json:"kind,omitempty"`
	Name  string `json:"name,omitempty"`
	Count int    `json:"count,omitempty"`
}

// DNS policies.
const (
	DNSDefault = "Default"
	DNSNone    = "None"
)

// HostAlias maps host names to an address in /etc/hosts.
type HostAlias struct {
	IP        string   `json:"ip"`
	Hostnames []string `json:"hostnames"`
}

// DNSConfig is resolver configuration: nameservers (at most 3 with the
// host's), search domains (at most 32) and options, merged into the
// resolver configuration the policy gives (an option of the same name
// replaces it).
type DNSConfig struct {
	Nameservers []string    `json:"nameservers,omitempty"`
	Searches    []string    `json:"searches,omitempty"`
	Options     []DNSOption `json:"options,omitempty"`
}

// DNSOption is one resolver option: "ndots" with value "2", "edns0".
type DNSOption struct {
	Name  string  `json:"name"`
	Value *string `json:"value,omitempty"`
}

// ContainerState is the state of one container.
type ContainerState string

const (
	ContainerWaiting    ContainerState = "Waiting"
	ContainerRunning    ContainerState = "Running"
	ContainerTerminated ContainerState = "Terminated"
)

// ContainerStatus is what the host reports about one container.
type ContainerStatus struct {
	Name         string         `json:"name"`
	State        ContainerState `json:"state"`
	Reason       string         `json:"reason,omitempty"`
	ExitCode     *int           `json:"exitCode,omitempty"`
	RestartCount int            `json:"restartCount"`
	StartedAt    *time.Time     `json:"startedAt,omitempty"`
	FinishedAt   *time.Time     `json:"finishedAt,omitempty"`
	PID          int            `json:"pid,omitempty"`
	// Ready is set while the container runs, has passed its startup
	// probe and passes its readiness probe (those it has).
	Ready bool `json:"ready"`
	// Message is the termination message of the run that ended (see
	// ContainerSpec.TerminationMessagePath).
	Message string `json:"message,omitempty"`
}

// Event is a notable moment in an instance's life.
type Event struct {
	Time    time.Time `json:"time"`
	Type    string    `json:"type"` // Normal or Warning
	Reason  string    `json:"reason"`
	Message string    `json:"message"`
}

// InstanceStatus is what the platform observed.
type InstanceStatus struct {
	Phase      Phase             `json:"phase"`
	Reason     string            `json:"reason,omitempty"`
	Message    string            `json:"message,omitempty"`
	Host       string            `json:"host,omitempty"`
	IP         string            `json:"ip,omitempty"`
	StartedAt  *time.Time        `json:"startedAt,omitempty"`
	FinishedAt *time.Time        `json:"finishedAt,omitempty"`
	Containers []ContainerStatus `json:"containers,omitempty"`
	Events     []Event           `json:"events,omitempty"`

	// InitContainers are the statuses of spec.initContainers, in order.
	InitContainers []ContainerStatus `json:"initContainers,omitempty"`
	// Conditions are Kubernetes-like conditions of the instance: Ready.
	Conditions []InstanceCondition `json:"conditions,omitempty"`
	// Devices are the fully qualified CDI names of the host devices the
	// instance holds (see spec.devices), set by its host.
	Devices []string `json:"devices,omitempty"`
}

// Instance is a Pod-like group of containers sharing one sandbox.
type Instance struct {
	Name      string    `json:"name"`
	Tenant    string    `json:"tenant"`
	UID       string    `json:"uid"`
	CreatedAt time.Time `json:"createdAt"`
	// Labels are key/value pairs to select instances by
	// (GET /v1/instances?labelSelector=app=web); Annotations are
	// key/value pairs for tools, not for selection. Keys and values follow
	// Kubernetes' syntax and caps.
	Labels      map[string]string `json:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
	// StopRequested is set by `kanga stop`: the host stops every container
	// and does not restart them.
	StopRequested bool `json:"stopRequested,omitempty"`
	// StopGraceSeconds is how long the host waits after SIGTERM before
	// it sends SIGKILL; 0 kills at once. Set together with StopRequested.
	StopGraceSeconds *int `json:"stopGraceSeconds,omitempty"`
	// DeletionRequested is set by `kanga rm`; the host tears the sandbox down
	// and then removes the record.
	DeletionRequested bool `json:"deletionRequested,omitempty"`
	// PersistentVolumes are the persistent volumes of spec.volumes as
	// the API bound them at create; the instance runs on their host.
	PersistentVolumes []BoundVolume  `json:"persistentVolumes,omitempty"`
	Spec              InstanceSpec   `json:"spec"`
	Status            InstanceStatus `json:"status"`
}

// CreateInstanceRequest is the body of POST /v1/instances.
type CreateInstanceRequest struct {
	Name string `json:"name,omitempty"`
	// Labels and Annotations are stored with the instance (see Instance).
	Labels      map[string]string `json:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
	Spec        InstanceSpec      `json:"spec"`
}

// InstanceList is the body of GET /v1/instances.
type InstanceList struct {
	Items []Instance `json:"items"`
	// Continue, when set, fetches the next page of a list asked for with
	// a limit: pass it back as the continue query parameter.
	Continue string `json:"continue,omitempty"`
}

// Image is an image known to the platform.
type Image struct {
	Name      string    `json:"name"`
	Digest    string    `json:"digest"`
	Size      int64     `json:"size"`
	CreatedAt time.Time `json:"createdAt"`
	// LastUsedAt is when the tenant last started a container from the
	// image on its host, since the host's agent started; unset if never.
	LastUsedAt *time.Time `json:"lastUsedAt,omitempty"`
	// Starts counts those starts.
	Starts int64 `json:"starts,omitempty"`
}

// ImageList is the body of GET /v1/images.
type ImageList struct {
	Items []Image `json:"items"`
}

// ImageDetail is the body of GET /v1/images/{ref}: one of the tenant's
// images, the command it runs by default and the hosts that hold it.
type ImageDetail struct {
	Name   string `json:"name"`
	Digest string `json:"digest"`
	Size   int64  `json:"size"`
	// CreatedAt is the image's creation time, from its configuration.
	CreatedAt time.Time `json:"createdAt"`
	// Entrypoint and Cmd are what a container of the image runs when its
	// spec names no command (the spec's command replaces Entrypoint, its
	// args Cmd).
	Entrypoint []string `json:"entrypoint,omitempty"`
	Cmd        []string `json:"cmd,omitempty"`
	// Hosts are the hosts that hold the image for the tenant, by name.
	Hosts []ImageHost `json:"hosts"`
}

// ImageHost is an image on one host. Digest differs from the image's
// when the host holds another version under the same name.
type ImageHost struct {
	Host       string     `json:"host"`
	Digest     string     `json:"digest"`
	LastUsedAt *time.Time `json:"lastUsedAt,omitempty"`
	Starts     int64      `json:"starts,omitempty"`
}

// PullRequest is the body of POST /v1/images/pull.
type PullRequest struct {
	Ref string `json:"ref"`
}

// PrewarmRequest is the body of POST /v1/images/prewarm: make an image
// ready to start on Hosts hosts ahead of a burst.
type PrewarmRequest struct {
	Ref string `json:"ref"`
	// Hosts is how many hosts should have the image ready; 0 means every
	// host that can run instances.
	Hosts int `json:"hosts,omitempty"`
}

// PrewarmResult is the answer to POST /v1/images/prewarm.
type PrewarmResult struct {
	Image Image `json:"image"`
	// Hosts are the hosts that have the image ready now. There may be
	// fewer than asked for when the platform has fewer hosts.
	Hosts []PrewarmedHost `json:"hosts"`
}

// PrewarmedHost is one host of a PrewarmResult.
type PrewarmedHost struct {
	Host string `json:"host"`
	// Pulled is set when the host fetched the image for this request;
	// otherwise it had it already.
	Pulled bool `json:"pulled,omitempty"`
}

// Progress is one line of the newline-delimited JSON stream returned by
// image pull and import. The last line has Done set, or Error.
type Progress struct {
	Status  string  `json:"status,omitempty"`
	Current int64   `json:"current,omitempty"`
	Total   int64   `json:"total,omitempty"`
	Done    bool    `json:"done,omitempty"`
	Images  []Image `json:"images,omitempty"`
	Error   *Error  `json:"error,omitempty"`
}

// Error is the body of every non-2xx response.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// ErrorResponse wraps Error.
type ErrorResponse struct {
	Error Error `json:"error"`
}

// Version is the body of GET /v1/version.
type Version struct {
	Version string `json:"version"`
	Tenant  string `json:"tenant"`
}

// HeaderTenant names the tenant an administrator's request acts in, in
// place of the token's own: an operator component (the Kubernetes virtual
// node) serves many tenants with one token. Other tokens may only name
// their own tenant.
const HeaderTenant = "Kanga-Tenant"

// Tenant is an isolation and policy boundary: every instance and image
// belongs to one.
type Tenant struct {
	Name string `json:"name"`
	// DefaultRuntime is the runtime class of instances that name none.
	DefaultRuntime string `json:"defaultRuntime,omitempty"`
	// AllowedRuntimes limits the classes the tenant may use; empty allows
	// every class.
	AllowedRuntimes []string `json:"allowedRuntimes,omitempty"`
	// SchedulingPolicy is the default of the tenant's instances that name
	// none: binpack or spread; empty is the platform's default (binpack).
	SchedulingPolicy string `json:"schedulingPolicy,omitempty"`
	// DefaultInstanceType fills in the resources of the tenant's
	// instances that leave them empty, in place of the platform's default
	// type (see GET /v1/types).
	DefaultInstanceType string `json:"defaultInstanceType,omitempty"`
	// Quota caps what the tenant's instances hold at once; nil is no
	// quota.
	Quota *Quota `json:"quota,omitempty"`
	// Security is what an administrator allows the tenant beyond the
	// platform's defaults, within the operator's bounds; unset is the
	// defaults.
	Security  *TenantSecurity `json:"security,omitempty"`
	CreatedAt time.Time       `json:"createdAt"`
	// Network is the tenant's network policy; nil is the default: the
	// instances reach each other and the outside, never other tenants'
	// instances or the hosts' own services. Only administrators set it.
	Network *TenantNetworkPolicy `json:"network,omitempty"`
}

// TenantNetworkPolicy limits what a tenant's instances reach beyond each
// other, and which other tenants may reach them. Destinations are
// "CIDR[:PORT[-PORT]][/tcp|/udp]": "10.0.0.0/8", "1.2.3.4:53/udp",
// "192.168.0.0/16:8000-8100" (a port without a protocol means tcp and
// udp). Egress rules apply to destinations outside the platform's
// instance networks; other tenants' instances and the hosts are never
// reachable through them.
type TenantNetworkPolicy struct {
	// EgressDeny destinations are refused; they win over EgressAllow.
	EgressDeny []string `json:"egressDeny,omitempty"`
	// EgressAllow, when not empty, is the only outside the instances may
	// reach (besides what EgressDeny leaves of it); empty allows all.
	EgressAllow []string `json:"egressAllow,omitempty"`
	// IngressFrom names tenants whose instances may open connections to
	// this tenant's instances (replies flow back; the reverse direction
	// needs the other tenant's own IngressFrom).
	IngressFrom []string `json:"ingressFrom,omitempty"`
}

// TenantSecurity narrows where a tenant may publish ports and allows it
// to loosen its containers' sandbox. The operator's daemon flags bound it:
// --host-port-addresses and --host-port-range for ports,
// --tenant-allowed-caps and --tenant-allow-unconfined for the sandbox
// (by default nothing may be loosened).
type TenantSecurity struct {
	// HostIPs are the host addresses (or CIDRs) the tenant may publish on,
	// within the operator's; empty: the operator's.
	HostIPs []string `json:"hostIPs,omitempty"`
	// HostPorts is the host port range the tenant may publish, "from-to"
	// within the operator's; empty: the operator's.
	HostPorts string `json:"hostPorts,omitempty"`
	// AllowedCapabilities may be added by the tenant's containers, beyond
	// the default set.
	AllowedCapabilities []string `json:"allowedCapabilities,omitempty"`
	// AllowUnconfined lets the tenant's containers run without seccomp.
	AllowUnconfined bool `json:"allowUnconfined,omitempty"`
	// AllowPrivilegeEscalation lets the tenant's containers set
	// securityContext.allowPrivilegeEscalation: run without
	// no_new_privs, so set-user-ID binaries of their images work.
	AllowPrivilegeEscalation bool `json:"allowPrivilegeEscalation,omitempty"`
}

// CreateTenantRequest is the body of POST /v1/tenants.
type CreateTenantRequest struct {
	Name                string   `json:"name"`
	DefaultRuntime      string   `json:"defaultRuntime,omitempty"`
	AllowedRuntimes     []string `json:"allowedRuntimes,omitempty"`
	SchedulingPolicy    string   `json:"schedulingPolicy,omitempty"`
	DefaultInstanceType string   `json:"defaultInstanceType,omitempty"`
	// Quota replaces the platform's default quota for new tenants; a
	// field left out keeps the default's.
	Quota *Quota `json:"quota,omitempty"`
	// Network is the tenant's network policy (see Tenant.Network).
	Network *TenantNetworkPolicy `json:"network,omitempty"`
	// Security, if set, is the tenant's security policy (see
	// PUT /v1/tenants/{name}/security to change it later).
	Security *TenantSecurity `json:"security,omitempty"`
}

// Quota caps what a tenant's instances hold at once across the pool, from
// their creation until they are removed (finished instances included).
// A field left out is not limited. CPU and memory are what instances
// reserve (spec.resources.cpu and memory); each may be an amount ("8",
// "16Gi") or a share of the pool's capacity ("50%"). On each host a
// parent cgroup holds the tenant's instances to the same amounts.
type Quota struct {
	Instances *int64 `json:"instances,omitempty"`
	CPU       string `json:"cpu,omitempty"`
	Memory    string `json:"memory,omitempty"`
	// Ports counts published host ports; Volumes and Devices count what
	// instances attach once the platform offers them.
	Ports   *int64 `json:"ports,omitempty"`
	Volumes *int64 `json:"volumes,omitempty"`
	Devices *int64 `json:"devices,omitempty"`
	// Disk counts the ephemeral storage instances reserve
	// (resources.disk): an amount, "100Gi".
	Disk string `json:"disk,omitempty"`
}

// Unlimited marks a resource without a limit in QuotaAmounts.
const Unlimited = -1

// QuotaAmounts are amounts of the resources a quota counts.
type QuotaAmounts struct {
	Instances   int64 `json:"instances"`
	MilliCPU    int64 `json:"milliCpu"`
	MemoryBytes int64 `json:"memoryBytes"`
	Ports       int64 `json:"ports"`
	Volumes     int64 `json:"volumes"`
	Devices     int64 `json:"devices"`
	DiskBytes   int64 `json:"diskBytes"`
}

// TenantQuota is the body of GET and PUT /v1/tenants/{name}/quota: the
// quota as set, what it allows now (shares of the pool resolved against
// its current capacity; Unlimited where the quota sets nothing) and what
// the tenant's instances use.
type TenantQuota struct {
	Tenant string       `json:"tenant"`
	Quota  Quota        `json:"quota"`
	Limits QuotaAmounts `json:"limits"`
	Used   QuotaAmounts `json:"used"`
}

// CreateTenantResponse carries the new tenant's first bearer token; it is
// shown once and stored only as a hash.
type CreateTenantResponse struct {
	Tenant Tenant `json:"tenant"`
	Token  string `json:"token"`
}

// TenantList is the body of GET /v1/tenants.
type TenantList struct {
	Items []Tenant `json:"items"`
}

// RuntimeClass describes a runtime class of the platform's catalog.
type RuntimeClass struct {
	Name        string   `json:"name"`
	Description string   `json:"description"`
	Requires    []string `json:"requires,omitempty"`
	// Hosts lists the hosts that can run the class now.
	Hosts []string `json:"hosts"`
	// Allowed says whether the calling tenant may use the class.
	Allowed bool `json:"allowed"`
	// Default marks the calling tenant's default class.
	Default bool `json:"default,omitempty"`
}

// RuntimeClassList is the body of GET /v1/runtimes.
type RuntimeClassList struct {
	Items []RuntimeClass `json:"items"`
}

// InstanceType is a named bundle of resources.
type InstanceType struct {
	Name        string    `json:"name"`
	Description string    `json:"description"`
	Resources   Resources `json:"resources"`
}

// InstanceTypeList is the body of GET /v1/types.
type InstanceTypeList struct {
	Items []InstanceType `json:"items"`
}

// Process is a process of an instance, as GET /v1/instances/{name}/top
// lists it: read by the host from /proc, so it needs nothing (no ps) in
// the image. IDs are as the instance sees them.
type Process struct {
	// Container is the container the process runs in.
	Container string `json:"container"`
	// PID and PPID are in the instance's PID namespace; PPID is 0 for a
	// container's first process, whose parent is outside.
	PID  int `json:"pid"`
	PPID int `json:"ppid"`
	// UID is the effective user ID, in the container's user namespace.
	UID uint32 `json:"uid"`
	// State is the kernel's one-letter state: R running, S sleeping, D
	// waiting on I/O, Z zombie, T stopped, I idle.
	State string `json:"state"`
	// CPUMillis is the CPU time used, user and system, in milliseconds.
	CPUMillis int64 `json:"cpuMillis"`
	// RSSBytes is the resident memory.
	RSSBytes int64 `json:"rssBytes"`
	// Command is the process's argv; [name] for one with no argv (a
	// zombie).
	Command []string `json:"command"`
}

// ProcessList is the body of GET /v1/instances/{name}/top.
type ProcessList struct {
	Items []Process `json:"items"`
}

// InstanceStats is one sample of an instance's counters, read from its
// cgroups and network interface. Counters are cumulative since the
// sandbox was created.
type InstanceStats struct {
	Time time.Time `json:"time"`
	// CPU time used and time spent throttled by the CFS quota.
	CPUUsageNanos       uint64 `json:"cpuUsageNanos"`
	CPUThrottledNanos   uint64 `json:"cpuThrottledNanos"`
	CPUThrottledPeriods uint64 `json:"cpuThrottledPeriods"`
	CPUPeriods          uint64 `json:"cpuPeriods"`
	// CPUs are the cores the instance may run on.
	CPUs           string `json:"cpus,omitempty"`
	MemoryUsage    uint64 `json:"memoryUsage"`
	MemoryPeak     uint64 `json:"memoryPeak"`
	MemoryLimit    uint64 `json:"memoryLimit,omitempty"`
	OOMKills       uint64 `json:"oomKills"`
	Pids           uint64 `json:"pids"`
	PidsLimit      uint64 `json:"pidsLimit,omitempty"`
	DiskReadBytes  uint64 `json:"diskReadBytes"`
	DiskWriteBytes uint64 `json:"diskWriteBytes"`
	DiskReadOps    uint64 `json:"diskReadOps"`
	DiskWriteOps   uint64 `json:"diskWriteOps"`
	NetRxBytes     uint64 `json:"netRxBytes"`
	NetTxBytes     uint64 `json:"netTxBytes"`
	// Storage is how full each size-limited filesystem of the instance
	// is: its emptyDirs and its containers' capped writable layers.
	Storage []StorageStats `json:"storage,omitempty"`
	// Containers are the figures of each running container; the
	// instance's include them and its sandbox's.
	Containers []ContainerStats `json:"containers,omitempty"`
}

// ContainerStats are one container's counters, from its own cgroup.
type ContainerStats struct {
	Name          string `json:"name"`
	CPUUsageNanos uint64 `json:"cpuUsageNanos"`
	MemoryUsage   uint64 `json:"memoryUsage"`
	// MemoryWorkingSet is the usage less the inactive page cache, what
	// the kubelet and cAdvisor call the working set (and what an OOM
	// kill is judged by).
	MemoryWorkingSet uint64 `json:"memoryWorkingSet"`
}

// Kinds of StorageStats.
const (
	StorageEmptyDir      = "emptyDir"
	StorageWritableLayer = "writableLayer"
	// StorageDisk is the instance's disk (resources.disk): the writable
	// layers of all its containers and its disk emptyDirs without a
	// sizeLimit, on one filesystem.
	StorageDisk = "disk"
)

// StorageStats is one size-limited filesystem of an instance, as the
// kernel reports it (statfs).
type StorageStats struct {
	// Name is the emptyDir's volume name, "disk" for the instance's disk,
	// or (from an earlier agent) a container's name for its writable
	// layer.
	Name string `json:"name"`
	// Kind is emptyDir, disk or writableLayer.
	Kind   string `json:"kind"`
	Medium string `json:"medium,omitempty"`
	// Limit is the size the spec asks for; Size is what the filesystem
	// holds (used and available), which must be the limit.
	Limit uint64 `json:"limit"`
	Size  uint64 `json:"size"`
	Used  uint64 `json:"used"`
}

// SLAItem says, for one promised resource, whether the promise was kept.
type SLAItem struct {
	Resource  string `json:"resource"`
	Promised  string `json:"promised"`
	Delivered string `json:"delivered"`
	// Kept is false when the instance wanted the resource and got less
	// than promised (or was let past a limit).
	Kept   bool   `json:"kept"`
	Detail string `json:"detail,omitempty"`
}

// SLAReport is the body of GET /v1/instances/{name}/sla.
type SLAReport struct {
	Instance string    `json:"instance"`
	Since    time.Time `json:"since"`
	Until    time.Time `json:"until"`
	Items    []SLAItem `json:"items"`
}

// Host phases.
const (
	HostReady    = "Ready"
	HostNotReady = "NotReady"
)

// Host is one machine of the pool as the control plane sees it.
type Host struct {
	Name string `json:"name"`
	// Address is https://host:port of the agent's host API.
	Address string `json:"address,omitempty"`
	// Labels describe the host for selectors, e.g. "zone": "a".
	Labels         map[string]string `json:"labels,omitempty"`
	Capacity       HostCapacity      `json:"capacity"`
	RuntimeClasses []string          `json:"runtimeClasses,omitempty"`
	Capabilities   []string          `json:"capabilities,omitempty"`
	// Images are the images the host holds, per tenant, as its agent last
	// reported them (at registration and when the set changes): the
	// scheduler prefers a host that holds a new instance's images. At most
	// MaxHostImages, the hot ones first.
	Images []HostImage `json:"images,omitempty"`
	// Cordoned hosts get no new instances; set by kanga host cordon.
	Cordoned bool       `json:"cordoned,omitempty"`
	Version  string     `json:"version,omitempty"`
	Status   HostStatus `json:"status"`
	// Subnet is the IPv4 network the host's instances get addresses
	// from; the hosts' agents use it to tell instances from the outside.
	Subnet string `json:"subnet,omitempty"`
	// Devices are the devices the host offers, from its CDI specs.
	Devices []HostDevice `json:"devices,omitempty"`
}

// HostDevice is a device a host offers to instances.
type HostDevice struct {
	// Name is the device's fully qualified CDI name, vendor.com/class=name.
	Name string `json:"name"`
	// Shareable devices may be held by any number of instances at once
	// (the CDI spec's annotation kanga.run/shareable: "true"); the others
	// by one at a time.
	Shareable bool `json:"shareable,omitempty"`
}

// MaxHostImages caps the images one host reports: a host record is read
// on every scheduling pass, and a few hundred entries keep it a few tens of
// kilobytes. The hot images (recently started) are kept first.
const MaxHostImages = 256

// HostImage is an image a host holds for a tenant. Image records belong to
// a tenant (content is shared on the host, the name is not), so locality is
// per tenant: another tenant's copy does not let an instance start.
type HostImage struct {
	Tenant string `json:"tenant"`
	// Name is the normalized reference, e.g. docker.io/library/busybox:latest.
	Name   string `json:"name"`
	Digest string `json:"digest"`
	// Starts counts the containers started from the image on the host since
	// its agent started; Hot is Starts > 0.
	Starts int64 `json:"starts,omitempty"`
	Hot    bool  `json:"hot,omitempty"`
	// LastUsedAt is the last of those starts.
	LastUsedAt *time.Time `json:"lastUsedAt,omitempty"`
}

// HostCapacity is what a host offers to instances.
type HostCapacity struct {
	CPUs        int   `json:"cpus"`
	MemoryBytes int64 `json:"memoryBytes"`
	// Pods is the most instances the host runs at once; 0 is no limit.
	Pods int `json:"pods"`
	// BandwidthBPS is the bit rate the host can promise in total, and
	// Pids the processes; 0 means the host does not meter it.
	BandwidthBPS int64 `json:"bandwidthBps,omitempty"`
	Pids         int64 `json:"pids,omitempty"`
	// DiskBytes is the ephemeral storage (resources.disk) the host can
	// promise in total: what its volume storage's filesystem has free
	// beyond what its instances' disks already take; 0 means the host
	// does not meter it.
	DiskBytes int64 `json:"diskBytes,omitempty"`
	// StartSlots is how many instance starts the host's agent runs at
	// once; more wait their turn. The API admits creates up to the ready
	// hosts' slots. 0 (an older agent) counts as DefaultStartSlots(CPUs).
	StartSlots int `json:"startSlots,omitempty"`
}

// DefaultStartSlots is the start slots of a host with cpus cores that
// does not say: two starts per core keep the cores busy (a start waits on
// containerd and the runtime about half of its time) without letting a
// burst starve the control path.
func DefaultStartSlots(cpus int) int { return 2 * max(cpus, 1) }

// HostStatus is the control plane's view of a host's health.
type HostStatus struct {
	// Phase is Ready while the host holds its lease, NotReady otherwise.
	Phase         string    `json:"phase"`
	Reason        string    `json:"reason,omitempty"`
	RegisteredAt  time.Time `json:"registeredAt,omitempty"`
	LastHeartbeat time.Time `json:"lastHeartbeat,omitempty"`
	// Condition is what the control plane's failure detector concluded
	// about a host without a lease: LeaseLapsed while the host still
	// answers by its link or host API (its instances are kept), Lost once
	// its instances are re-created elsewhere, SafetyBrake while too many
	// hosts look lost at once to act on any. Empty for a Ready host.
	Condition        string `json:"condition,omitempty"`
	ConditionMessage string `json:"conditionMessage,omitempty"`
}

// Host conditions (HostStatus.Condition).
const (
	HostLeaseLapsed = "LeaseLapsed"
	HostLost        = "Lost"
	HostSafetyBrake = "SafetyBrake"
)

// HostList is the body of GET /v1/hosts.
type HostList struct {
	Items []Host `json:"items"`
}

// DrainReport is the body of POST /v1/hosts/{name}/drain: the host is
// cordoned and its restartable instances are re-created elsewhere.
type DrainReport struct {
	Host string `json:"host"`
	// Moved are the instances (tenant/name) re-created to be placed on
	// other hosts.
	Moved []string `json:"moved"`
	// Remaining are the instances left on the host, with why.
	Remaining []DrainRemaining `json:"remaining"`
}

// DrainRemaining is an instance a drain could not move.
type DrainRemaining struct {
	Instance string `json:"instance"`
	Reason   string `json:"reason"`
}
