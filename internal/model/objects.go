package model

import (
	"errors"
	"fmt"
	"path"
	"regexp"
	"slices"
	"strings"

	"github.com/kanga-run/kanga/api"
)

// Secrets and configs follow Kubernetes' rules for Secrets and
// ConfigMaps: names are DNS-1123 subdomains, keys [-._a-zA-Z0-9]+ (they
// become file names, hence no '/'), data at most api.MaxObjectBytes, and
// empty data is allowed.
const (
	MaxObjectName = 253
	MaxObjectKey  = 253
	// MaxObjectKeys caps the keys of one object; each becomes a file.
	MaxObjectKeys = 1024
	// MaxVolumes caps the volumes of an instance and the mounts of a
	// container.
	MaxVolumes = 64
	// MaxEnvFrom caps a container's envFrom sources.
	MaxEnvFrom = 32
)

var (
	subdomain = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
	objectKey = regexp.MustCompile(`^[-._a-zA-Z0-9]+$`)
)

// ValidateObjectName checks the name of a secret or config.
func ValidateObjectName(field, name string) error {
	if name == "" {
		return invalid("%s is empty: name the object, e.g. db-password", field)
	}
	if len(name) > MaxObjectName || !subdomain.MatchString(name) {
		return invalid("%s %q is not valid: use at most %d lower-case letters, digits, '-' and '.', starting and ending with a letter or digit", field, truncate(name), MaxObjectName)
	}
	return nil
}

// ValidateObjectKey checks one key of a secret or config.
func ValidateObjectKey(field, k string) error {
	switch {
	case k == "":
		return invalid("%s is empty: a key names a file, e.g. password or app.conf", field)
	case len(k) > MaxObjectKey:
		return invalid("%s: %d bytes, at most %d", field, len(k), MaxObjectKey)
	case strings.Contains(k, "/"):
		return invalid("%s %q contains '/': a key is one file name, without directories", field, truncate(k))
	case k == "." || k == ".." || strings.HasPrefix(k, ".."):
		return invalid("%s %q: a key may not be '.' or '..' or start with '..'", field, truncate(k))
	case !objectKey.MatchString(k):
		return invalid("%s %q is not valid: use letters, digits, '-', '_' and '.'", field, truncate(k))
	}
	return nil
}

// ValidateObjectData checks the keys and the total size of an object's
// data. It never quotes a value: they may be secret.
func ValidateObjectData(field string, data map[string][]byte) error {
	if n := len(data); n > MaxObjectKeys {
		return invalid("%s has %d keys, at most %d", field, n, MaxObjectKeys)
	}
	var errs []error
	total := 0
	keys := make([]string, 0, len(data))
	for k := range data {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if err := ValidateObjectKey(fmt.Sprintf("%s key", field), k); err != nil {
			errs = append(errs, err)
		}
		total += len(k) + len(data[k])
	}
	if total > api.MaxObjectBytes {
		errs = append(errs, invalid("%s: %d bytes in all, at most %d (1 MiB): keep large files in an image or a volume", field, total, api.MaxObjectBytes))
	}
	return errors.Join(errs...)
}

// forbiddenMountRoots are the container paths the runtime owns (or Kanga
// does, /.kanga): a volume over them would hide or replace what the
// container's sandbox depends on.
var forbiddenMountRoots = []string{"/proc", "/sys", "/dev", "/.kanga"}

// ValidateMountPath checks a container path a volume is mounted at.
func ValidateMountPath(field, p string) error {
	switch {
	case p == "":
		return invalid("%s is empty: give an absolute path such as /etc/app", field)
	case len(p) > MaxPath:
		return invalid("%s: %d bytes, at most %d", field, len(p), MaxPath)
	case !path.IsAbs(p):
		return invalid("%s %q must be an absolute path", field, truncate(p))
	case slices.Contains(strings.Split(p, "/"), ".."):
		return invalid("%s %q contains '..'", field, truncate(p))
	case strings.ContainsRune(p, 0):
		return invalid("%s contains a NUL byte", field)
	}
	c := path.Clean(p)
	if c == "/" {
		return invalid("%s: a volume may not be mounted over the container's root", field)
	}
	for _, root := range forbiddenMountRoots {
		if c == root || strings.HasPrefix(c, root+"/") {
			return invalid("%s %q is under %s, which the runtime owns: mount elsewhere", field, truncate(p), root)
		}
	}
	return nil
}

// ValidateSubPath checks a volume mount's subPath: a path inside the
// volume, relative and clean, so that what the host resolves is what the
// tenant wrote (the host still resolves it inside the volume, against
// symlinks the containers plant).
func ValidateSubPath(field, p string) error {
	switch {
	case len(p) > MaxPath:
		return invalid("%s: %d bytes, at most %d", field, len(p), MaxPath)
	case strings.ContainsRune(p, 0):
		return invalid("%s contains a NUL byte", field)
	case path.IsAbs(p):
		return invalid("%s %q must be relative to the volume's root", field, truncate(p))
	case slices.Contains(strings.Split(p, "/"), ".."):
		return invalid("%s %q contains '..': a subPath stays inside its volume", field, truncate(p))
	case path.Clean(p) != p || p == ".":
		return invalid("%s %q is not a clean path: write it as %q, without '.', '//' or a trailing '/'", field, truncate(p), path.Clean(p))
	}
	return nil
}

// sourceNames are the sources a volume may have, one of them.
var sourceNames = []string{"secret", "config", "emptyDir", "persistentVolume"}

// volumeSources counts the sources v sets.
func volumeSources(v api.Volume) int {
	n := 0
	for _, set := range []bool{v.Secret != nil, v.Config != nil, v.EmptyDir != nil, v.PersistentVolume != nil} {
		if set {
			n++
		}
	}
	return n
}

// Bounds of an emptyDir's size and of resources.disk: a filesystem
// smaller than 4Mi is mostly its own metadata; 16Ti is ext4's limit with
// 4 KiB blocks.
const (
	MinScratchSize = 4 << 20
	MaxScratchSize = 16 << 40
)

// DefaultEmptyDirSize is the size of a disk emptyDir that gives no
// sizeLimit in an instance without a disk limit. The filesystem is a
// sparse file: the host's disk gives it only what is written.
const DefaultEmptyDirSize = 1 << 30

// EmptyDirSize is the size, in bytes, of the filesystem of emptyDir e of
// spec (after Defaults), which field names in errors: its sizeLimit, or
// without one the instance's memory limit (medium Memory) or disk limit
// (DefaultEmptyDirSize without either). A Memory emptyDir's pages count
// against the instance's memory limit, as in Kubernetes, so one larger
// than the limit is refused: the instance would be OOM-killed before its
// tmpfs was full.
func EmptyDirSize(spec *api.InstanceSpec, e *api.EmptyDirVolumeSource, field string) (int64, error) {
	var limit int64
	var limitField string
	switch e.Medium {
	case api.MediumDefault:
		limitField = "disk"
		if spec.Resources.Disk != "" {
			limit, _ = ParseMemory(spec.Resources.Disk)
		}
	case api.MediumMemory:
		limitField = "memory"
		if spec.Resources.Memory != "" {
			limit, _ = ParseMemory(spec.Resources.Memory)
		}
	default:
		return 0, invalid("%s.medium %q is not \"\" (disk) or %q", field, truncate(e.Medium), api.MediumMemory)
	}
	if e.SizeLimit == "" {
		switch {
		case limit > 0:
			return max(limit, MinScratchSize), nil
		default:
			return DefaultEmptyDirSize, nil
		}
	}
	size, err := ParseMemory(e.SizeLimit)
	if err != nil {
		return 0, fmt.Errorf("%s.sizeLimit: %w", field, err)
	}
	if size < MinScratchSize || size > MaxScratchSize {
		return 0, invalid("%s.sizeLimit %q is not between 4Mi and 16Ti", field, truncate(e.SizeLimit))
	}
	if e.Medium == api.MediumMemory && limit > 0 && size > limit {
		return 0, invalid("%s.sizeLimit %q is above spec.resources.%s %q: a Memory emptyDir's files count against the instance's memory", field, e.SizeLimit, limitField, spec.Resources.Memory)
	}
	return size, nil
}

// validateItemPath checks a file path relative to a mount point.
func validateItemPath(field, p string) error {
	switch {
	case p == "":
		return invalid("%s is empty: give a file name relative to the mount point", field)
	case len(p) > MaxPath:
		return invalid("%s: %d bytes, at most %d", field, len(p), MaxPath)
	case path.IsAbs(p):
		return invalid("%s %q must be relative to the mount point", field, truncate(p))
	case slices.ContainsFunc(strings.Split(p, "/"), func(e string) bool { return strings.HasPrefix(e, "..") }):
		// The host keeps each version of the volume in a "..<time>"
		// directory and points "..data" at the current one.
		return invalid("%s %q: no element of the path may start with '..'", field, truncate(p))
	case strings.ContainsRune(p, 0):
		return invalid("%s contains a NUL byte", field)
	}
	return nil
}

func validateMode(field string, m *int32) error {
	if m != nil && (*m < 0 || *m > 0o777) {
		return invalid("%s %d is out of range: give permission bits 0-0777 (e.g. 0400 = 256)", field, *m)
	}
	return nil
}

// validateVolumes checks spec.volumes and every container's volumeMounts
// and env references. Whether the objects exist is the server's question
// (ObjectRefs lists them).
func validateVolumes(spec *api.InstanceSpec) []error {
	var errs []error
	if n := len(spec.Volumes); n > MaxVolumes {
		return []error{invalid("spec.volumes has %d volumes, at most %d", n, MaxVolumes)}
	}
	vols := map[string]bool{}
	pvs := map[string]int{} // persistent volume -> index in spec.volumes
	for i, v := range spec.Volumes {
		f := fmt.Sprintf("spec.volumes[%d]", i)
		if err := ValidateName(f+".name", v.Name); err != nil {
			errs = append(errs, err)
		} else if vols[v.Name] {
			errs = append(errs, invalid("%s.name %q names another volume too: volume names must be unique", f, v.Name))
		}
		vols[v.Name] = true
		var src *api.ObjectVolumeSource
		if n := volumeSources(v); n != 1 {
			if n == 0 {
				errs = append(errs, invalid("%s has no source: give one of %s", f, strings.Join(sourceNames, ", ")))
			} else {
				errs = append(errs, invalid("%s has %d sources: give one source per volume", f, n))
			}
			continue
		}
		switch {
		case v.PersistentVolume != nil:
			pv := v.PersistentVolume
			if err := ValidateVolumeName(f+".persistentVolume.name", pv.Name); err != nil {
				errs = append(errs, err)
			} else if j, dup := pvs[pv.Name]; dup {
				errs = append(errs, invalid("%s.persistentVolume.name %q is also the volume of spec.volumes[%d]: mount one volume at several paths through one entry", f, pv.Name, j))
			} else {
				pvs[pv.Name] = i
			}
			continue
		case v.Secret != nil:
			src, f = v.Secret, f+".secret"
		case v.Config != nil:
			src, f = v.Config, f+".config"
		case v.EmptyDir != nil:
			if _, err := EmptyDirSize(spec, v.EmptyDir, f+".emptyDir"); err != nil {
				errs = append(errs, err)
			}
			continue
		}
		if err := ValidateObjectName(f+".name", src.Name); err != nil {
			errs = append(errs, err)
		}
		if err := validateMode(f+".defaultMode", src.DefaultMode); err != nil {
			errs = append(errs, err)
		}
		paths := map[string]bool{}
		for j, it := range src.Items {
			itf := fmt.Sprintf("%s.items[%d]", f, j)
			if err := ValidateObjectKey(itf+".key", it.Key); err != nil {
				errs = append(errs, err)
			}
			if err := validateItemPath(itf+".path", it.Path); err != nil {
				errs = append(errs, err)
			} else if c := path.Clean(it.Path); paths[c] {
				errs = append(errs, invalid("%s.path %q is the path of another item", itf, it.Path))
			} else {
				paths[c] = true
			}
			if err := validateMode(itf+".mode", it.Mode); err != nil {
				errs = append(errs, err)
			}
		}
	}
	for _, sc := range AllContainers(spec) {
		f, c := sc.Field, *sc.Spec
		if n := len(c.VolumeMounts); n > MaxVolumes {
			errs = append(errs, invalid("%s.volumeMounts has %d mounts, at most %d", f, n, MaxVolumes))
			continue
		}
		at := map[string]int{}
		for j, m := range c.VolumeMounts {
			mf := fmt.Sprintf("%s.volumeMounts[%d]", f, j)
			if !vols[m.Name] {
				errs = append(errs, invalid("%s.name %q is not a volume of spec.volumes", mf, m.Name))
			}
			if err := ValidateMountPath(mf+".mountPath", m.MountPath); err != nil {
				errs = append(errs, err)
				continue
			}
			if m.SubPath != "" {
				if err := ValidateSubPath(mf+".subPath", m.SubPath); err != nil {
					errs = append(errs, err)
				}
			}
			p := path.Clean(m.MountPath)
			if k, dup := at[p]; dup {
				errs = append(errs, invalid("%s.mountPath %q is also the path of %s.volumeMounts[%d]: two volumes cannot share a path", mf, m.MountPath, f, k))
			}
			at[p] = j
		}
		if n := len(c.EnvFrom); n > MaxEnvFrom {
			errs = append(errs, invalid("%s.envFrom has %d sources, at most %d", f, n, MaxEnvFrom))
			continue
		}
		for j, e := range c.EnvFrom {
			ef := fmt.Sprintf("%s.envFrom[%d]", f, j)
			if e.Prefix != "" && !envName.MatchString(e.Prefix) {
				errs = append(errs, invalid("%s.prefix %q does not start a valid variable name", ef, truncate(e.Prefix)))
			}
			switch {
			case e.SecretRef != nil && e.ConfigMapRef != nil:
				errs = append(errs, invalid("%s has both secretRef and configMapRef: give one per source", ef))
			case e.SecretRef != nil:
				if err := ValidateObjectName(ef+".secretRef.name", e.SecretRef.Name); err != nil {
					errs = append(errs, err)
				}
			case e.ConfigMapRef != nil:
				if err := ValidateObjectName(ef+".configMapRef.name", e.ConfigMapRef.Name); err != nil {
					errs = append(errs, err)
				}
			default:
				errs = append(errs, invalid("%s has no source: give secretRef or configMapRef", ef))
			}
		}
		for j, e := range c.Env {
			if e.ValueFrom == nil {
				continue
			}
			vf := fmt.Sprintf("%s.env[%d].valueFrom", f, j)
			if e.Value != "" {
				errs = append(errs, invalid("%s.env[%d]: give a value or valueFrom, not both", f, j))
			}
			var sel *api.KeySelector
			n := 0
			for _, set := range []bool{e.ValueFrom.SecretKeyRef != nil, e.ValueFrom.ConfigMapKeyRef != nil, e.ValueFrom.FieldRef != nil} {
				if set {
					n++
				}
			}
			switch {
			case n > 1:
				errs = append(errs, invalid("%s has more than one of secretKeyRef, configMapKeyRef and fieldRef: give one", vf))
				continue
			case e.ValueFrom.FieldRef != nil:
				switch p := e.ValueFrom.FieldRef.FieldPath; p {
				case api.FieldPodIP, api.FieldPodIPs:
				default:
					errs = append(errs, invalid("%s.fieldRef.fieldPath %q is not supported: use %s or %s", vf, p, api.FieldPodIP, api.FieldPodIPs))
				}
				continue
			case e.ValueFrom.SecretKeyRef != nil:
				sel, vf = e.ValueFrom.SecretKeyRef, vf+".secretKeyRef"
			case e.ValueFrom.ConfigMapKeyRef != nil:
				sel, vf = e.ValueFrom.ConfigMapKeyRef, vf+".configMapKeyRef"
			default:
				errs = append(errs, invalid("%s has no source: give secretKeyRef, configMapKeyRef or fieldRef", vf))
				continue
			}
			if err := ValidateObjectName(vf+".name", sel.Name); err != nil {
				errs = append(errs, err)
			}
			if err := ValidateObjectKey(vf+".key", sel.Key); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errs
}

// ObjectKind tells secrets from configs in an ObjectRef.
type ObjectKind string

const (
	KindSecret ObjectKind = "secret"
	KindConfig ObjectKind = "config"
)

// ObjectRef is one reference of a spec to a secret or config: the field
// that makes it (for the 400 when the object is missing), the object and,
// when a single key is used, the key.
type ObjectRef struct {
	Field string
	Kind  ObjectKind
	Name  string
	Key   string
}

// ObjectRefs lists a validated spec's references to secrets and configs,
// in the order of the spec.
func ObjectRefs(spec *api.InstanceSpec) []ObjectRef {
	var refs []ObjectRef
	for i, v := range spec.Volumes {
		f := fmt.Sprintf("spec.volumes[%d]", i)
		if v.Secret == nil && v.Config == nil {
			continue
		}
		kind, src := KindSecret, v.Secret
		if src == nil {
			kind, src, f = KindConfig, v.Config, f+".config"
		} else {
			f += ".secret"
		}
		if src == nil {
			continue
		}
		refs = append(refs, ObjectRef{Field: f + ".name", Kind: kind, Name: src.Name})
		for j, it := range src.Items {
			refs = append(refs, ObjectRef{Field: fmt.Sprintf("%s.items[%d].key", f, j), Kind: kind, Name: src.Name, Key: it.Key})
		}
	}
	for _, sc := range AllContainers(spec) {
		f, c := sc.Field, *sc.Spec
		for j, e := range c.EnvFrom {
			switch {
			case e.SecretRef != nil:
				refs = append(refs, ObjectRef{Field: fmt.Sprintf("%s.envFrom[%d].secretRef.name", f, j), Kind: KindSecret, Name: e.SecretRef.Name})
			case e.ConfigMapRef != nil:
				refs = append(refs, ObjectRef{Field: fmt.Sprintf("%s.envFrom[%d].configMapRef.name", f, j), Kind: KindConfig, Name: e.ConfigMapRef.Name})
			}
		}
		for j, e := range c.Env {
			switch {
			case e.ValueFrom == nil:
			case e.ValueFrom.SecretKeyRef != nil:
				refs = append(refs, ObjectRef{Field: fmt.Sprintf("%s.env[%d].valueFrom.secretKeyRef", f, j), Kind: KindSecret,
					Name: e.ValueFrom.SecretKeyRef.Name, Key: e.ValueFrom.SecretKeyRef.Key})
			case e.ValueFrom.ConfigMapKeyRef != nil:
				refs = append(refs, ObjectRef{Field: fmt.Sprintf("%s.env[%d].valueFrom.configMapKeyRef", f, j), Kind: KindConfig,
					Name: e.ValueFrom.ConfigMapKeyRef.Name, Key: e.ValueFrom.ConfigMapKeyRef.Key})
			}
		}
	}
	return refs
}

// ValidateEnvName checks an environment variable's name.
func ValidateEnvName(name string) error {
	if !envName.MatchString(name) {
		return invalid("%q is not a valid variable name: use letters, digits and '_', not starting with a digit", truncate(name))
	}
	return nil
}
