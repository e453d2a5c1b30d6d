package integration

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kanga-run/kanga/internal/virtualnode"
)

// TestVirtualNodeVolumes runs a pod with configMap, secret, downwardAPI,
// projected, emptyDir and persistentVolumeClaim volumes on the virtual
// node and reads them from inside its instance: contents and modes as
// the kubelet lays them out, a ConfigMap update and a label change
// reaching the files, subPath mounts that stay inside their volume
// although an init container planted symlinks to /etc in it, a claim
// mapped to a Kanga volume written earlier (by annotation, and through a
// static PersistentVolume). The secret's value is not in Kanga's etcd in
// the clear. A pod whose ConfigMap is missing waits with a FailedMount
// event and starts once it exists; so do pods whose claims map to no
// Kanga volume; a pod with an nfs volume is refused naming it; deleting
// the pods removes the Kanga objects the node made for their volumes.
func TestVirtualNodeVolumes(t *testing.T) {
	bin := k8sBinaries(t)
	p := startPlatform(t)
	p.importImages()
	cp := startControlPlane(t, bin)
	const node = "kanga-vn-vol"
	startVirtualNode(t, p, cp, node)
	ctx := context.Background()
	kube := cp.client
	pods := kube.CoreV1().Pods("default")
	const secretMarker = "vn-secret-marker-9f3c"

	// A Kanga volume with data on it, and a claim that names it.
	p.must("volume", "create", "pvdata", "--size", "32Mi")
	p.must("run", "--rm", "-v", "pvdata:/data", "kanga.test/busybox", "sh", "-c", "echo pv-marker > /data/m")
	if _, err := kube.CoreV1().PersistentVolumeClaims("default").Create(ctx, &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: "claim", Annotations: map[string]string{virtualnode.AnnotationVolume: "pvdata"}},
		Spec: corev1.PersistentVolumeClaimSpec{AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("32Mi")}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := kube.CoreV1().ConfigMaps("default").Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "web"}, Data: map[string]string{"app.conf": "level=one", "other": "x"},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := kube.CoreV1().Secrets("default").Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "tls"}, Data: map[string][]byte{"tls.key": []byte(secretMarker)},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	i32 := func(v int32) *int32 { return &v }
	tol := []corev1.Toleration{{Key: virtualnode.Taint.Key, Operator: corev1.TolerationOpEqual, Value: virtualnode.Taint.Value, Effect: virtualnode.Taint.Effect}}
	mem := resource.MustParse("16Mi")
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "vols", Labels: map[string]string{"app": "vols"}, Annotations: map[string]string{"build": "42"}},
		Spec: corev1.PodSpec{
			NodeName: node, Tolerations: tol, RestartPolicy: corev1.RestartPolicyNever,
			Volumes: []corev1.Volume{
				{Name: "conf", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "web"}, DefaultMode: i32(0o640)}}},
				{Name: "certs", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "tls",
					Items: []corev1.KeyToPath{{Key: "tls.key", Path: "keys/tls.key", Mode: i32(0o400)}}}}},
				{Name: "info", VolumeSource: corev1.VolumeSource{DownwardAPI: &corev1.DownwardAPIVolumeSource{Items: []corev1.DownwardAPIVolumeFile{
					{Path: "labels", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.labels"}},
					{Path: "name", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}},
					{Path: "mem", ResourceFieldRef: &corev1.ResourceFieldSelector{ContainerName: "main", Resource: "limits.memory", Divisor: resource.MustParse("1Mi")}},
				}}}},
				{Name: "all", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{DefaultMode: i32(0o444), Sources: []corev1.VolumeProjection{
					{ConfigMap: &corev1.ConfigMapProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "web"}, Items: []corev1.KeyToPath{{Key: "app.conf", Path: "c/app.conf"}}}},
					{Secret: &corev1.SecretProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "tls"}}},
					{DownwardAPI: &corev1.DownwardAPIProjection{Items: []corev1.DownwardAPIVolumeFile{{Path: "annotations", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.annotations"}}}}},
				}}}},
				{Name: "scratch", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{Medium: corev1.StorageMediumMemory, SizeLimit: &mem}}},
				{Name: "data", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "claim"}}},
			},
			// The init container plants links to the host's /etc in the
			// emptyDir, and a directory named etc of the volume's own.
			InitContainers: []corev1.Container{{
				Name: "plant", Image: "kanga.test/busybox",
				Command:      []string{"sh", "-c", "mkdir -p /scratch/etc && echo inside > /scratch/etc/marker && ln -s /etc /scratch/escape && ln -s ../../../../../../etc /scratch/up"},
				VolumeMounts: []corev1.VolumeMount{{Name: "scratch", MountPath: "/scratch"}},
			}},
			Containers: []corev1.Container{{
				Name: "main", Image: "kanga.test/busybox", Command: []string{"sleep", "3600"},
				Env:       []corev1.EnvVar{{Name: "SHARD", Value: "s1"}},
				Resources: corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("128Mi")}},
				VolumeMounts: []corev1.VolumeMount{
					{Name: "conf", MountPath: "/etc/conf"},
					{Name: "conf", MountPath: "/etc/single.conf", SubPath: "app.conf"},
					{Name: "certs", MountPath: "/certs", ReadOnly: true},
					{Name: "info", MountPath: "/info"},
					{Name: "all", MountPath: "/all"},
					{Name: "scratch", MountPath: "/scratch"},
					{Name: "scratch", MountPath: "/esc", SubPath: "escape"},
					{Name: "scratch", MountPath: "/up", SubPath: "up"},
					{Name: "scratch", MountPath: "/shard", SubPathExpr: "shards/$(SHARD)"},
					{Name: "data", MountPath: "/data"},
				},
			}},
		},
	}
	if _, err := pods.Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	inst := virtualnode.InstanceName("default", "vols")
	waitFor(t, "pod vols running", 3*time.Minute, func() bool {
		got, err := pods.Get(ctx, "vols", metav1.GetOptions{})
		return err == nil && got.Status.Phase == corev1.PodRunning
	})
	sh := func(script string) string {
		r := p.kanga("exec", inst, "sh", "-c", script)
		return r.stdout + r.stderr
	}

	for _, c := range []struct{ script, want string }{
		{"cat /etc/conf/app.conf; echo; stat -L -c %a /etc/conf/app.conf /etc/conf/other", "level=one\n640\n640\n"},
		{"cat /etc/single.conf", "level=one"},
		{"cat /certs/keys/tls.key; echo; stat -L -c %a /certs/keys/tls.key; ls /certs", secretMarker + "\n400\nkeys\n"},
		{"cat /info/labels; echo; cat /info/name; echo; cat /info/mem", "app=\"vols\"\nvols\n128"},
		{"cat /all/c/app.conf; echo; cat /all/tls.key; echo; cat /all/annotations; echo; stat -L -c %a /all/c/app.conf /all/tls.key", "level=one\n" + secretMarker + "\nbuild=\"42\"\n444\n444\n"},
		{"cat /data/m", "pv-marker\n"},
		{"mount | grep -c ' /scratch type tmpfs'", "1\n"},
		// Inside the volume, whatever the links say: the volume's own etc.
		{"cat /esc/marker; cat /up/marker; ls /esc /up | grep -c passwd", "inside\ninside\n0\n"},
		// subPathExpr, made a directory inside the volume.
		{"echo x > /shard/f && cat /scratch/shards/s1/f", "x\n"},
		{"touch /certs/x 2>&1 | grep -c 'Read-only'", "1\n"},
	} {
		if got := sh(c.script); got != c.want {
			t.Errorf("%s:\n%q\nwant\n%q", c.script, got, c.want)
		}
	}

	// Updates reach the files: a ConfigMap's data, the pod's labels.
	cm, err := kube.CoreV1().ConfigMaps("default").Get(ctx, "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cm.Data["app.conf"] = "level=two"
	updated := time.Now()
	if _, err := kube.CoreV1().ConfigMaps("default").Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the ConfigMap update in the pod's files", time.Minute, func() bool {
		return sh("cat /etc/conf/app.conf /all/c/app.conf") == "level=twolevel=two"
	})
	// A figure for the docs, not an assertion: the node's poll (1 s) and
	// the host's (2 s) bound it.
	t.Logf("ConfigMap update seen in the pod's files after %v", time.Since(updated).Round(100*time.Millisecond))
	// A file mounted by subPath keeps what it had, as in Kubernetes.
	if got := sh("cat /etc/single.conf"); got != "level=one" {
		t.Errorf("subPath file after the update: %q, want level=one", got)
	}
	if _, err := pods.Patch(ctx, "vols", types.MergePatchType, []byte(`{"metadata":{"labels":{"tier":"front"}}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the new label in the downward-API file", time.Minute, func() bool {
		return sh("cat /info/labels") == "app=\"vols\"\ntier=\"front\""
	})

	// The secret went to Kanga's store encrypted: its value is nowhere in
	// Kanga's etcd in the clear.
	raw, err := clientv3.New(clientv3.Config{Endpoints: []string{"unix://" + filepath.Join(p.dataDir, "etcd.sock")}, DialTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	resp, err := raw.Get(ctx, "/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	sawSecrets := 0
	for _, kv := range resp.Kvs {
		if bytes.Contains(kv.Value, []byte(secretMarker)) || bytes.Contains(kv.Value, []byte(b64(secretMarker))) {
			t.Errorf("etcd key %s holds the Secret's value in the clear", kv.Key)
		}
		if strings.HasPrefix(string(kv.Key), "/kanga/secrets/default/kvn-") {
			sawSecrets++
		}
	}
	if sawSecrets != 2 {
		t.Errorf("%d Kanga secrets of the node's volumes in etcd, want 2 (certs, all): the check proves nothing", sawSecrets)
	}

	// A required ConfigMap that is missing: the pod waits, with an event,
	// and starts once it exists.
	waiting := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "waits"},
		Spec: corev1.PodSpec{NodeName: node, Tolerations: tol, Containers: []corev1.Container{{
			Name: "main", Image: "kanga.test/busybox", Command: []string{"sleep", "3600"},
			VolumeMounts: []corev1.VolumeMount{{Name: "late", MountPath: "/late"}},
		}}, Volumes: []corev1.Volume{{Name: "late", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "late"}}}}}},
	}
	if _, err := pods.Create(ctx, waiting, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitForEvent(t, kube.CoreV1().Events("default"), "waits", "FailedMount", `configmap "late" not found`)
	if got, err := pods.Get(ctx, "waits", metav1.GetOptions{}); err != nil || got.Status.Phase != corev1.PodPending {
		t.Errorf("pod waits: %v, phase %v; want Pending", err, got.Status.Phase)
	}
	if _, err := kube.CoreV1().ConfigMaps("default").Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "late"}, Data: map[string]string{"k": "here"},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "pod waits running once its ConfigMap exists", 3*time.Minute, func() bool {
		got, err := pods.Get(ctx, "waits", metav1.GetOptions{})
		return err == nil && got.Status.Phase == corev1.PodRunning
	})
	if r := p.kanga("exec", virtualnode.InstanceName("default", "waits"), "cat", "/late/k"); r.stdout != "here" {
		t.Errorf("/late/k: %q %q", r.stdout, r.stderr)
	}

	// Claims that map to no Kanga volume: the pods wait, with events.
	for _, c := range []struct{ claim, ann, msg string }{
		{"unbound", "", `persistentvolumeclaim "unbound" is not bound to a Kanga volume`},
		{"missing", "nosuch", `Kanga volume "nosuch" does not exist`},
	} {
		pvc := &corev1.PersistentVolumeClaim{
			ObjectMeta: metav1.ObjectMeta{Name: c.claim},
			Spec: corev1.PersistentVolumeClaimSpec{AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
				Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("32Mi")}}},
		}
		if c.ann != "" {
			pvc.Annotations = map[string]string{virtualnode.AnnotationVolume: c.ann}
		}
		if _, err := kube.CoreV1().PersistentVolumeClaims("default").Create(ctx, pvc, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		name := "claim-" + c.claim
		if _, err := pods.Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: corev1.PodSpec{NodeName: node, Tolerations: tol, Containers: []corev1.Container{{Name: "main", Image: "kanga.test/busybox",
				VolumeMounts: []corev1.VolumeMount{{Name: "d", MountPath: "/d"}}}},
				Volumes: []corev1.Volume{{Name: "d", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: c.claim}}}}},
		}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		waitForEvent(t, kube.CoreV1().Events("default"), name, "FailedMount", c.msg)
		if got, err := pods.Get(ctx, name, metav1.GetOptions{}); err != nil || got.Status.Phase != corev1.PodPending {
			t.Errorf("pod %s: %v, phase %v; want Pending", name, err, got.Status.Phase)
		}
		if err := pods.Delete(ctx, name, *metav1.NewDeleteOptions(0)); err != nil {
			t.Fatal(err)
		}
	}

	// An unsupported volume type is refused, naming the volume and type.
	nfs := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "nfs"},
		Spec: corev1.PodSpec{NodeName: node, Tolerations: tol, Containers: []corev1.Container{{Name: "main", Image: "kanga.test/busybox"}},
			Volumes: []corev1.Volume{{Name: "share", VolumeSource: corev1.VolumeSource{NFS: &corev1.NFSVolumeSource{Server: "127.0.0.1", Path: "/x"}}}}},
	}
	if _, err := pods.Create(ctx, nfs, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitForEvent(t, kube.CoreV1().Events("default"), "nfs", "", "volume share of type nfs")

	// Deleting the pods deletes the objects made for their volumes.
	if out := p.must("config", "ls") + p.must("secret", "ls"); !strings.Contains(out, "kvn-") {
		t.Fatalf("no objects of the node's volumes before the deletion:\n%s", out)
	}
	for _, name := range []string{"vols", "waits", "nfs"} {
		if err := pods.Delete(ctx, name, *metav1.NewDeleteOptions(0)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the objects of the pods' volumes removed", 2*time.Minute, func() bool {
		out := p.must("config", "ls") + p.must("secret", "ls")
		return !strings.Contains(out, "kvn-")
	})
	waitFor(t, "the instances removed", 2*time.Minute, func() bool {
		r := p.kanga("ps", "-a", "-q")
		return r.code == 0 && !strings.Contains(r.stdout, inst)
	})
	// The same volume through a static PersistentVolume of the Kanga CSI
	// driver name, bound to a claim.
	if _, err := kube.CoreV1().PersistentVolumes().Create(ctx, &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: "pv-static"},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:               corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("32Mi")},
			AccessModes:            []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			PersistentVolumeSource: corev1.PersistentVolumeSource{CSI: &corev1.CSIPersistentVolumeSource{Driver: virtualnode.CSIDriver, VolumeHandle: "pvdata"}},
			ClaimRef:               &corev1.ObjectReference{Namespace: "default", Name: "static"},
		},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := kube.CoreV1().PersistentVolumeClaims("default").Create(ctx, &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: "static"},
		Spec: corev1.PersistentVolumeClaimSpec{AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}, VolumeName: "pv-static",
			Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("32Mi")}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := pods.Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "static"},
		Spec: corev1.PodSpec{NodeName: node, Tolerations: tol, Containers: []corev1.Container{{Name: "main", Image: "kanga.test/busybox", Command: []string{"sleep", "3600"},
			VolumeMounts: []corev1.VolumeMount{{Name: "d", MountPath: "/data", ReadOnly: true}}}},
			Volumes: []corev1.Volume{{Name: "d", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "static"}}}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "pod static running", 3*time.Minute, func() bool {
		got, err := pods.Get(ctx, "static", metav1.GetOptions{})
		return err == nil && got.Status.Phase == corev1.PodRunning
	})
	static := virtualnode.InstanceName("default", "static")
	if r := p.kanga("exec", static, "cat", "/data/m"); r.stdout != "pv-marker\n" {
		t.Errorf("pod static read %q %q", r.stdout, r.stderr)
	}
	if err := pods.Delete(ctx, "static", *metav1.NewDeleteOptions(0)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "instance static removed", 2*time.Minute, func() bool {
		r := p.kanga("ps", "-a", "-q")
		return r.code == 0 && !strings.Contains(r.stdout, static)
	})

	// The volume is free again, its data kept.
	if out := p.must("run", "--rm", "-v", "pvdata:/data", "kanga.test/busybox", "cat", "/data/m"); out != "pv-marker\n" {
		t.Errorf("pvdata after the pods: %q", out)
	}
}

// waitForEvent waits for an event on the object named name whose reason
// is reason (any, if empty) and whose message contains msg.
func waitForEvent(t *testing.T, events interface {
	List(context.Context, metav1.ListOptions) (*corev1.EventList, error)
}, name, reason, msg string) {
	t.Helper()
	waitFor(t, "an event on "+name+" saying "+msg, 2*time.Minute, func() bool {
		evs, err := events.List(context.Background(), metav1.ListOptions{FieldSelector: "involvedObject.name=" + name})
		if err != nil {
			return false
		}
		for _, e := range evs.Items {
			if (reason == "" || e.Reason == reason) && strings.Contains(e.Message, msg) {
				return true
			}
		}
		return false
	})
}
