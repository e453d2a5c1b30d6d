package virtualnode

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
	"github.com/kanga-run/kanga/internal/expansion"
)

// Pod volumes on Kanga.
//
//   - emptyDir is an emptyDir of the instance (medium Memory a tmpfs,
//     sizeLimit enforced by the kernel).
//   - persistentVolumeClaim is a Kanga persistent volume of the pod's
//     tenant: the one the claim's kanga.run/volume annotation names, or
//     the volumeHandle of the PersistentVolume (csi.driver kanga.run) the
//     claim is bound to. A claim that maps to none keeps the pod Pending
//     with a FailedMount event, as a kubelet waits for an unbound claim.
//   - configMap, secret, downwardAPI and projected volumes become a Kanga
//     config (a secret when any source is a Secret, so that it is
//     encrypted at rest) that the node makes for that pod volume alone
//     (volumeObject), keeps current with its sources and the pod's labels
//     and annotations (syncObjects) and deletes with the pod. Kanga's host
//     mounts its files and swaps them atomically on update, as the
//     kubelet does.
//   - The API server's token volume (kube-api-access-*) and the
//     serviceAccountToken source of a projected volume are left out: an
//     instance cannot reach the cluster's API.
//   - Anything else (hostPath, nfs, iscsi, ...) is refused, naming the
//     volume and its type.

// Names of the mapping of a PersistentVolumeClaim to a Kanga volume.
const (
	// AnnotationVolume on a PersistentVolumeClaim names the Kanga
	// persistent volume of the namespace's tenant that the claim stands
	// for.
	AnnotationVolume = "kanga.run/volume"
	// CSIDriver is the spec.csi.driver of a PersistentVolume that is a
	// Kanga volume; its volumeHandle names the volume.
	CSIDriver = "kanga.run"
)

// reasonFailedMount is the kubelet's reason for a volume it cannot mount
// yet (a missing ConfigMap, an unbound claim): the pod waits.
const reasonFailedMount = "FailedMount"

// volumeObject is the Kanga config or secret the node writes for one
// configMap, secret, downwardAPI or projected volume of a pod.
type volumeObject struct {
	name   string
	volume string // the pod's volume
	secret bool
	data   map[string][]byte
	// itemized: the instance names each file as an item (keys are the
	// files' encoded paths); else every key of data is a file, as a
	// ConfigMap or Secret volume without items makes them.
	itemized bool
}

// podVolumes is the mapping of a pod's volumes.
type podVolumes struct {
	volumes []api.Volume
	objects []volumeObject
	// dropped are the volumes left out (the service-account token's);
	// mounts of them are left out too.
	dropped map[string]bool
	// readOnly are the volumes every mount of which is read-only (a
	// claim's readOnly).
	readOnly map[string]bool
}

// shortHash is 8 hex digits of the SHA-256 of s.
func shortHash(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])[:8]
}

// objectPrefix starts the names of the objects node makes: a restarted
// node finds its leftovers by it, and leaves other nodes' alone.
func objectPrefix(node string) string { return "kvn-" + shortHash(node) + "." }

// volumeObjectName is the name of the object of volume of pod: a function
// of the node, the pod (its UID too, so that a pod re-created under the
// same name never shares the previous one's) and the volume. It is a
// valid object name: the instance name and the volume name are DNS labels.
func volumeObjectName(node string, pod *corev1.Pod, volume string) string {
	return objectPrefix(node) + InstanceName(pod.Namespace, pod.Name) + "." + volume + "." + shortHash(string(pod.UID)+"/"+volume)
}

// reasonVolumeDropped is the event of a pod volume left out on purpose.
const reasonVolumeDropped = "KangaVolumeNotMounted"

// objectVolume reports whether v is made of a Kanga object the node
// writes (in cluster mode), and whether that object is a secret.
func objectVolume(v corev1.Volume) (object, secret bool) {
	switch {
	case serviceAccountVolume(v):
		return false, false
	case v.Secret != nil:
		return true, true
	case v.ConfigMap != nil, v.DownwardAPI != nil:
		return true, false
	case v.Projected != nil:
		for _, s := range v.Projected.Sources {
			if s.Secret != nil {
				return true, true
			}
		}
		return true, false
	}
	return false, false
}

// volumeType names the source of v as the pod spec does (hostPath, nfs,
// ...), for refusals.
func volumeType(v corev1.Volume) string {
	rv := reflect.ValueOf(v.VolumeSource)
	for i := range rv.NumField() {
		if f := rv.Field(i); f.Kind() == reflect.Pointer && !f.IsNil() {
			name, _, _ := strings.Cut(rv.Type().Field(i).Tag.Get("json"), ",")
			return name
		}
	}
	return "no source"
}

// supportedVolume reports whether Kanga can give a pod volume v.
func supportedVolume(v corev1.Volume) bool {
	return v.EmptyDir != nil || v.ConfigMap != nil || v.Secret != nil || v.DownwardAPI != nil ||
		v.Projected != nil || v.PersistentVolumeClaim != nil
}

// podVolumes maps pod's volumes (checked by checkSupported). In cluster
// mode it reads their sources and returns the objects to write first.
func (s *envSources) podVolumes(pod *corev1.Pod, node string) (podVolumes, error) {
	out := podVolumes{dropped: map[string]bool{}, readOnly: map[string]bool{}}
	for i, v := range pod.Spec.Volumes {
		field := fmt.Sprintf("spec.volumes[%d] %s", i, v.Name)
		av := api.Volume{Name: v.Name}
		switch {
		case serviceAccountVolume(v):
			out.dropped[v.Name] = true
			// Said, not silent: a pod that does call the API finds out why.
			if s.recorder != nil {
				s.recorder.Eventf(pod, corev1.EventTypeNormal, reasonVolumeDropped,
					"volume %s (the service account token) is not mounted: Kanga instances cannot reach the cluster's API server", v.Name)
			}
			continue
		case v.EmptyDir != nil:
			ed := &api.EmptyDirVolumeSource{}
			switch v.EmptyDir.Medium {
			case corev1.StorageMediumDefault:
			case corev1.StorageMediumMemory:
				ed.Medium = api.MediumMemory
			default:
				return out, fmt.Errorf("%s: emptyDir medium %s is not supported: use the default or Memory: %w", field, v.EmptyDir.Medium, errdefs.ErrInvalidArgument)
			}
			if q := v.EmptyDir.SizeLimit; q != nil && !q.IsZero() {
				ed.SizeLimit = q.String()
			}
			av.EmptyDir = ed
		case v.PersistentVolumeClaim != nil:
			name := v.PersistentVolumeClaim.ClaimName
			if !s.kangaObjects {
				var err error
				if name, err = s.claimVolume(pod, v.PersistentVolumeClaim.ClaimName, field); err != nil {
					return out, err
				}
			}
			av.PersistentVolume = &api.PersistentVolumeSource{Name: name}
			out.readOnly[v.Name] = v.PersistentVolumeClaim.ReadOnly
		case s.kangaObjects:
			// A manifest run without a cluster: the references name the
			// tenant's own configs and secrets.
			switch {
			case v.ConfigMap != nil:
				av.Config = kangaObjectSource(v.ConfigMap.Name, v.ConfigMap.Items, v.ConfigMap.DefaultMode)
			case v.Secret != nil:
				av.Secret = kangaObjectSource(v.Secret.SecretName, v.Secret.Items, v.Secret.DefaultMode)
			default:
				return out, fmt.Errorf("%s: %s volumes need a cluster (the virtual node); outside one use configMap or secret volumes: %w", field, volumeType(v), errdefs.ErrInvalidArgument)
			}
		default:
			obj, src, err := s.objectVolume(pod, v, node, field)
			if err != nil {
				return out, err
			}
			if obj.secret {
				av.Secret = src
			} else {
				av.Config = src
			}
			out.objects = append(out.objects, obj)
		}
		out.volumes = append(out.volumes, av)
	}
	return out, nil
}

func kangaObjectSource(name string, items []corev1.KeyToPath, mode *int32) *api.ObjectVolumeSource {
	src := &api.ObjectVolumeSource{Name: name, DefaultMode: mode}
	for _, it := range items {
		src.Items = append(src.Items, api.KeyToPath{Key: it.Key, Path: it.Path, Mode: it.Mode})
	}
	return src
}

// objectVolume is the object of a configMap, secret, downwardAPI or
// projected volume v and the volume source that mounts it. A configMap or
// secret volume without items mirrors its source key for key, so that
// keys added later appear as files; the others list their files as items
// (computed as the kubelet lays them out), whose set is fixed when the
// pod starts.
func (s *envSources) objectVolume(pod *corev1.Pod, v corev1.Volume, node, field string) (volumeObject, *api.ObjectVolumeSource, error) {
	_, secret := objectVolume(v)
	obj := volumeObject{name: volumeObjectName(node, pod, v.Name), volume: v.Name, secret: secret}
	src := &api.ObjectVolumeSource{Name: obj.name}
	if cm := v.ConfigMap; cm != nil && len(cm.Items) == 0 {
		data, err := s.configMapData(pod, cm.Name, cm.Optional, field)
		if err != nil {
			return obj, nil, err
		}
		obj.data, src.DefaultMode = data, cm.DefaultMode
		return obj, src, nil
	}
	if sv := v.Secret; sv != nil && len(sv.Items) == 0 {
		data, err := s.secretData(pod, sv.SecretName, sv.Optional, field)
		if err != nil {
			return obj, nil, err
		}
		obj.data, src.DefaultMode = data, sv.DefaultMode
		return obj, src, nil
	}
	files, err := s.volumeFiles(pod, v, field)
	if err != nil {
		return obj, nil, err
	}
	obj.itemized = true
	obj.data = map[string][]byte{}
	for _, f := range files {
		k := fileKey(f.path)
		obj.data[k] = f.data
		mode := f.mode
		src.Items = append(src.Items, api.KeyToPath{Key: k, Path: f.path, Mode: &mode})
	}
	return obj, src, nil
}

// fileKey is the object key of the file at path p of an itemized volume:
// readable, a valid key, and distinct for distinct paths.
func fileKey(p string) string {
	k := strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == '.':
			return r
		}
		return '_'
	}, p)
	if len(k) > 200 {
		k = k[:200]
	}
	return strings.TrimLeft(k, ".") + "." + shortHash(p)
}

// volumeFile is one file of a volume as the kubelet projects it.
type volumeFile struct {
	path string
	mode int32
	data []byte
}

// defaultFileMode is a volume's files' mode when it names none.
const defaultFileMode = 0o644

// volumeFiles are the files of a configMap or secret volume with items, a
// downwardAPI volume or a projected volume, as the kubelet writes them:
// a later source's file wins over an earlier one's at the same path.
func (s *envSources) volumeFiles(pod *corev1.Pod, v corev1.Volume, field string) ([]volumeFile, error) {
	byPath := map[string]volumeFile{}
	add := func(fs []volumeFile) {
		for _, f := range fs {
			byPath[f.path] = f
		}
	}
	modeOr := func(m *int32, def int32) int32 {
		if m != nil {
			return *m
		}
		return def
	}
	switch {
	case v.ConfigMap != nil:
		fs, err := s.configMapFiles(pod, &corev1.ConfigMapProjection{LocalObjectReference: v.ConfigMap.LocalObjectReference, Items: v.ConfigMap.Items, Optional: v.ConfigMap.Optional},
			modeOr(v.ConfigMap.DefaultMode, defaultFileMode), field)
		if err != nil {
			return nil, err
		}
		add(fs)
	case v.Secret != nil:
		fs, err := s.secretFiles(pod, &corev1.SecretProjection{LocalObjectReference: corev1.LocalObjectReference{Name: v.Secret.SecretName}, Items: v.Secret.Items, Optional: v.Secret.Optional},
			modeOr(v.Secret.DefaultMode, defaultFileMode), field)
		if err != nil {
			return nil, err
		}
		add(fs)
	case v.DownwardAPI != nil:
		fs, err := s.downwardFiles(pod, v.DownwardAPI.Items, modeOr(v.DownwardAPI.DefaultMode, defaultFileMode), field)
		if err != nil {
			return nil, err
		}
		add(fs)
	case v.Projected != nil:
		mode := modeOr(v.Projected.DefaultMode, defaultFileMode)
		for j, src := range v.Projected.Sources {
			sf := fmt.Sprintf("%s.sources[%d]", field, j)
			var fs []volumeFile
			var err error
			switch {
			case src.ConfigMap != nil:
				fs, err = s.configMapFiles(pod, src.ConfigMap, mode, sf)
			case src.Secret != nil:
				fs, err = s.secretFiles(pod, src.Secret, mode, sf)
			case src.DownwardAPI != nil:
				fs, err = s.downwardFiles(pod, src.DownwardAPI.Items, mode, sf)
			case src.ServiceAccountToken != nil:
				// An instance cannot reach the cluster's API: no token.
				continue
			default:
				return nil, fmt.Errorf("%s: this projected source is not supported (configMap, secret and downwardAPI are): %w", sf, errdefs.ErrInvalidArgument)
			}
			if err != nil {
				return nil, err
			}
			add(fs)
		}
	}
	out := slices.Collect(maps.Values(byPath))
	slices.SortFunc(out, func(a, b volumeFile) int { return cmp.Compare(a.path, b.path) })
	return out, nil
}

// keyFiles are the files of an object's data: every key at its own path,
// or the items, as the kubelet projects a ConfigMap or Secret. A key an
// item names that data lacks is an error, unless optional (the item is
// then left out).
func (s *envSources) keyFiles(pod *corev1.Pod, data map[string][]byte, items []corev1.KeyToPath, optional *bool, mode int32, field, kind, name string) ([]volumeFile, error) {
	var out []volumeFile
	if len(items) == 0 {
		for _, k := range slices.Sorted(maps.Keys(data)) {
			out = append(out, volumeFile{path: k, mode: mode, data: data[k]})
		}
		return out, nil
	}
	for _, it := range items {
		v, ok := data[it.Key]
		if !ok {
			if optional != nil && *optional {
				continue
			}
			s.warn(pod, reasonFailedMount, "%s: %s %q has no key %q", field, kind, name, it.Key)
			return nil, fmt.Errorf("%s: %s %q has no key %q: %w", field, kind, name, it.Key, errEnvSource)
		}
		m := mode
		if it.Mode != nil {
			m = *it.Mode
		}
		out = append(out, volumeFile{path: it.Path, mode: m, data: v})
	}
	return out, nil
}

func (s *envSources) configMapFiles(pod *corev1.Pod, p *corev1.ConfigMapProjection, mode int32, field string) ([]volumeFile, error) {
	data, err := s.configMapData(pod, p.Name, p.Optional, field)
	if err != nil || data == nil {
		return nil, err
	}
	return s.keyFiles(pod, data, p.Items, p.Optional, mode, field, kindConfigMap, p.Name)
}

func (s *envSources) secretFiles(pod *corev1.Pod, p *corev1.SecretProjection, mode int32, field string) ([]volumeFile, error) {
	data, err := s.secretData(pod, p.Name, p.Optional, field)
	if err != nil || data == nil {
		return nil, err
	}
	return s.keyFiles(pod, data, p.Items, p.Optional, mode, field, kindSecret, p.Name)
}

// downwardFiles are the files of downward-API items: fields of the pod's
// metadata (labels and annotations as sorted key="value" lines) and
// containers' resources, as the kubelet writes them.
func (s *envSources) downwardFiles(pod *corev1.Pod, items []corev1.DownwardAPIVolumeFile, mode int32, field string) ([]volumeFile, error) {
	var out []volumeFile
	for j, it := range items {
		f := fmt.Sprintf("%s.items[%d] %s", field, j, it.Path)
		var v string
		var err error
		switch {
		case it.FieldRef != nil:
			switch p := it.FieldRef.FieldPath; {
			case strings.HasPrefix(p, "metadata."):
				v, err = s.fieldValue(pod, p)
			default:
				err = fmt.Errorf("fieldRef %q: a volume takes metadata fields only: %w", p, errdefs.ErrInvalidArgument)
			}
		case it.ResourceFieldRef != nil:
			if it.ResourceFieldRef.ContainerName == "" {
				err = fmt.Errorf("resourceFieldRef: a volume's needs containerName: %w", errdefs.ErrInvalidArgument)
			} else {
				v, err = s.resourceValue(pod, nil, it.ResourceFieldRef)
			}
		default:
			err = fmt.Errorf("no fieldRef or resourceFieldRef: %w", errdefs.ErrInvalidArgument)
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		m := mode
		if it.Mode != nil {
			m = *it.Mode
		}
		out = append(out, volumeFile{path: it.Path, mode: m, data: []byte(v)})
	}
	return out, nil
}

// configMapData is a ConfigMap's data and binaryData; nil (no files) for
// a missing optional one; a missing required one is a FailedMount the pod
// controller retries, as the kubelet retries the mount.
func (s *envSources) configMapData(pod *corev1.Pod, name string, optional *bool, field string) (map[string][]byte, error) {
	if s.configMaps == nil {
		return nil, fmt.Errorf("%s: this node cannot read ConfigMaps: %w", field, errdefs.ErrInvalidArgument)
	}
	cm, err := s.configMaps.ConfigMaps(pod.Namespace).Get(name)
	if err != nil {
		return nil, s.missingVolumeSource(pod, err, field, kindConfigMap, name, optional)
	}
	data := make(map[string][]byte, len(cm.Data)+len(cm.BinaryData))
	for k, v := range cm.Data {
		data[k] = []byte(v)
	}
	maps.Copy(data, cm.BinaryData)
	return data, nil
}

// secretData is a Secret's data, as configMapData.
func (s *envSources) secretData(pod *corev1.Pod, name string, optional *bool, field string) (map[string][]byte, error) {
	if s.secrets == nil {
		return nil, fmt.Errorf("%s: this node cannot read Secrets: %w", field, errdefs.ErrInvalidArgument)
	}
	sec, err := s.secrets.Secrets(pod.Namespace).Get(name)
	if err != nil {
		return nil, s.missingVolumeSource(pod, err, field, kindSecret, name, optional)
	}
	return maps.Clone(sec.Data), nil
}

func (s *envSources) missingVolumeSource(pod *corev1.Pod, err error, field, kind, name string, optional *bool) error {
	if !apierrors.IsNotFound(err) {
		return fmt.Errorf("%s: %s %q: %w", field, kind, name, err)
	}
	if optional != nil && *optional {
		return nil
	}
	s.warn(pod, reasonFailedMount, "%s: %s %q not found", field, kind, name)
	return fmt.Errorf("%s: %s %q not found: %w", field, kind, name, errEnvSource)
}

// claimVolume is the Kanga volume a PersistentVolumeClaim stands for (see
// AnnotationVolume and CSIDriver). A claim that is missing or maps to no
// Kanga volume is a FailedMount the pod controller retries: the pod stays
// Pending until it does.
func (s *envSources) claimVolume(pod *corev1.Pod, claim, field string) (string, error) {
	if s.claims == nil {
		return "", fmt.Errorf("%s: this node cannot read PersistentVolumeClaims: %w", field, errdefs.ErrInvalidArgument)
	}
	pending := func(format string, args ...any) error {
		msg := fmt.Sprintf(format, args...)
		s.warn(pod, reasonFailedMount, "%s: %s", field, msg)
		return fmt.Errorf("%s: %s: %w", field, msg, errEnvSource)
	}
	pvc, err := s.claims.PersistentVolumeClaims(pod.Namespace).Get(claim)
	if apierrors.IsNotFound(err) {
		return "", pending("persistentvolumeclaim %q not found", claim)
	}
	if err != nil {
		return "", fmt.Errorf("%s: persistentvolumeclaim %q: %w", field, claim, err)
	}
	if name := pvc.Annotations[AnnotationVolume]; name != "" {
		return name, nil
	}
	how := fmt.Sprintf("annotate it %s=<Kanga volume> or bind it to a PersistentVolume with csi.driver %s and the volume's name as volumeHandle", AnnotationVolume, CSIDriver)
	if pvc.Spec.VolumeName == "" {
		return "", pending("persistentvolumeclaim %q is not bound to a Kanga volume: %s", claim, how)
	}
	if s.volumes == nil {
		return "", pending("persistentvolumeclaim %q has no %s annotation and this node cannot read PersistentVolumes: %s", claim, AnnotationVolume, how)
	}
	pv, err := s.volumes.Get(pvc.Spec.VolumeName)
	if apierrors.IsNotFound(err) {
		return "", pending("persistentvolume %q of claim %q not found", pvc.Spec.VolumeName, claim)
	}
	if err != nil {
		return "", fmt.Errorf("%s: persistentvolume %q: %w", field, pvc.Spec.VolumeName, err)
	}
	if ref := pv.Spec.ClaimRef; ref == nil || ref.Namespace != pod.Namespace || ref.Name != claim || (ref.UID != "" && ref.UID != pvc.UID) {
		return "", pending("persistentvolume %q is not bound to claim %q", pv.Name, claim)
	}
	if pv.Spec.CSI == nil || pv.Spec.CSI.Driver != CSIDriver || pv.Spec.CSI.VolumeHandle == "" {
		return "", pending("persistentvolume %q of claim %q is not a Kanga volume: %s", pv.Name, claim, how)
	}
	return pv.Spec.CSI.VolumeHandle, nil
}

// volumeMounts maps container c's volumeMounts, without those of dropped
// volumes. subPathExpr is expanded with the container's env, as the
// kubelet expands it.
func volumeMounts(c *corev1.Container, env []api.EnvVar, vols *podVolumes) ([]api.VolumeMount, error) {
	vals := map[string]string{}
	for _, e := range env {
		if e.ValueFrom == nil {
			vals[e.Name] = e.Value
		}
	}
	var out []api.VolumeMount
	for i, m := range c.VolumeMounts {
		if vols.dropped[m.Name] {
			continue
		}
		vm := api.VolumeMount{Name: m.Name, MountPath: m.MountPath, ReadOnly: m.ReadOnly || vols.readOnly[m.Name], SubPath: m.SubPath}
		if m.SubPathExpr != "" {
			if m.SubPath != "" {
				return nil, fmt.Errorf("volumeMounts[%d]: subPath and subPathExpr are exclusive: %w", i, errdefs.ErrInvalidArgument)
			}
			// Empty after expansion is the volume's root, as for the
			// kubelet; Kanga's API checks the rest.
			vm.SubPath = expansion.Expand(m.SubPathExpr, func(name string) (string, bool) { v, ok := vals[name]; return v, ok })
		}
		out = append(out, vm)
	}
	return out, nil
}
