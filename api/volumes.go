package api

import "time"

// Persistent volume sizes: below 16Mi a filesystem is mostly its own
// metadata; 1Ti bounds what one tenant may ask a host's disk for.
const (
	MinVolumeSize = 16 << 20
	MaxVolumeSize = 1 << 40
)

// Phases of a persistent volume.
const (
	// VolumeCreating: recorded, being made on its host.
	VolumeCreating = "Creating"
	// VolumeAvailable: made, free for an instance.
	VolumeAvailable = "Available"
	// VolumeInUse: an instance holds it (one at a time).
	VolumeInUse = "InUse"
	// VolumeDeleting: being removed from its host.
	VolumeDeleting = "Deleting"
)

// PersistentVolume is a tenant's named filesystem of a fixed size on one
// host, whose data outlives the instances that use it. One instance at a
// time mounts it (ReadWriteOnce); instances using it run on its host.
type PersistentVolume struct {
	Name   string `json:"name"`
	Tenant string `json:"tenant"`
	// Size is what the tenant can write, in bytes: a write past it fails
	// with ENOSPC.
	Size int64 `json:"size"`
	// Encrypted volumes are encrypted at rest on their host with a key of
	// their own, which the control plane keeps (encrypted) and hands only
	// to the volume's host when it mounts the volume.
	Encrypted bool `json:"encrypted,omitempty"`
	// Host is where the volume lives.
	Host      string                 `json:"host"`
	CreatedAt time.Time              `json:"createdAt"`
	Status    PersistentVolumeStatus `json:"status"`
}

// PersistentVolumeStatus is what the platform knows of a volume now.
type PersistentVolumeStatus struct {
	// Phase is Creating, Available, InUse or Deleting.
	Phase string `json:"phase"`
	// Holder is the instance that has the volume, while one does: from
	// its create until its removal.
	Holder  string `json:"holder,omitempty"`
	Message string `json:"message,omitempty"`
}

// CreateVolumeRequest is the body of POST /v1/volumes.
type CreateVolumeRequest struct {
	Name string `json:"name"`
	// Size is a quantity: "100Mi", "1Gi" (16Mi to 1Ti).
	Size      string `json:"size"`
	Encrypted bool   `json:"encrypted,omitempty"`
	// Host places the volume on this host; empty lets the platform
	// choose.
	Host string `json:"host,omitempty"`
}

// PersistentVolumeList is the body of GET /v1/volumes.
type PersistentVolumeList struct {
	Items []PersistentVolume `json:"items"`
}

// PersistentVolumeSource mounts one of the tenant's persistent volumes
// into the instance (see kanga volume create).
type PersistentVolumeSource struct {
	// Name is the persistent volume's name.
	Name string `json:"name"`
}

// BoundVolume is a persistent volume an instance uses, as the API found
// it when the instance was created: the host runs the instance only
// there, and the host mounts it under ID.
type BoundVolume struct {
	// Name is the volume's name in the tenant.
	Name string `json:"name"`
	// ID names the volume on its host.
	ID        string `json:"id"`
	Host      string `json:"host"`
	Encrypted bool   `json:"encrypted,omitempty"`
}
