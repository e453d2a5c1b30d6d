package virtualnode

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	corev1listers "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/record"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
	"github.com/kanga-run/kanga/internal/model"
)

func volumeSources(t *testing.T) *envSources {
	s := testSources(t)
	meta := func(ns, name string) metav1.ObjectMeta { return metav1.ObjectMeta{Namespace: ns, Name: name} }
	s.configMaps = corev1listers.NewConfigMapLister(indexer(t,
		&corev1.ConfigMap{ObjectMeta: meta("app", "web"), Data: map[string]string{"nginx.conf": "worker 1;", "mime.types": "text/html html;"},
			BinaryData: map[string][]byte{"logo.png": {0x89, 'P', 'N', 'G'}}},
	))
	s.secrets = corev1listers.NewSecretLister(indexer(t,
		&corev1.Secret{ObjectMeta: meta("app", "tls"), Data: map[string][]byte{"tls.crt": []byte("CERT"), "tls.key": []byte("KEY")}},
	))
	claim := func(name, volume string, ann map[string]string) *corev1.PersistentVolumeClaim {
		return &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: name, UID: types.UID("claim-" + name), Annotations: ann},
			Spec: corev1.PersistentVolumeClaimSpec{VolumeName: volume}}
	}
	s.claims = corev1listers.NewPersistentVolumeClaimLister(indexer(t,
		claim("annotated", "", map[string]string{AnnotationVolume: "db-data"}),
		claim("bound", "pv-kanga", nil),
		claim("foreign", "pv-nfs", nil),
		claim("unbound", "", nil),
	))
	pv := func(name, claim, driver, handle string) *corev1.PersistentVolume {
		p := &corev1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.PersistentVolumeSpec{
			ClaimRef: &corev1.ObjectReference{Namespace: "app", Name: claim}}}
		if driver != "" {
			p.Spec.CSI = &corev1.CSIPersistentVolumeSource{Driver: driver, VolumeHandle: handle}
		} else {
			p.Spec.NFS = &corev1.NFSVolumeSource{Server: "nas", Path: "/"}
		}
		return p
	}
	s.volumes = corev1listers.NewPersistentVolumeLister(indexer(t,
		pv("pv-kanga", "bound", CSIDriver, "logs"),
		pv("pv-nfs", "foreign", "", ""),
	))
	return s
}

func volumePod(vols ...corev1.Volume) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "web-1", UID: "uid-1",
			Labels: map[string]string{"tier": "front", "app": "web"}, Annotations: map[string]string{"build": "42"}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "main", Image: "busybox",
			Resources: corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("128Mi"), corev1.ResourceCPU: resource.MustParse("500m")}}}},
			Volumes: vols},
	}
}

func i32(v int32) *int32 { return &v }

// files lays out an object volume as Kanga's host would: the source of v
// applied to the object's data.
func files(t *testing.T, v api.Volume, obj volumeObject) map[string]string {
	t.Helper()
	src := v.Config
	if src == nil {
		src = v.Secret
	}
	fs, err := model.ProjectVolume(src, obj.data)
	if err != nil {
		t.Fatalf("ProjectVolume: %v", err)
	}
	out := map[string]string{}
	for _, f := range fs {
		out[f.Path] = fmt.Sprintf("%s|%o", f.Data, f.Mode)
	}
	return out
}

func TestPodVolumes(t *testing.T) {
	yes := true
	cm := func(name string, items ...corev1.KeyToPath) *corev1.ConfigMapVolumeSource {
		return &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: name}, Items: items}
	}
	tests := []struct {
		name   string
		vol    corev1.Volume
		want   api.Volume        // the volume, with the object's name left out
		secret bool              // the object is a secret
		files  map[string]string // path -> content|mode, as the host lays them out
		err    error
		event  string
	}{
		{
			name: "emptyDir in memory",
			vol:  corev1.Volume{Name: "scratch", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{Medium: corev1.StorageMediumMemory, SizeLimit: resource.NewQuantity(64<<20, resource.BinarySI)}}},
			want: api.Volume{Name: "scratch", EmptyDir: &api.EmptyDirVolumeSource{Medium: api.MediumMemory, SizeLimit: "64Mi"}},
		},
		{
			name: "emptyDir on disk",
			vol:  corev1.Volume{Name: "scratch", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
			want: api.Volume{Name: "scratch", EmptyDir: &api.EmptyDirVolumeSource{}},
		},
		{
			name:  "configMap, every key",
			vol:   corev1.Volume{Name: "conf", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "web"}, DefaultMode: i32(0o600)}}},
			want:  api.Volume{Name: "conf", Config: &api.ObjectVolumeSource{DefaultMode: i32(0o600)}},
			files: map[string]string{"nginx.conf": "worker 1;|600", "mime.types": "text/html html;|600", "logo.png": "\x89PNG|600"},
		},
		{
			name:  "configMap items in subdirectories",
			vol:   corev1.Volume{Name: "conf", VolumeSource: corev1.VolumeSource{ConfigMap: cm("web", corev1.KeyToPath{Key: "nginx.conf", Path: "nginx/nginx.conf", Mode: i32(0o400)}, corev1.KeyToPath{Key: "mime.types", Path: "mime"})}},
			want:  api.Volume{Name: "conf", Config: &api.ObjectVolumeSource{}},
			files: map[string]string{"nginx/nginx.conf": "worker 1;|400", "mime": "text/html html;|644"},
		},
		{
			name:   "secret, every key",
			vol:    corev1.Volume{Name: "certs", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "tls", DefaultMode: i32(0o400)}}},
			want:   api.Volume{Name: "certs", Secret: &api.ObjectVolumeSource{DefaultMode: i32(0o400)}},
			secret: true,
			files:  map[string]string{"tls.crt": "CERT|400", "tls.key": "KEY|400"},
		},
		{
			name:  "missing optional configMap: an empty directory",
			vol:   corev1.Volume{Name: "conf", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "nope"}, Optional: &yes}}},
			want:  api.Volume{Name: "conf", Config: &api.ObjectVolumeSource{}},
			files: map[string]string{},
		},
		{
			name:  "missing required configMap: the pod waits",
			vol:   corev1.Volume{Name: "conf", VolumeSource: corev1.VolumeSource{ConfigMap: cm("nope")}},
			err:   errEnvSource,
			event: `Warning FailedMount spec.volumes[0] conf: configmap "nope" not found`,
		},
		{
			name:  "missing key of a required configMap: the pod waits",
			vol:   corev1.Volume{Name: "conf", VolumeSource: corev1.VolumeSource{ConfigMap: cm("web", corev1.KeyToPath{Key: "gone", Path: "g"})}},
			err:   errEnvSource,
			event: `Warning FailedMount spec.volumes[0] conf: configmap "web" has no key "gone"`,
		},
		{
			name:   "missing optional secret with items: an empty directory",
			vol:    corev1.Volume{Name: "certs", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "nope", Optional: &yes, Items: []corev1.KeyToPath{{Key: "a", Path: "a"}}}}},
			want:   api.Volume{Name: "certs", Secret: &api.ObjectVolumeSource{}},
			secret: true,
			files:  map[string]string{},
		},
		{
			name: "downwardAPI",
			vol: corev1.Volume{Name: "info", VolumeSource: corev1.VolumeSource{DownwardAPI: &corev1.DownwardAPIVolumeSource{DefaultMode: i32(0o444), Items: []corev1.DownwardAPIVolumeFile{
				{Path: "labels", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.labels"}},
				{Path: "annotations", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.annotations"}},
				{Path: "meta/name", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}, Mode: i32(0o400)},
				{Path: "meta/ns", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.namespace"}},
				{Path: "meta/uid", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.uid"}},
				{Path: "tier", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.labels['tier']"}},
				{Path: "mem", ResourceFieldRef: &corev1.ResourceFieldSelector{ContainerName: "main", Resource: "limits.memory", Divisor: resource.MustParse("1Mi")}},
				{Path: "cpu", ResourceFieldRef: &corev1.ResourceFieldSelector{ContainerName: "main", Resource: "limits.cpu", Divisor: resource.MustParse("1m")}},
			}}}},
			want: api.Volume{Name: "info", Config: &api.ObjectVolumeSource{}},
			files: map[string]string{
				"labels": "app=\"web\"\ntier=\"front\"|444", "annotations": "build=\"42\"|444",
				"meta/name": "web-1|400", "meta/ns": "app|444", "meta/uid": "uid-1|444", "tier": "front|444",
				"mem": "128|444", "cpu": "500|444",
			},
		},
		{
			name: "projected: configMap, secret, downwardAPI; the token left out",
			vol: corev1.Volume{Name: "all", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{DefaultMode: i32(0o440), Sources: []corev1.VolumeProjection{
				{ConfigMap: &corev1.ConfigMapProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "web"}, Items: []corev1.KeyToPath{{Key: "nginx.conf", Path: "conf/nginx.conf"}}}},
				{Secret: &corev1.SecretProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "tls"}, Items: []corev1.KeyToPath{{Key: "tls.key", Path: "conf/tls.key", Mode: i32(0o400)}}}},
				{DownwardAPI: &corev1.DownwardAPIProjection{Items: []corev1.DownwardAPIVolumeFile{{Path: "name", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}}}},
				{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "token"}},
				{Secret: &corev1.SecretProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "absent"}, Optional: &yes}},
			}}}},
			want:   api.Volume{Name: "all", Secret: &api.ObjectVolumeSource{}},
			secret: true,
			files:  map[string]string{"conf/nginx.conf": "worker 1;|440", "conf/tls.key": "KEY|400", "name": "web-1|440"},
		},
		{
			name: "claim by annotation",
			vol:  corev1.Volume{Name: "data", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "annotated"}}},
			want: api.Volume{Name: "data", PersistentVolume: &api.PersistentVolumeSource{Name: "db-data"}},
		},
		{
			name: "claim bound to a Kanga PersistentVolume",
			vol:  corev1.Volume{Name: "data", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "bound"}}},
			want: api.Volume{Name: "data", PersistentVolume: &api.PersistentVolumeSource{Name: "logs"}},
		},
		{
			name:  "unbound claim: the pod waits",
			vol:   corev1.Volume{Name: "data", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "unbound"}}},
			err:   errEnvSource,
			event: `Warning FailedMount spec.volumes[0] data: persistentvolumeclaim "unbound" is not bound to a Kanga volume`,
		},
		{
			name:  "claim bound to another kind of volume: the pod waits",
			vol:   corev1.Volume{Name: "data", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "foreign"}}},
			err:   errEnvSource,
			event: `Warning FailedMount spec.volumes[0] data: persistentvolume "pv-nfs" of claim "foreign" is not a Kanga volume`,
		},
		{
			name:  "missing claim: the pod waits",
			vol:   corev1.Volume{Name: "data", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "nope"}}},
			err:   errEnvSource,
			event: `Warning FailedMount spec.volumes[0] data: persistentvolumeclaim "nope" not found`,
		},
		{
			name: "downwardAPI of a status field",
			vol: corev1.Volume{Name: "info", VolumeSource: corev1.VolumeSource{DownwardAPI: &corev1.DownwardAPIVolumeSource{Items: []corev1.DownwardAPIVolumeFile{
				{Path: "ip", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.podIP"}}}}}},
			err: errdefs.ErrInvalidArgument,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := volumeSources(t)
			rec := record.NewFakeRecorder(10)
			s.recorder = rec
			pod := volumePod(tt.vol)
			vols, err := s.podVolumes(pod, "vn")
			if tt.err != nil {
				if !errors.Is(err, tt.err) {
					t.Fatalf("err = %v, want %v", err, tt.err)
				}
				if tt.event != "" {
					select {
					case e := <-rec.Events:
						if !strings.HasPrefix(e, tt.event) {
							t.Errorf("event %q, want %q...", e, tt.event)
						}
					default:
						t.Errorf("no event, want %q", tt.event)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(vols.volumes) != 1 {
				t.Fatalf("volumes %+v", vols.volumes)
			}
			got := vols.volumes[0]
			if tt.files == nil {
				if len(vols.objects) != 0 || !reflect.DeepEqual(got, tt.want) {
					t.Fatalf("volume %+v, objects %d; want %+v and no object", got, len(vols.objects), tt.want)
				}
				return
			}
			if len(vols.objects) != 1 {
				t.Fatalf("objects %+v", vols.objects)
			}
			obj := vols.objects[0]
			if obj.secret != tt.secret || obj.name != volumeObjectName("vn", pod, tt.vol.Name) {
				t.Errorf("object %s secret=%v, want %s secret=%v", obj.name, obj.secret, volumeObjectName("vn", pod, tt.vol.Name), tt.secret)
			}
			if err := model.ValidateObjectName("name", obj.name); err != nil {
				t.Error(err)
			}
			if err := model.ValidateObjectData("data", obj.data); err != nil {
				t.Error(err)
			}
			src := got.Config
			if tt.secret {
				src = got.Secret
			}
			if src == nil || src.Name != obj.name {
				t.Fatalf("volume %+v does not name object %s", got, obj.name)
			}
			if w := tt.want.Config; w != nil && !reflect.DeepEqual(src.DefaultMode, w.DefaultMode) {
				t.Errorf("defaultMode %v, want %v", src.DefaultMode, w.DefaultMode)
			}
			if w := tt.want.Secret; w != nil && !reflect.DeepEqual(src.DefaultMode, w.DefaultMode) {
				t.Errorf("defaultMode %v, want %v", src.DefaultMode, w.DefaultMode)
			}
			// What Kanga's API accepts.
			spec := api.InstanceSpec{Containers: []api.ContainerSpec{{Name: "main", Image: "busybox"}}, Volumes: vols.volumes}
			model.Defaults(&spec, model.DefaultRuntimeClass)
			if err := model.Validate(&spec); err != nil {
				t.Errorf("Kanga refuses the volume: %v", err)
			}
			if f := files(t, got, obj); !reflect.DeepEqual(f, tt.files) {
				t.Errorf("files\n%q\nwant\n%q", f, tt.files)
			}
		})
	}
}

// A manifest run without a cluster (kanga run -f): configMap and secret
// volumes name the tenant's own objects; claims its volumes.
func TestFromPodVolumes(t *testing.T) {
	pod := volumePod(
		corev1.Volume{Name: "conf", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "web"},
			Items: []corev1.KeyToPath{{Key: "a", Path: "x/a", Mode: i32(0o400)}}, DefaultMode: i32(0o640)}}},
		corev1.Volume{Name: "certs", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "tls"}}},
		corev1.Volume{Name: "data", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "db", ReadOnly: true}}},
		corev1.Volume{Name: "tmp", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
		corev1.Volume{Name: "kube-api-access-x1", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{}}},
	)
	pod.Spec.Containers[0].Env = []corev1.EnvVar{{Name: "SHARD", Value: "s1"}}
	pod.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{
		{Name: "conf", MountPath: "/etc/web"}, {Name: "certs", MountPath: "/certs", ReadOnly: true},
		{Name: "data", MountPath: "/data"}, {Name: "tmp", MountPath: "/tmp/shard", SubPathExpr: "shards/$(SHARD)"},
		{Name: "kube-api-access-x1", MountPath: "/var/run/secrets/kubernetes.io/serviceaccount"},
	}
	req, err := FromPod(pod)
	if err != nil {
		t.Fatal(err)
	}
	wantVols := []api.Volume{
		{Name: "conf", Config: &api.ObjectVolumeSource{Name: "web", DefaultMode: i32(0o640), Items: []api.KeyToPath{{Key: "a", Path: "x/a", Mode: i32(0o400)}}}},
		{Name: "certs", Secret: &api.ObjectVolumeSource{Name: "tls"}},
		{Name: "data", PersistentVolume: &api.PersistentVolumeSource{Name: "db"}},
		{Name: "tmp", EmptyDir: &api.EmptyDirVolumeSource{}},
	}
	if !reflect.DeepEqual(req.Spec.Volumes, wantVols) {
		t.Errorf("volumes %+v, want %+v", req.Spec.Volumes, wantVols)
	}
	wantMounts := []api.VolumeMount{
		{Name: "conf", MountPath: "/etc/web"}, {Name: "certs", MountPath: "/certs", ReadOnly: true},
		{Name: "data", MountPath: "/data", ReadOnly: true}, {Name: "tmp", MountPath: "/tmp/shard", SubPath: "shards/s1"},
	}
	if got := req.Spec.Containers[0].VolumeMounts; !reflect.DeepEqual(got, wantMounts) {
		t.Errorf("mounts %+v, want %+v", got, wantMounts)
	}
	// Without a cluster there is nothing to make a downward-API file of.
	pod.Spec.Volumes = append(pod.Spec.Volumes, corev1.Volume{Name: "info", VolumeSource: corev1.VolumeSource{DownwardAPI: &corev1.DownwardAPIVolumeSource{}}})
	if _, err := FromPod(pod); !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), "downwardAPI volumes need a cluster") {
		t.Errorf("downwardAPI outside a cluster: %v", err)
	}
}

// Object names fit Kanga's rules whatever the pod's and volume's lengths,
// differ across nodes, pods (and their UIDs) and volumes, and start with
// the node's prefix; file keys are valid keys and distinct per path.
func TestVolumeObjectNames(t *testing.T) {
	long := strings.Repeat("n", 63)
	pod := func(ns, name, uid string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID(uid)}}
	}
	seen := map[string]bool{}
	for _, c := range []struct {
		node string
		pod  *corev1.Pod
		vol  string
	}{
		{"vn", pod("app", "web", "1"), "conf"},
		{"vn", pod("app", "web", "2"), "conf"},
		{"vn", pod("app", "web", "1"), "certs"},
		{"vn2", pod("app", "web", "1"), "conf"},
		{"vn", pod(long, long+long+long, "1"), long},
	} {
		n := volumeObjectName(c.node, c.pod, c.vol)
		if err := model.ValidateObjectName("name", n); err != nil {
			t.Errorf("%s: %v", n, err)
		}
		if !strings.HasPrefix(n, objectPrefix(c.node)) || seen[n] {
			t.Errorf("%s: wrong prefix or duplicate", n)
		}
		seen[n] = true
	}
	keys := map[string]bool{}
	for _, p := range []string{"a/b", "a_b", ".hidden", "dir/..x", strings.Repeat("d/", 200) + "f"} {
		k := fileKey(p)
		if err := model.ValidateObjectKey("key", k); err != nil || keys[k] {
			t.Errorf("fileKey(%q) = %q: %v (duplicate %v)", p, k, err, keys[k])
		}
		keys[k] = true
	}
}

// TestServiceAccountVolumeSaid: the service account token volume is left
// out with an event saying so, not silently.
func TestServiceAccountVolumeSaid(t *testing.T) {
	s := volumeSources(t)
	rec := record.NewFakeRecorder(10)
	s.recorder = rec
	pod := volumePod(corev1.Volume{Name: "kube-api-access-x7k2p", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{}}})
	vols, err := s.podVolumes(pod, "vn")
	if err != nil {
		t.Fatal(err)
	}
	if len(vols.volumes) != 0 || !vols.dropped["kube-api-access-x7k2p"] {
		t.Fatalf("volumes %+v, dropped %v; want it dropped", vols.volumes, vols.dropped)
	}
	select {
	case e := <-rec.Events:
		if want := "Normal KangaVolumeNotMounted volume kube-api-access-x7k2p"; !strings.HasPrefix(e, want) {
			t.Errorf("event %q, want %q...", e, want)
		}
	default:
		t.Error("no event for the dropped volume")
	}
}
