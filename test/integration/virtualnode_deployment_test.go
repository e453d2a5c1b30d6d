package integration

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/remotecommand"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/client"
	"github.com/kanga-run/kanga/internal/testenv/harness"
	"github.com/kanga-run/kanga/internal/virtualnode"
)

// startVirtualNode starts `kanga virtual-node` for node against cp with the
// platform's credentials (plus extra flags) and waits until the node is
// Ready and, when a controller-manager runs, schedulable: no taint left but
// the virtual node's own (without one the API server's not-ready taint
// stays; tests then bind pods themselves).
func startVirtualNode(t *testing.T, p *platform, cp *controlPlane, node string, extra ...string) *virtualNode {
	t.Helper()
	vn := &virtualNode{
		t: t, p: p, logPath: filepath.Join(t.TempDir(), "virtual-node.log"),
		args: append([]string{"virtual-node", "--kubeconfig", cp.kubeconfig, "--name", node,
			"--addr", "127.0.0.1", "--port", strconv.Itoa(harness.FreePort(t)), "--cpu", "16", "--memory", "32Gi", "--pods", "200"}, extra...),
	}
	vn.start()
	t.Cleanup(func() {
		vn.kill()
		if t.Failed() {
			t.Logf("virtual-node %s log:\n%s", node, harness.Tail(vn.log(), 6000))
		}
	})
	ctx := context.Background()
	waitFor(t, "node "+node+" Ready and untainted", 2*time.Minute, func() bool {
		n, err := cp.client.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
		if err != nil {
			return false
		}
		for _, taint := range n.Spec.Taints {
			if cp.controllers && !taint.MatchTaint(&virtualnode.Taint) {
				return false
			}
		}
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
				return true
			}
		}
		return false
	})
	return vn
}

// kangaDeployment is a Deployment whose pods may only run on the virtual
// node: they tolerate its taint and select it by host name, as a user
// bursting a workload onto Kanga writes it.
func kangaDeployment(name, node string, replicas int32) *appsv1.Deployment {
	labels := map[string]string{"app": name}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					NodeSelector: map[string]string{"kubernetes.io/hostname": node},
					// Scale-down waits this long for sleep (PID 1, which
					// ignores the stop signal), as on a kubelet.
					TerminationGracePeriodSeconds: ptr(int64(2)),
					Tolerations: []corev1.Toleration{{
						Key: virtualnode.Taint.Key, Operator: corev1.TolerationOpEqual,
						Value: virtualnode.Taint.Value, Effect: virtualnode.Taint.Effect,
					}},
					Containers: []corev1.Container{{
						Name:  "web",
						Image: "kanga.test/httpd",
						// The image's entrypoint is the server; say hello
						// first so that kubectl logs has a known line.
						Command: []string{"sh", "-c", "echo hello from $POD; exec httpd -f -v -p 80 -h /var/www"},
						Env: []corev1.EnvVar{{Name: "POD", ValueFrom: &corev1.EnvVarSource{
							FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"},
						}}},
						Ports: []corev1.ContainerPort{{ContainerPort: 80}},
					}},
				},
			},
		},
	}
}

// readyReplicas is the Deployment's ready count as its controller reports
// it, or -1.
func readyReplicas(kube *kubernetes.Clientset, ns, name string) int32 {
	d, err := kube.AppsV1().Deployments(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		return -1
	}
	if d.Status.ObservedGeneration < d.Generation {
		return -1
	}
	return d.Status.ReadyReplicas
}

func scaleDeployment(t *testing.T, kube *kubernetes.Clientset, ns, name string, replicas int32) {
	t.Helper()
	ctx := context.Background()
	s, err := kube.AppsV1().Deployments(ns).GetScale(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s.Spec.Replicas = replicas
	if _, err := kube.AppsV1().Deployments(ns).UpdateScale(ctx, name, s, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// runningPods lists the Running pods of app=name, sorted by name.
func runningPods(t *testing.T, kube *kubernetes.Clientset, ns, app string) []corev1.Pod {
	t.Helper()
	list, err := kube.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{LabelSelector: "app=" + app})
	if err != nil {
		t.Fatal(err)
	}
	var out []corev1.Pod
	for _, p := range list.Items {
		if p.Status.Phase == corev1.PodRunning && p.DeletionTimestamp == nil {
			out = append(out, p)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// instancesOf returns the instance names of the pods, sorted.
func instancesOf(ns string, pods []corev1.Pod) []string {
	var names []string
	for _, p := range pods {
		names = append(names, virtualnode.InstanceName(ns, p.Name))
	}
	sort.Strings(names)
	return names
}

// TestVirtualNodeDeployment runs a Deployment through the real
// kube-controller-manager and kube-scheduler onto `kanga virtual-node`.
func TestVirtualNodeDeployment(t *testing.T) {
	bin := k8sBinaries(t, "kube-controller-manager", "kube-scheduler")
	p := startPlatform(t)
	p.importImages()
	cp := startControlPlaneWith(t, bin, true)
	ctx := context.Background()
	kube := cp.client
	const node, ns = "kanga-vn", "default"
	vn := startVirtualNode(t, p, cp, node)

	deps := kube.AppsV1().Deployments(ns)
	if _, err := deps.Create(ctx, kangaDeployment("web", node, 3), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "Deployment web 3/3 ready", 3*time.Minute, func() bool { return readyReplicas(kube, ns, "web") == 3 })

	pods := runningPods(t, kube, ns, "web")
	if len(pods) != 3 {
		t.Fatalf("%d running pods, want 3", len(pods))
	}
	for _, pod := range pods {
		if pod.Spec.NodeName != node {
			t.Errorf("pod %s scheduled on %q, want %s", pod.Name, pod.Spec.NodeName, node)
		}
		inst := p.inspect(virtualnode.InstanceName(ns, pod.Name))
		if inst.Status.Phase != api.PhaseRunning || pod.Status.PodIP != inst.Status.IP {
			t.Errorf("pod %s (ip %s): instance %s ip %s", pod.Name, pod.Status.PodIP, inst.Status.Phase, inst.Status.IP)
		}
	}
	if got, want := instanceNames(t, p), instancesOf(ns, pods); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("instances %v, want %v", got, want)
	}
	one := pods[0].Name

	// kubectl logs, with the pod name from the downward API.
	waitFor(t, "logs of "+one, time.Minute, func() bool {
		b, err := kube.CoreV1().Pods(ns).GetLogs(one, &corev1.PodLogOptions{}).DoRaw(ctx)
		return err == nil && strings.Contains(string(b), "hello from "+one)
	})

	// kubectl exec, with its exit code.
	restCfg, err := clientcmd.BuildConfigFromFlags("", cp.kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	exec := func(cmd ...string) (string, error) {
		req := kube.CoreV1().RESTClient().Post().Resource("pods").Namespace(ns).Name(one).SubResource("exec").
			VersionedParams(&corev1.PodExecOptions{Container: "web", Command: cmd, Stdout: true, Stderr: true}, scheme.ParameterCodec)
		ex, err := remotecommand.NewSPDYExecutor(restCfg, "POST", req.URL())
		if err != nil {
			return "", err
		}
		var out bytes.Buffer
		err = ex.StreamWithContext(ctx, remotecommand.StreamOptions{Stdout: &out, Stderr: &out})
		return out.String(), err
	}
	// client-go's SPDY client can drop a stream's last data frames when the
	// kubelet side closes the connection right after a short command exits
	// (kubernetes/kubernetes#124571: exit 0, output cut). Seen once here as
	// empty output with no error; an empty answer is asked again, anything
	// else wrong fails at once.
	var out string
	for try := 0; try < 3; try++ {
		out, err = exec("sh", "-c", "echo in $POD")
		if err != nil || out != "" {
			break
		}
		t.Logf("exec try %d: empty output and exit 0 (kubernetes#124571); asking again", try+1)
	}
	if err != nil || strings.TrimSpace(out) != "in "+one {
		t.Errorf("exec: %q, %v", out, err)
	}
	if _, err := exec("sh", "-c", "exit 7"); err == nil || !strings.Contains(err.Error(), "7") {
		t.Errorf("exec exit 7: err = %v, want exit code 7", err)
	}

	// kubectl port-forward to the pod's httpd.
	if body := portForwardGet(t, kube, restCfg, one, 80); !strings.Contains(body, "hello from kanga") {
		t.Errorf("port-forward GET /: %q", body)
	}

	// A pod Kanga cannot run gets a Warning event naming the field.
	bad := kangaDeployment("hostnet", node, 1)
	bad.Spec.Template.Spec.HostNetwork = true
	if _, err := deps.Create(ctx, bad, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a Warning event refusing the hostNetwork pod", 2*time.Minute, func() bool {
		evs, err := kube.CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: "type=Warning"})
		if err != nil {
			return false
		}
		for _, e := range evs.Items {
			if strings.HasPrefix(e.InvolvedObject.Name, "hostnet-") && strings.Contains(e.Message, "hostNetwork") {
				return true
			}
		}
		return false
	})
	if err := deps.Delete(ctx, "hostnet", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}

	// SIGKILL the virtual node and start it again: it adopts the three
	// instances and creates none.
	vn.kill()
	vn.start()
	waitFor(t, "Deployment web 3/3 ready after the restart", 3*time.Minute, func() bool {
		return readyReplicas(kube, ns, "web") == 3 && len(runningPods(t, kube, ns, "web")) == 3
	})
	pods = runningPods(t, kube, ns, "web")
	if got, want := instanceNames(t, p), instancesOf(ns, pods); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("instances after the restart %v, want %v (the pods')", got, want)
	}
	if n := strings.Count(vn.log(), "created instance"); n != 0 {
		t.Errorf("the restarted virtual node created %d instances, want 0:\n%s", n, harness.Tail(vn.log(), 3000))
	}

	// Scale to zero: the ReplicaSet deletes the pods, the virtual node
	// the instances.
	scaleDeployment(t, kube, ns, "web", 0)
	waitFor(t, "every instance gone after scaling to 0", 2*time.Minute, func() bool { return len(instanceNames(t, p)) == 0 })
	waitFor(t, "every pod gone after scaling to 0", 2*time.Minute, func() bool {
		l, err := kube.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
		return err == nil && len(l.Items) == 0
	})
	if err := deps.Delete(ctx, "web", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
}

// TestVirtualNodeBurst measures the burst figure, pods Ready per minute
// through the real controller-manager and scheduler, for
// bench/virtual-node.md, against a baseline taken in the same run: as many
// instances created at once straight through the Kanga SDK, until each is
// Running. It is a measurement, not a check: it runs only with
// KANGA_VN_BURST=<replicas> (KANGA_VN_BURST_RUNS runs, default 3) and logs
// each run and the medians.
func TestVirtualNodeBurst(t *testing.T) {
	replicas, _ := strconv.Atoi(os.Getenv("KANGA_VN_BURST"))
	if replicas <= 0 {
		t.Skip("set KANGA_VN_BURST=<replicas> to measure the virtual node's burst rate")
	}
	runs, _ := strconv.Atoi(os.Getenv("KANGA_VN_BURST_RUNS"))
	if runs <= 0 {
		runs = 3
	}
	bin := k8sBinaries(t, "kube-controller-manager", "kube-scheduler")
	p := startPlatform(t)
	p.importImages()
	cfg, err := client.LoadConfig(p.config)
	if err != nil {
		t.Fatal(err)
	}
	kanga, err := client.New(cfg.Addr, cfg.Token)
	if err != nil {
		t.Fatal(err)
	}
	cp := startControlPlaneWith(t, bin, true)
	ctx := context.Background()
	kube := cp.client
	const node, ns = "kanga-vn", "default"
	startVirtualNode(t, p, cp, node)
	deps := kube.AppsV1().Deployments(ns)

	median := func(v []float64) float64 {
		s := append([]float64(nil), v...)
		sort.Float64s(s)
		return s[len(s)/2]
	}
	var rates, baseline []float64
	for run := 0; run < runs; run++ {
		// Baseline: the same containers straight through the Kanga API.
		start := time.Now()
		errc := make(chan error, replicas)
		for i := 0; i < replicas; i++ {
			go func(name string) {
				_, err := kanga.CreateInstance(ctx, api.CreateInstanceRequest{Name: name, Spec: api.InstanceSpec{
					Containers: []api.ContainerSpec{{Name: "web", Image: "kanga.test/httpd", Command: []string{"sh", "-c", "echo hello from $POD; exec httpd -f -v -p 80 -h /var/www"}}},
				}})
				if err == nil {
					_, err = kanga.WaitInstance(ctx, name, client.WaitRunning)
				}
				errc <- err
			}(fmt.Sprintf("base-%d-%d", run, i))
		}
		for i := 0; i < replicas; i++ {
			if err := <-errc; err != nil {
				t.Fatalf("baseline instance: %v", err)
			}
		}
		took := time.Since(start)
		baseline = append(baseline, float64(replicas)/took.Minutes())
		t.Logf("run %d: baseline: %d instances Running through the Kanga SDK in %s: %.0f per minute", run+1, replicas, took.Round(time.Millisecond), baseline[run])
		for _, name := range instanceNames(t, p) {
			if err := kanga.DeleteInstance(ctx, name, true); err != nil {
				t.Fatal(err)
			}
		}
		waitFor(t, "every baseline instance gone", 5*time.Minute, func() bool { return len(instanceNames(t, p)) == 0 })

		name := fmt.Sprintf("burst-%d", run)
		d := kangaDeployment(name, node, int32(replicas))
		start = time.Now()
		if _, err := deps.Create(ctx, d, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, fmt.Sprintf("%s %d/%d ready", name, replicas, replicas), 10*time.Minute, func() bool {
			return readyReplicas(kube, ns, name) == int32(replicas)
		})
		took = time.Since(start)
		rates = append(rates, float64(replicas)/took.Minutes())
		t.Logf("run %d: virtual node: %d pods Ready in %s: %.0f pods/minute", run+1, replicas, took.Round(time.Millisecond), rates[run])
		if n := len(instanceNames(t, p)); n != replicas {
			t.Errorf("run %d: %d instances, want %d", run+1, n, replicas)
		}
		scaleDeployment(t, kube, ns, name, 0)
		waitFor(t, "every instance gone", 5*time.Minute, func() bool { return len(instanceNames(t, p)) == 0 })
		if err := deps.Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("burst of %d, %d runs: virtual node median %.0f pods/minute %v; Kanga SDK baseline median %.0f per minute %v; ratio %.2f",
		replicas, runs, median(rates), rounded(rates), median(baseline), rounded(baseline), median(rates)/median(baseline))
}

func rounded(v []float64) []int {
	var out []int
	for _, x := range v {
		out = append(out, int(x+0.5))
	}
	return out
}
