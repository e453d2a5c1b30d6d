package api

import "time"

// MaxObjectBytes caps the data of one secret or config (keys and values
// together), as Kubernetes caps a Secret or ConfigMap: etcd keeps whole
// records in memory and sends them to every watcher.
const MaxObjectBytes = 1 << 20

// ObjectKey describes one key of a secret or config: its name and the size
// of its value. Listings and inspect show these, never a secret's values.
type ObjectKey struct {
	Name string `json:"name"`
	Size int    `json:"size"`
}

// Secret is a tenant's named set of sensitive values, encrypted at rest.
// Its values are returned only by GET /v1/secrets/{name}?reveal=true, to a
// token holding the secrets:reveal scope.
type Secret struct {
	Name      string    `json:"name"`
	Tenant    string    `json:"tenant"`
	CreatedAt time.Time `json:"createdAt"`
	UpdatedAt time.Time `json:"updatedAt"`
	// Keys are the secret's keys and value sizes, by name.
	Keys []ObjectKey `json:"keys"`
	// Data is set only when the values were asked for (reveal); in JSON
	// the values are base64, as in a Kubernetes Secret.
	Data map[string][]byte `json:"data,omitempty"`
}

// CreateSecretRequest is the body of POST /v1/secrets. Data may be empty,
// as in Kubernetes; keys are [-._a-zA-Z0-9]+, values are base64 in JSON.
type CreateSecretRequest struct {
	Name string            `json:"name"`
	Data map[string][]byte `json:"data,omitempty"`
}

// UpdateSecretRequest is the body of PUT /v1/secrets/{name}: Data replaces
// the secret's data as a whole.
type UpdateSecretRequest struct {
	Data map[string][]byte `json:"data,omitempty"`
}

// SecretList is the body of GET /v1/secrets (no values).
type SecretList struct {
	Items []Secret `json:"items"`
}

// SecretKeyRotation is the answer to POST /v1/secret-keys/rotate: the new
// key every secret is now encrypted with.
type SecretKeyRotation struct {
	// KeyID names the new key; records carry the ID of their key.
	KeyID string `json:"keyId"`
	// Reencrypted counts the secrets, of every tenant, re-encrypted.
	Reencrypted int `json:"reencrypted"`
	// Retired are the IDs of the old keys dropped once no secret used
	// them any more.
	Retired []string `json:"retired"`
}

// Config is a tenant's named set of configuration files, stored as is.
type Config struct {
	Name      string      `json:"name"`
	Tenant    string      `json:"tenant"`
	CreatedAt time.Time   `json:"createdAt"`
	UpdatedAt time.Time   `json:"updatedAt"`
	Keys      []ObjectKey `json:"keys"`
	// Data is set by GET /v1/configs/{name}, not in listings; in JSON the
	// values are base64 (a config file may be binary).
	Data map[string][]byte `json:"data,omitempty"`
}

// CreateConfigRequest is the body of POST /v1/configs.
type CreateConfigRequest struct {
	Name string            `json:"name"`
	Data map[string][]byte `json:"data,omitempty"`
}

// UpdateConfigRequest is the body of PUT /v1/configs/{name}: Data replaces
// the config's data as a whole.
type UpdateConfigRequest struct {
	Data map[string][]byte `json:"data,omitempty"`
}

// ConfigList is the body of GET /v1/configs (keys and sizes, no data).
type ConfigList struct {
	Items []Config `json:"items"`
}

// Volume is a named volume of an instance that its containers mount with
// VolumeMounts. Exactly one source is set.
type Volume struct {
	Name string `json:"name"`
	// Secret makes each key of a secret of the tenant a file.
	Secret *ObjectVolumeSource `json:"secret,omitempty"`
	// Config makes each key of a config of the tenant a file.
	Config *ObjectVolumeSource `json:"config,omitempty"`
	// PersistentVolume mounts a persistent volume of the tenant.
	PersistentVolume *PersistentVolumeSource `json:"persistentVolume,omitempty"`
	// EmptyDir is scratch space of the instance, empty at its start,
	// shared by the containers that mount it and removed with the
	// instance.
	EmptyDir *EmptyDirVolumeSource `json:"emptyDir,omitempty"`
}

// Media of an emptyDir.
const (
	// MediumDefault is a filesystem of its own on the host's disk.
	MediumDefault = ""
	// MediumMemory is a tmpfs, whose pages count against the instance's
	// memory limit.
	MediumMemory = "Memory"
)

// EmptyDirVolumeSource is an emptyDir, as in a Kubernetes pod. The kernel
// enforces SizeLimit: a write past it fails with ENOSPC.
type EmptyDirVolumeSource struct {
	// Medium is "" (disk) or "Memory" (tmpfs).
	Medium string `json:"medium,omitempty"`
	// SizeLimit is a quantity ("64Mi", 4Mi to 16Ti). Left out, it is the
	// instance's memory limit for a Memory emptyDir, and the instance's
	// disk limit, or 1Gi without one, for a disk emptyDir.
	SizeLimit string `json:"sizeLimit,omitempty"`
}

// ObjectVolumeSource projects a secret or config into a directory, read
// only: every key a file named after it, or only Items, at their paths.
type ObjectVolumeSource struct {
	// Name is the secret's or config's name.
	Name  string      `json:"name"`
	Items []KeyToPath `json:"items,omitempty"`
	// DefaultMode is the files' permission bits (default 0644; 0-0777).
	DefaultMode *int32 `json:"defaultMode,omitempty"`
}

// KeyToPath puts one key at a path relative to the mount point.
type KeyToPath struct {
	Key  string `json:"key"`
	Path string `json:"path"`
	// Mode overrides the volume's DefaultMode for this file.
	Mode *int32 `json:"mode,omitempty"`
}

// VolumeMount mounts a volume of the instance into a container. Secret
// and config volumes are always read-only.
type VolumeMount struct {
	Name      string `json:"name"`
	MountPath string `json:"mountPath"`
	ReadOnly  bool   `json:"readOnly,omitempty"`
	// SubPath mounts this path inside the volume instead of its root: a
	// relative, clean path without "..", resolved on the host inside the
	// volume (a symlink in it cannot lead out) and made a directory when
	// missing. A file of a secret or config volume mounted by SubPath
	// keeps the content it had at start, as in Kubernetes.
	SubPath string `json:"subPath,omitempty"`
}

// EnvFromSource sets a variable for every key of a secret or config, named
// Prefix + key. Variables of the container's env win over these.
type EnvFromSource struct {
	Prefix       string     `json:"prefix,omitempty"`
	SecretRef    *ObjectRef `json:"secretRef,omitempty"`
	ConfigMapRef *ObjectRef `json:"configMapRef,omitempty"`
}

// ObjectRef names a secret or config of the tenant.
type ObjectRef struct {
	Name string `json:"name"`
}

// EnvVarSource takes a variable's value from one key of a secret or
// config, or from a field of the instance that is known only at start.
type EnvVarSource struct {
	SecretKeyRef    *KeySelector `json:"secretKeyRef,omitempty"`
	ConfigMapKeyRef *KeySelector `json:"configMapKeyRef,omitempty"`
	// FieldRef is resolved by the host when it starts the container.
	FieldRef *FieldRef `json:"fieldRef,omitempty"`
}

// Fields an env variable may take with FieldRef.
const (
	// FieldPodIP is the instance's IP address.
	FieldPodIP = "status.podIP"
	// FieldPodIPs is the same, as Kubernetes' dual-stack list (Kanga
	// instances have one address).
	FieldPodIPs = "status.podIPs"
)

// FieldRef names a field of the instance, as a Kubernetes downward-API
// fieldRef does. A container with such a variable has $(NAME) references
// to it in its env values, command and args replaced at start, as
// Kubernetes does; $$ then stands for a literal $ in those.
type FieldRef struct {
	FieldPath string `json:"fieldPath"`
}

// KeySelector names one key of a secret or config.
type KeySelector struct {
	Name string `json:"name"`
	Key  string `json:"key"`
}
