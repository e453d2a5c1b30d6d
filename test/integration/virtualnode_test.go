package integration

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/tools/remotecommand"
	"k8s.io/client-go/transport/spdy"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/internal/testenv/harness"
	"github.com/kanga-run/kanga/internal/virtualnode"
)

// k8sVersion must match scripts/build-k8s.sh.
const k8sVersion = "v1.37.2"

// k8sBinaries returns the directory with kube-apiserver and etcd (and the
// extra binaries named) built by scripts/build-k8s.sh, or skips the test.
func k8sBinaries(t *testing.T, extra ...string) string {
	t.Helper()
	dir := os.Getenv("KANGA_K8S_BIN")
	if dir == "" {
		cache := os.Getenv("KANGA_K8S_CACHE")
		if cache == "" {
			cache = "/var/cache/kanga/k8s"
		}
		dir = filepath.Join(cache, k8sVersion)
	}
	for _, b := range append([]string{"kube-apiserver", "etcd"}, extra...) {
		if _, err := os.Stat(filepath.Join(dir, b)); err != nil {
			t.Skipf("%s not built in %s: run scripts/build-k8s.sh (about 10 minutes cold) to enable the virtual-node tests", b, dir)
		}
	}
	return dir
}

// controlPlane is an etcd and a kube-apiserver on 127.0.0.1, and, when
// asked for, a kube-controller-manager and a kube-scheduler; without them
// the test binds pods itself.
type controlPlane struct {
	kubeconfig string
	client     *kubernetes.Clientset
	// controllers says whether a controller-manager and a scheduler run.
	controllers bool
}

// controllers are the kube-controller-manager controllers a Deployment on
// a virtual node needs: Deployments make ReplicaSets make pods; the node
// lifecycle controller lifts the not-ready taint once the node reports
// Ready (the scheduler keeps pods off the node until then); the service
// account controllers give pods the default account and its token (the
// ServiceAccount admission plugin requires both); the garbage collector
// removes the ReplicaSets of a deleted Deployment.
var controllers = []string{
	"deployment-controller", "replicaset-controller", "node-lifecycle-controller",
	"serviceaccount-controller", "serviceaccount-token-controller",
	"root-ca-certificate-publisher-controller", "garbage-collector-controller",
}

func startControlPlane(t *testing.T, bin string) *controlPlane {
	t.Helper()
	return startControlPlaneWith(t, bin, false)
}

// startControlPlaneWith starts the control plane, with a real
// kube-controller-manager and kube-scheduler when withControllers is set.
func startControlPlaneWith(t *testing.T, bin string, withControllers bool) *controlPlane {
	t.Helper()
	if !withControllers {
		return startControlPlaneRunning(t, bin, nil)
	}
	return startControlPlaneRunning(t, bin, controllers)
}

// startControlPlaneRunning starts the control plane with a
// kube-controller-manager running ctrls ("*" for its defaults) and a
// kube-scheduler, or neither when ctrls is empty.
func startControlPlaneRunning(t *testing.T, bin string, ctrls []string) *controlPlane {
	t.Helper()
	withControllers := len(ctrls) > 0
	dir := t.TempDir()
	etcdPort, peerPort, apiPort := harness.FreePort(t), harness.FreePort(t), harness.FreePort(t)
	etcdURL := "http://127.0.0.1:" + strconv.Itoa(etcdPort)
	startDaemon(t, filepath.Join(dir, "etcd.log"), filepath.Join(bin, "etcd"),
		"--data-dir", filepath.Join(dir, "etcd"),
		"--listen-client-urls", etcdURL, "--advertise-client-urls", etcdURL,
		"--listen-peer-urls", "http://127.0.0.1:"+strconv.Itoa(peerPort),
		"--initial-advertise-peer-urls", "http://127.0.0.1:"+strconv.Itoa(peerPort),
		"--initial-cluster", "default=http://127.0.0.1:"+strconv.Itoa(peerPort))

	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "sa.key"), pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}))
	writeFile(t, filepath.Join(dir, "sa.pub"), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}))
	writeFile(t, filepath.Join(dir, "tokens.csv"), []byte("kanga-test-token,admin,admin,system:masters\n"))
	admission := []string{"--disable-admission-plugins", "ServiceAccount"}
	if withControllers {
		// The service account controllers run: every pod gets the
		// projected API token volume, which the virtual node drops.
		admission = nil
	}
	apiArgs := []string{
		"--etcd-servers", etcdURL,
		"--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1",
		"--secure-port", strconv.Itoa(apiPort), "--cert-dir", filepath.Join(dir, "certs"),
		"--token-auth-file", filepath.Join(dir, "tokens.csv"),
		"--authorization-mode", "AlwaysAllow",
		"--service-account-issuer", "https://kubernetes.default.svc",
		"--service-account-key-file", filepath.Join(dir, "sa.pub"),
		"--service-account-signing-key-file", filepath.Join(dir, "sa.key"),
		"--service-cluster-ip-range", "10.96.0.0/16",
		// A loopback advertise address makes the endpoint reconciler
		// fail.
		"--endpoint-reconciler-type", "none",
		"--kubelet-preferred-address-types", "InternalIP",
	}
	// With no controller-manager no service account would ever exist
	// for the ServiceAccount admission plugin.
	startDaemon(t, filepath.Join(dir, "apiserver.log"), filepath.Join(bin, "kube-apiserver"), append(apiArgs, admission...)...)

	kubeconfig := filepath.Join(dir, "kubeconfig")
	writeFile(t, kubeconfig, []byte(fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: test
  cluster: {server: "https://127.0.0.1:%d", insecure-skip-tls-verify: true}
users:
- name: admin
  user: {token: kanga-test-token}
contexts:
- name: test
  context: {cluster: test, user: admin}
current-context: test
`, apiPort)))
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "kube-apiserver ready", 2*time.Minute, func() bool {
		_, err := cs.CoreV1().Namespaces().Get(context.Background(), "default", metav1.GetOptions{})
		return err == nil
	})
	if withControllers {
		startDaemon(t, filepath.Join(dir, "controller-manager.log"), filepath.Join(bin, "kube-controller-manager"),
			"--kubeconfig", kubeconfig,
			"--authentication-kubeconfig", kubeconfig, "--authorization-kubeconfig", kubeconfig,
			"--bind-address", "127.0.0.1", "--secure-port", strconv.Itoa(harness.FreePort(t)),
			"--leader-elect=false",
			"--controllers", strings.Join(ctrls, ","),
			"--service-account-private-key-file", filepath.Join(dir, "sa.key"),
			"--use-service-account-credentials=false",
			"--root-ca-file", filepath.Join(dir, "certs", "apiserver.crt"))
		startDaemon(t, filepath.Join(dir, "scheduler.log"), filepath.Join(bin, "kube-scheduler"),
			"--kubeconfig", kubeconfig,
			"--authentication-kubeconfig", kubeconfig, "--authorization-kubeconfig", kubeconfig,
			"--bind-address", "127.0.0.1", "--secure-port", strconv.Itoa(harness.FreePort(t)),
			"--leader-elect=false")
	}
	return &controlPlane{kubeconfig: kubeconfig, client: cs, controllers: withControllers}
}

// startDaemon starts a process in its own group, logging to logPath, and
// kills the group at cleanup.
func startDaemon(t *testing.T, logPath, bin string, args ...string) *exec.Cmd {
	t.Helper()
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
		if t.Failed() {
			if b, err := os.ReadFile(logPath); err == nil {
				t.Logf("%s:\n%s", filepath.Base(logPath), harness.Tail(string(b), 3000))
			}
		}
	})
	return cmd
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// waitFor polls cond until it holds; the deadline is generous, it is not a
// timing assertion.
func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Fatalf("timed out after %s waiting for %s", timeout, what)
}

// virtualNode is one `kanga virtual-node` process.
type virtualNode struct {
	t       *testing.T
	p       *platform
	args    []string
	logPath string
	proc    *harness.Process
}

func (v *virtualNode) start() {
	v.t.Helper()
	// A marker for log: what this run printed.
	if f, err := os.OpenFile(v.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644); err == nil {
		fmt.Fprintf(f, "--- start %s\n", time.Now().Format(time.RFC3339Nano))
		f.Close()
	}
	proc, err := harness.StartProcess(v.p.bin, v.logPath, v.p.env(), v.args...)
	if err != nil {
		v.t.Fatal(err)
	}
	v.proc = proc
}

func (v *virtualNode) kill() {
	v.proc.Kill()
	v.proc = nil
}

// log is what the process printed since its last start.
func (v *virtualNode) log() string {
	b, _ := os.ReadFile(v.logPath)
	s := string(b)
	if i := strings.LastIndex(s, "--- start "); i >= 0 {
		s = s[i:]
	}
	return s
}

func webPod(name, node string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app": "web"}},
		Spec: corev1.PodSpec{
			// Bound directly, as the scheduler would: this control plane
			// runs no scheduler.
			NodeName:    node,
			Tolerations: []corev1.Toleration{{Key: virtualnode.Taint.Key, Operator: corev1.TolerationOpEqual, Value: virtualnode.Taint.Value, Effect: virtualnode.Taint.Effect}},
			// A deletion waits this long for a process that ignores the
			// stop signal (sleep as PID 1), as on a kubelet.
			TerminationGracePeriodSeconds: ptr(int64(2)),
			Containers: []corev1.Container{{
				Name:    "web",
				Image:   "kanga.test/busybox",
				Command: []string{"sh", "-c", "echo hello from $POD; exec sleep 3600"},
				Env: []corev1.EnvVar{
					{Name: "POD", Value: name},
					{Name: "GREETING", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{
						LocalObjectReference: corev1.LocalObjectReference{Name: "web"}, Key: "greeting",
					}}},
				},
			}},
		},
	}
}

func podReady(pod *corev1.Pod) bool {
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// TestVirtualNode drives pods through a real kube-apiserver onto a real
// Kanga platform via `kanga virtual-node`.
func TestVirtualNode(t *testing.T) {
	bin := k8sBinaries(t)
	p := startPlatform(t)
	p.importImages()
	cp := startControlPlane(t, bin)
	ctx := context.Background()
	kube := cp.client
	pods := kube.CoreV1().Pods("default")
	const node = "kanga-vn"

	kubeletPort := harness.FreePort(t)
	vn := &virtualNode{
		t: t, p: p, logPath: filepath.Join(t.TempDir(), "virtual-node.log"),
		args: []string{"virtual-node", "--kubeconfig", cp.kubeconfig, "--name", node,
			"--addr", "127.0.0.1", "--port", strconv.Itoa(kubeletPort), "--cpu", "8", "--memory", "16Gi", "--pods", "100"},
	}
	vn.start()
	t.Cleanup(func() {
		vn.kill()
		if t.Failed() {
			t.Logf("virtual-node log:\n%s", harness.Tail(vn.log(), 6000))
		}
	})

	waitFor(t, "node Ready", 2*time.Minute, func() bool {
		n, err := kube.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
		if err != nil {
			return false
		}
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
				return true
			}
		}
		return false
	})
	n, err := kube.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// The API server may add node.kubernetes.io/not-ready next to ours.
	tainted := false
	for _, taint := range n.Spec.Taints {
		tainted = tainted || taint.MatchTaint(&virtualnode.Taint)
	}
	if !tainted {
		t.Errorf("node taints %v lack %v", n.Spec.Taints, virtualnode.Taint)
	}
	if got := n.Status.Capacity.Cpu().String(); got != "8" {
		t.Errorf("node cpu capacity %s, want 8", got)
	}

	if _, err := kube.CoreV1().ConfigMaps("default").Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Data:       map[string]string{"greeting": "hi"},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// Three replicas, as a ReplicaSet would create them.
	start := time.Now()
	for i := 0; i < 3; i++ {
		if _, err := pods.Create(ctx, webPod(fmt.Sprintf("web-%d", i), node), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	readyCount := func() int {
		list, err := pods.List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
		if err != nil {
			return -1
		}
		n := 0
		for i := range list.Items {
			if podReady(&list.Items[i]) {
				n++
			}
		}
		return n
	}
	waitFor(t, "3/3 pods Ready", 3*time.Minute, func() bool { return readyCount() == 3 })
	took := time.Since(start)
	t.Logf("3 pods Ready in %s (%.0f pods/minute)", took.Round(time.Millisecond), 3/took.Minutes())

	// Ready must mean running: the instance says so too, with the pod's IP.
	for i := 0; i < 3; i++ {
		name := fmt.Sprintf("web-%d", i)
		pod, err := pods.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		inst := p.inspect(virtualnode.InstanceName("default", name))
		if inst.Status.Phase != api.PhaseRunning || pod.Status.PodIP == "" || pod.Status.PodIP != inst.Status.IP {
			t.Errorf("%s: instance %s ip %q, pod ip %q", name, inst.Status.Phase, inst.Status.IP, pod.Status.PodIP)
		}
	}

	// kubectl logs: API server -> the node's kubelet API -> Kanga.
	waitFor(t, "logs of web-0", time.Minute, func() bool {
		b, err := pods.GetLogs("web-0", &corev1.PodLogOptions{}).DoRaw(ctx)
		return err == nil && strings.Contains(string(b), "hello from web-0")
	})

	// Env as the kubelet makes it: the pod's IP (known only on the host),
	// the node's, a resource limit, a ConfigMap key, the services', and
	// $(VAR) references to them in the command.
	envPod := webPod("env-0", node)
	envPod.Labels = map[string]string{"app": "env"}
	envPod.Spec.Containers[0].Resources.Limits = corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("64Mi")}
	envPod.Spec.Containers[0].Command = []string{"sh", "-c", `echo "ip=$(MY_IP) env=$MY_IP host=$HOST_IP mem=$MEM greeting=$(GREETING) svc=$KUBERNETES_SERVICE_HOST" 'literal=$$(MY_IP)'; exec sleep 3600`}
	envPod.Spec.Containers[0].Env = append(envPod.Spec.Containers[0].Env,
		corev1.EnvVar{Name: "MY_IP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.podIP"}}},
		corev1.EnvVar{Name: "HOST_IP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.hostIP"}}},
		corev1.EnvVar{Name: "MEM", ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{Resource: "limits.memory", Divisor: resource.MustParse("1Mi")}}},
	)
	if _, err := pods.Create(ctx, envPod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var envPodIP string
	waitFor(t, "env-0 Running with an IP", 2*time.Minute, func() bool {
		pod, err := pods.Get(ctx, "env-0", metav1.GetOptions{})
		envPodIP = pod.Status.PodIP
		return err == nil && pod.Status.Phase == corev1.PodRunning && envPodIP != ""
	})
	svcHost := ""
	if svc, err := kube.CoreV1().Services("default").Get(ctx, "kubernetes", metav1.GetOptions{}); err == nil {
		svcHost = svc.Spec.ClusterIP
	}
	wantEnv := fmt.Sprintf("ip=%s env=%s host=127.0.0.1 mem=64 greeting=hi svc=%s literal=$(MY_IP)", envPodIP, envPodIP, svcHost)
	var envLog string
	waitFor(t, "env-0's env in its log", time.Minute, func() bool {
		b, err := pods.GetLogs("env-0", &corev1.PodLogOptions{}).DoRaw(ctx)
		envLog = string(b)
		return err == nil && strings.Contains(envLog, "ip=")
	})
	if !strings.Contains(envLog, wantEnv) {
		t.Errorf("env-0 log %q, want %q", envLog, wantEnv)
	}
	if err := pods.Delete(ctx, "env-0", *metav1.NewDeleteOptions(0)); err != nil {
		t.Fatal(err)
	}

	// A graceful delete stops the containers with the stop signal first,
	// as a kubelet does: the trap runs and the container exits 0 before
	// the pod goes.
	graceful := webPod("graceful", node)
	graceful.Labels = map[string]string{"app": "graceful"}
	graceful.Spec.Containers[0].Command = []string{"sh", "-c", `trap 'echo bye; exit 0' TERM; echo up; while true; do sleep 0.2; done`}
	if _, err := pods.Create(ctx, graceful, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// Ready in the API: virtual-kubelet deletes a pod that its status does
	// not show running at once, without asking the node.
	waitFor(t, "graceful up and Ready", 2*time.Minute, func() bool {
		b, err := pods.GetLogs("graceful", &corev1.PodLogOptions{}).DoRaw(ctx)
		pod, perr := pods.Get(ctx, "graceful", metav1.GetOptions{})
		return err == nil && strings.Contains(string(b), "up") && perr == nil && podReady(pod)
	})
	wctx, wcancel := context.WithTimeout(ctx, 2*time.Minute)
	defer wcancel()
	w, err := pods.Watch(wctx, metav1.ListOptions{FieldSelector: "metadata.name=graceful"})
	if err != nil {
		t.Fatal(err)
	}
	if err := pods.Delete(ctx, "graceful", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	var lastTerminated *corev1.ContainerStateTerminated
	for ev := range w.ResultChan() {
		if pod, ok := ev.Object.(*corev1.Pod); ok && len(pod.Status.ContainerStatuses) == 1 && pod.Status.ContainerStatuses[0].State.Terminated != nil {
			lastTerminated = pod.Status.ContainerStatuses[0].State.Terminated
		}
		if ev.Type == watch.Deleted {
			break
		}
	}
	w.Stop()
	if lastTerminated == nil || lastTerminated.ExitCode != 0 || lastTerminated.Reason == "KangaInstanceDeleted" {
		var lines []string
		for _, l := range strings.Split(vn.log(), "\n") {
			if strings.Contains(l, "graceful") {
				lines = append(lines, l)
			}
		}
		t.Errorf("graceful delete: last terminated state %+v, want the container's own exit 0 after the stop signal; virtual node:\n%s", lastTerminated, strings.Join(lines, "\n"))
	}

	// The kubelet stats endpoints, read as metrics-server does, straight
	// from the node's kubelet API (the API server's node proxy refuses
	// loopback addresses). The node runs without --client-ca here.
	kubelet := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	get := func(path string) string {
		resp, err := kubelet.Get(fmt.Sprintf("https://127.0.0.1:%d%s", kubeletPort, path))
		if err != nil {
			return err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	var lastStats string
	defer func() {
		if t.Failed() && lastStats != "" {
			t.Logf("last kubelet stats read:\n%s", harness.Tail(lastStats, 2000))
		}
	}()
	waitFor(t, "web-0 in the stats summary and resource metrics", time.Minute, func() bool {
		sum := get("/stats/summary")
		lastStats = sum
		if !strings.Contains(sum, `"name":"web-0"`) || !strings.Contains(sum, "usageCoreNanoSeconds") || !strings.Contains(sum, `"containers":[{"name":"web"`) {
			return false
		}
		m := get("/metrics/resource")
		lastStats = m
		return strings.Contains(m, `pod_memory_working_set_bytes{namespace="default",pod="web-0"}`) &&
			strings.Contains(m, `container_memory_working_set_bytes{container="web",namespace="default",pod="web-0"}`)
	})

	// kubectl exec, with an exit code.
	restCfg, err := clientcmd.BuildConfigFromFlags("", cp.kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	exec := func(cmd ...string) (string, error) {
		req := kube.CoreV1().RESTClient().Post().Resource("pods").Namespace("default").Name("web-1").SubResource("exec").
			VersionedParams(&corev1.PodExecOptions{Container: "web", Command: cmd, Stdout: true, Stderr: true}, scheme.ParameterCodec)
		ex, err := remotecommand.NewSPDYExecutor(restCfg, "POST", req.URL())
		if err != nil {
			return "", err
		}
		var out, errb bytes.Buffer
		err = ex.StreamWithContext(ctx, remotecommand.StreamOptions{Stdout: &out, Stderr: &errb})
		return out.String() + errb.String(), err
	}
	// GREETING comes from a ConfigMap, resolved through the API.
	out, err := exec("sh", "-c", "echo in $POD $GREETING")
	if err != nil || strings.TrimSpace(out) != "in web-1 hi" {
		t.Errorf("exec: %q, %v", out, err)
	}
	if _, err := exec("sh", "-c", "exit 3"); err == nil || !strings.Contains(err.Error(), "3") {
		t.Errorf("exec exit 3: err = %v, want exit code 3", err)
	}

	// A pod Kanga cannot run is refused with an event that says why.
	bad := webPod("hostpath", node)
	bad.Spec.Volumes = []corev1.Volume{{Name: "root", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/"}}}}
	bad.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "root", MountPath: "/host"}}
	if _, err := pods.Create(ctx, bad, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "an event refusing the hostPath pod", time.Minute, func() bool {
		evs, err := kube.CoreV1().Events("default").List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=hostpath"})
		if err != nil {
			return false
		}
		for _, e := range evs.Items {
			if e.Type == corev1.EventTypeWarning && strings.Contains(e.Message, "hostPath") {
				return true
			}
		}
		return false
	})
	// Its restart policy is Always, yet it fails rather than waiting for
	// ever, as a kubelet fails a pod it cannot admit.
	waitFor(t, "the refused pod Failed", time.Minute, func() bool {
		pod, err := pods.Get(ctx, "hostpath", metav1.GetOptions{})
		return err == nil && pod.Status.Phase == corev1.PodFailed && pod.Status.Reason == virtualnode.ReasonRefused && strings.Contains(pod.Status.Message, "hostPath")
	})
	if err := pods.Delete(ctx, "hostpath", *metav1.NewDeleteOptions(0)); err != nil {
		t.Fatal(err)
	}

	// Kill the virtual node and start it again: it adopts the three
	// instances instead of creating more.
	vn.kill()
	vn.start()
	if _, err := pods.Create(ctx, webPod("web-3", node), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "4/4 pods Ready after the restart", 3*time.Minute, func() bool { return readyCount() == 4 })
	want := []string{}
	for i := 0; i < 4; i++ {
		want = append(want, virtualnode.InstanceName("default", fmt.Sprintf("web-%d", i)))
	}
	sort.Strings(want)
	if got := instanceNames(t, p); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("instances after restart: %v, want %v", got, want)
	}
	if log := vn.log(); strings.Count(log, "created instance") != 1 {
		t.Errorf("the restarted virtual node created %d instances, want 1 (web-3):\n%s", strings.Count(log, "created instance"), harness.Tail(log, 3000))
	}

	// Scale to zero: every pod goes, and so does every instance.
	list, err := pods.List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
	if err != nil {
		t.Fatal(err)
	}
	for _, pod := range list.Items {
		if err := pods.Delete(ctx, pod.Name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "all pods gone from the API", 2*time.Minute, func() bool {
		l, err := pods.List(ctx, metav1.ListOptions{})
		return err == nil && len(l.Items) == 0
	})
	waitFor(t, "all instances gone", 2*time.Minute, func() bool { return len(instanceNames(t, p)) == 0 })

	// kubectl port-forward: API server -> kubelet API -> the instance.
	www := webPod("www", node)
	www.Labels = map[string]string{"app": "www"}
	www.Spec.Containers[0].Image = "kanga.test/httpd"
	www.Spec.Containers[0].Command = nil
	if _, err := pods.Create(ctx, www, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "www Ready", 2*time.Minute, func() bool {
		pod, err := pods.Get(ctx, "www", metav1.GetOptions{})
		return err == nil && podReady(pod)
	})
	if body := portForwardGet(t, kube, restCfg, "www", 80); !strings.Contains(body, "hello from kanga") {
		t.Errorf("port-forward GET /: %q", body)
	}

	// The burst figure: pods created at once until all are Ready.
	const burst = 20
	start = time.Now()
	for i := 0; i < burst; i++ {
		pod := webPod(fmt.Sprintf("burst-%d", i), node)
		pod.Labels = map[string]string{"app": "burst"}
		if _, err := pods.Create(ctx, pod, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the burst Ready", 5*time.Minute, func() bool {
		list, err := pods.List(ctx, metav1.ListOptions{LabelSelector: "app=burst"})
		if err != nil {
			return false
		}
		n := 0
		for i := range list.Items {
			if podReady(&list.Items[i]) {
				n++
			}
		}
		return n == burst
	})
	took = time.Since(start)
	t.Logf("burst: %d pods Ready in %s (%.0f pods/minute)", burst, took.Round(time.Millisecond), burst/took.Minutes())
	if err := pods.DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "all instances gone after the burst", 3*time.Minute, func() bool { return len(instanceNames(t, p)) == 0 })
}

// portForwardGet forwards a local port to the pod's port through the API
// server, as kubectl port-forward does, and GETs / through it.
func portForwardGet(t *testing.T, kube *kubernetes.Clientset, restCfg *rest.Config, pod string, port int) string {
	t.Helper()
	transport, upgrader, err := spdy.RoundTripperFor(restCfg)
	if err != nil {
		t.Fatal(err)
	}
	req := kube.CoreV1().RESTClient().Post().Resource("pods").Namespace("default").Name(pod).SubResource("portforward")
	dialer := spdy.NewDialer(upgrader, &http.Client{Transport: transport}, "POST", req.URL())
	stop, ready := make(chan struct{}), make(chan struct{})
	fw, err := portforward.NewOnAddresses(dialer, []string{"127.0.0.1"}, []string{fmt.Sprintf("0:%d", port)}, stop, ready, io.Discard, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- fw.ForwardPorts() }()
	defer func() {
		close(stop)
		<-errc
	}()
	select {
	case <-ready:
	case err := <-errc:
		t.Fatalf("port-forward: %v", err)
	}
	ports, err := fw.GetPorts()
	if err != nil || len(ports) != 1 {
		t.Fatalf("port-forward ports %v: %v", ports, err)
	}
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/", ports[0].Local))
	if err != nil {
		t.Fatalf("GET through port-forward: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func instanceNames(t *testing.T, p *platform) []string {
	t.Helper()
	var list api.InstanceList
	out := p.must("ps", "-a", "-o", "json")
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatalf("ps -a -o json: %v\n%s", err, out)
	}
	var names []string
	for _, i := range list.Items {
		names = append(names, i.Name)
	}
	sort.Strings(names)
	return names
}
