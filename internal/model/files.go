package model

import (
	"cmp"
	"fmt"
	"maps"
	"path"
	"slices"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
)

// DefaultFileMode is the mode of a secret's or config's files when the
// volume names none, as in Kubernetes.
const DefaultFileMode = 0o644

// ProjectedFile is one file of a secret or config volume as a host writes
// it under the volume's directory (on tmpfs, for secrets): what the
// host's files step needs, and all it needs, to mount the volume.
type ProjectedFile struct {
	// Path is relative to the mount point, cleaned, without "..".
	Path string
	Mode uint32
	Data []byte
}

// ProjectVolume lays out the files of a secret or config volume from the
// object's current data: every key a file named after it, or only the
// items, at their paths and modes. It is the control plane's to call when
// a host asks for an instance's files, so that the values travel to that
// host only, over its link, and never sit in the instance record. A key
// an item names that the object no longer has is a FailedPrecondition
// (the object changed after the instance was created).
func ProjectVolume(src *api.ObjectVolumeSource, data map[string][]byte) ([]ProjectedFile, error) {
	mode := uint32(DefaultFileMode)
	if src.DefaultMode != nil {
		mode = uint32(*src.DefaultMode)
	}
	var out []ProjectedFile
	if len(src.Items) == 0 {
		for _, k := range slices.Sorted(maps.Keys(data)) {
			out = append(out, ProjectedFile{Path: k, Mode: mode, Data: data[k]})
		}
		return out, nil
	}
	for _, it := range src.Items {
		v, ok := data[it.Key]
		if !ok {
			return nil, fmt.Errorf("volume of %q: key %q is no longer in it: %w", src.Name, it.Key, errdefs.ErrFailedPrecondition)
		}
		m := mode
		if it.Mode != nil {
			m = uint32(*it.Mode)
		}
		out = append(out, ProjectedFile{Path: path.Clean(it.Path), Mode: m, Data: v})
	}
	slices.SortFunc(out, func(a, b ProjectedFile) int { return cmp.Compare(a.Path, b.Path) })
	return out, nil
}
