package model

import (
	"fmt"

	"github.com/kanga-run/kanga/api"
)

// ValidateVolumeName checks the name of a persistent volume: a DNS label,
// as an instance's name.
func ValidateVolumeName(field, name string) error {
	if name == "" {
		return invalid("%s is empty: name the volume, e.g. data", field)
	}
	return ValidateName(field, name)
}

// ParseVolumeSize parses the size of a persistent volume ("100Mi",
// "1Gi") and checks it is within api.MinVolumeSize..api.MaxVolumeSize.
func ParseVolumeSize(field, s string) (int64, error) {
	if s == "" {
		return 0, invalid("%s is empty: give a size such as 1Gi (16Mi to 1Ti)", field)
	}
	n, err := ParseMemory(s)
	if err != nil {
		return 0, invalid("%s %q is not a size: use a number with a unit such as 100Mi or 1Gi", field, truncate(s))
	}
	if n < api.MinVolumeSize || n > api.MaxVolumeSize {
		return 0, invalid("%s %q is out of range: a volume is 16Mi to 1Ti", field, truncate(s))
	}
	return n, nil
}

// ValidateCreateVolume checks a POST /v1/volumes body and returns the
// size in bytes.
func ValidateCreateVolume(req *api.CreateVolumeRequest) (int64, error) {
	if err := ValidateVolumeName("name", req.Name); err != nil {
		return 0, err
	}
	size, err := ParseVolumeSize("size", req.Size)
	if err != nil {
		return 0, err
	}
	if req.Host != "" {
		if err := ValidateName("host", req.Host); err != nil {
			return 0, err
		}
	}
	return size, nil
}

// VolumeRef is one persistent volume of a validated spec: the field that
// names it (for errors) and whether every mount of it is read-only.
type VolumeRef struct {
	Field    string
	Name     string
	ReadOnly bool
}

// PersistentVolumeRefs lists a validated spec's persistent volumes, in
// the order of spec.volumes. A volume that no container mounts is still
// listed: the instance holds it all the same.
func PersistentVolumeRefs(spec *api.InstanceSpec) []VolumeRef {
	var refs []VolumeRef
	for i, v := range spec.Volumes {
		if v.PersistentVolume == nil {
			continue
		}
		ro, mounted := true, false
		for _, c := range AllContainers(spec) {
			for _, m := range c.Spec.VolumeMounts {
				if m.Name == v.Name {
					mounted = true
					ro = ro && m.ReadOnly
				}
			}
		}
		refs = append(refs, VolumeRef{Field: fmt.Sprintf("spec.volumes[%d].persistentVolume.name", i), Name: v.PersistentVolume.Name, ReadOnly: ro && mounted})
	}
	return refs
}
