// Package virtualnode is a virtual-kubelet provider that runs the pods
// bound to its node as Kanga instances. It talks to Kanga only through the
// public API (the client package), so it can run anywhere a kubeconfig and
// a Kanga token reach.
package virtualnode

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	vkerrdefs "github.com/virtual-kubelet/virtual-kubelet/errdefs"
	vkapi "github.com/virtual-kubelet/virtual-kubelet/node/api"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	corev1listers "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/record"
	utilexec "k8s.io/utils/exec"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/client"
	"github.com/kanga-run/kanga/errdefs"
)

// Provider implements virtual-kubelet's nodeutil.Provider and
// node.PodNotifier on top of a Kanga tenant.
type Provider struct {
	tenants  *tenancy
	node     string
	hostIP   string
	pods     corev1listers.PodLister
	env      envSources
	interval time.Duration
	log      *slog.Logger

	mu sync.Mutex
	// known holds the pods this node runs, as the pod controller last
	// handed them over (with env references resolved): GetPod must return
	// them unchanged or the controller sees a spec change on every sync.
	known map[string]*corev1.Pod
	// refused holds the pods Kanga will never run, with their Failed
	// status, until they are deleted (see refuse).
	refused map[string]*corev1.Pod
	// stopping holds the pods whose graceful deletion stopped their
	// instance: once it has ended, the poll deletes it (see DeletePod).
	stopping map[string]bool
	// sent is the status last reported for each pod, so that a poll
	// notifies only changes.
	sent   map[string]corev1.PodStatus
	notify func(*corev1.Pod)
	// cpu keeps the previous CPU sample of each instance for the usage
	// rate of the stats summary.
	cpu map[string]cpuSample
	// written is the content last written to each object of a pod
	// volume (objects.go).
	written map[string][32]byte
	// polls counts the polls, which collect leftover objects now and then.
	polls int
}

type cpuSample struct {
	at    time.Time
	nanos uint64
}

// ProviderOption configures a Provider.
type ProviderOption func(*Provider)

// TenantPerNamespace runs the pods of namespace N in the Kanga tenant
// TenantName(prefix, N), created on first use, instead of in the token's
// tenant. The client's token must be an administrator's.
func TenantPerNamespace(prefix string) ProviderOption {
	return func(p *Provider) { p.tenants = newTenancy(p.tenants.base, true, prefix) }
}

// NamespaceNetworkPolicy gives the tenants the node creates per namespace
// the network policy f returns for the namespace; after TenantPerNamespace.
func NamespaceNetworkPolicy(f func(namespace string) *api.TenantNetworkPolicy) ProviderOption {
	return func(p *Provider) { p.tenants.policyFor = f }
}

// EnvSources gives the provider the listers it resolves the pods' env
// references with (ConfigMaps, Secrets, Services) and the resources a
// container without limits may use (resourceFieldRef). Without it, a pod
// with such references is refused.
func EnvSources(cms corev1listers.ConfigMapLister, secrets corev1listers.SecretLister, svcs corev1listers.ServiceLister, allocatable corev1.ResourceList) ProviderOption {
	return func(p *Provider) {
		p.env.configMaps, p.env.secrets, p.env.services, p.env.allocatable = cms, secrets, svcs, allocatable
	}
}

// Claims gives the provider the listers a persistentVolumeClaim volume
// maps to a Kanga volume through (volumes.go). Without it, a pod with such
// a volume is refused.
func Claims(claims corev1listers.PersistentVolumeClaimLister, volumes corev1listers.PersistentVolumeLister) ProviderOption {
	return func(p *Provider) { p.env.claims, p.env.volumes = claims, volumes }
}

// Events gives the provider a recorder for the events it records on pods.
func Events(r record.EventRecorder) ProviderOption {
	return func(p *Provider) { p.env.recorder = r }
}

// NewProvider returns a provider for node that creates instances with c
// (and so in c's tenant, unless TenantPerNamespace says otherwise). pods
// is the lister of the pods bound to node; hostIP is the address the pods
// report as their host's.
func NewProvider(c *client.Client, node, hostIP string, pods corev1listers.PodLister, log *slog.Logger, opts ...ProviderOption) *Provider {
	p := &Provider{
		tenants:  newTenancy(c, false, ""),
		node:     node,
		hostIP:   hostIP,
		pods:     pods,
		interval: time.Second,
		log:      log,
		known:    map[string]*corev1.Pod{},
		refused:  map[string]*corev1.Pod{},
		stopping: map[string]bool{},
		sent:     map[string]corev1.PodStatus{},
		cpu:      map[string]cpuSample{},
		written:  map[string][32]byte{},
	}
	p.env.hostIP = hostIP
	for _, o := range opts {
		o(p)
	}
	return p
}

func podKey(namespace, name string) string { return namespace + "/" + name }

// vkError translates a Kanga error into the classes virtual-kubelet's pod
// controller understands.
func vkError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, errdefs.ErrNotFound):
		return vkerrdefs.AsNotFound(err)
	case errors.Is(err, errdefs.ErrInvalidArgument):
		return vkerrdefs.AsInvalidInput(err)
	}
	return err
}

// CreatePod creates the pod's instance. A pod Kanga cannot run is refused
// with the reason, which the pod controller records as an event and as the
// pod's status message.
func (p *Provider) CreatePod(ctx context.Context, pod *corev1.Pod) error {
	spec, objs, err := instanceSpec(pod, p.node, &p.env)
	if errors.Is(err, errEnvSource) {
		// Retried by the pod controller, with an event: the ConfigMap,
		// Secret or claim may come.
		return err
	}
	if err != nil {
		return p.refuse(ctx, pod, err)
	}
	name := InstanceName(pod.Namespace, pod.Name)
	kanga, err := p.tenants.ensure(ctx, pod.Namespace)
	if err != nil {
		return err
	}
	// A busy server (429) is retried by the client after its Retry-After,
	// within ctx; what is still refused goes back to the pod controller,
	// which retries the pod with its own backoff.
	cctx := client.WithRetryObserver(ctx, func(r client.Retry) {
		p.log.Info("the server is busy; retrying the create", "pod", podKey(pod.Namespace, pod.Name), "attempt", r.Attempt, "wait", r.Wait)
	})
	// A claim mapped to a Kanga volume that is not there (yet) keeps the
	// pod waiting, as an unbound claim does, rather than refused.
	for i, v := range spec.Volumes {
		if v.PersistentVolume == nil {
			continue
		}
		if _, err := kanga.GetVolume(ctx, v.PersistentVolume.Name); errors.Is(err, errdefs.ErrNotFound) {
			p.env.warn(pod, reasonFailedMount, "spec.volumes[%d] %s: Kanga volume %q does not exist in the namespace's tenant: create it (kanga volume create %s --size ...)",
				i, v.Name, v.PersistentVolume.Name, v.PersistentVolume.Name)
			return fmt.Errorf("spec.volumes[%d] %s: Kanga volume %q not found: %w", i, v.Name, v.PersistentVolume.Name, errEnvSource)
		}
	}
	// The objects of its volumes first: the API checks that they exist.
	if err := p.writeObjects(ctx, kanga, objs); err != nil {
		if errors.Is(err, errdefs.ErrInvalidArgument) {
			return p.refuse(ctx, pod, err)
		}
		return vkError(err)
	}
	labels, annotations := InstanceMetadata(pod)
	_, err = kanga.CreateInstance(cctx, api.CreateInstanceRequest{Name: name, Labels: labels, Annotations: annotations, Spec: spec})
	if errors.Is(err, errdefs.ErrAlreadyExists) {
		// Created before a restart, or a retry after a lost answer: adopt
		// it if it is this pod's, wait for it to go if it is a previous
		// pod's of the same name.
		inst, gerr := kanga.GetInstance(ctx, name)
		if gerr != nil {
			return vkError(gerr)
		}
		if uid := instanceEnv(&inst, EnvPodUID); uid != string(pod.UID) {
			// A pod of the same name was deleted and re-created while
			// this node was not watching: the instance is the old pod's.
			// Remove it; the controller retries the create.
			if !inst.DeletionRequested {
				if derr := kanga.DeleteInstance(ctx, name, true); derr != nil && !errors.Is(derr, errdefs.ErrNotFound) {
					return fmt.Errorf("delete instance %s of an earlier pod %s/%s: %w", name, pod.Namespace, pod.Name, derr)
				}
			}
			return fmt.Errorf("instance %s still belongs to an earlier pod %s/%s (uid %s); it is being deleted: %w", name, pod.Namespace, pod.Name, uid, errdefs.ErrUnavailable)
		}
		err = nil
	}
	if errors.Is(err, errdefs.ErrInvalidArgument) {
		return p.refuse(ctx, pod, fmt.Errorf("create instance %s for pod %s/%s: %w", name, pod.Namespace, pod.Name, err))
	}
	if err != nil {
		return vkError(fmt.Errorf("create instance %s for pod %s/%s: %w", name, pod.Namespace, pod.Name, err))
	}
	p.log.Info("created instance", "pod", podKey(pod.Namespace, pod.Name), "instance", name)
	p.mu.Lock()
	p.known[podKey(pod.Namespace, pod.Name)] = pod.DeepCopy()
	p.mu.Unlock()
	return nil
}

// refuse records a pod that Kanga will never run as Failed, whatever its
// restart policy, as a kubelet fails a pod it cannot admit: virtual-kubelet
// alone would leave an Always or OnFailure pod Pending for ever, and its
// clients waiting out their timeouts. The error still goes back to the pod
// controller, which records it as a Warning event; GetPod then returns the
// failed pod, so the controller does not create it again, and the poll
// loop reports the Failed status until the API server has it.
func (p *Provider) refuse(ctx context.Context, pod *corev1.Pod, err error) error {
	if derr := p.deleteObjects(ctx, pod); derr != nil {
		p.log.Warn("deleting the volume objects of a refused pod failed; collected later", "pod", podKey(pod.Namespace, pod.Name), "err", derr)
	}
	failed := pod.DeepCopy()
	failed.Status = corev1.PodStatus{
		Phase:   corev1.PodFailed,
		Reason:  ReasonRefused,
		Message: err.Error(),
		HostIP:  p.hostIP,
	}
	if !pod.CreationTimestamp.IsZero() {
		failed.Status.StartTime = &pod.CreationTimestamp
	}
	for _, c := range pod.Spec.Containers {
		failed.Status.ContainerStatuses = append(failed.Status.ContainerStatuses, corev1.ContainerStatus{
			Name:  c.Name,
			Image: c.Image,
			State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: ReasonRefused, Message: err.Error()}},
		})
	}
	p.mu.Lock()
	p.refused[podKey(pod.Namespace, pod.Name)] = failed
	p.mu.Unlock()
	p.log.Info("refused pod", "pod", podKey(pod.Namespace, pod.Name), "err", err)
	return vkError(err)
}

// ReasonRefused is the reason of a pod that Kanga cannot run.
const ReasonRefused = "KangaRefused"

// UpdatePod records the pod: Kanga instances are immutable and the fields
// Kubernetes lets change on a running pod (labels, annotations, the
// deletion grace period, an image) are not applied to the instance.
func (p *Provider) UpdatePod(ctx context.Context, pod *corev1.Pod) error {
	p.mu.Lock()
	p.known[podKey(pod.Namespace, pod.Name)] = pod.DeepCopy()
	p.mu.Unlock()
	return nil
}

// DeletePod ends the pod as a kubelet would. A graceful deletion of a
// running pod stops its instance with the pod's grace period (the stop
// signal, SIGKILL after it) and keeps reporting its status: once every
// container has ended, the poll deletes the instance and reports the
// final status, on which the pod controller removes the pod. Otherwise it force-deletes the instance and reports
// every container terminated, which lets the pod controller remove the
// pod at once.
func (p *Provider) DeletePod(ctx context.Context, pod *corev1.Pod) error {
	name := InstanceName(pod.Namespace, pod.Name)
	if g := pod.DeletionGracePeriodSeconds; g != nil && *g > 0 {
		c := p.tenants.client(pod.Namespace)
		inst, err := c.GetInstance(ctx, name)
		if err == nil && !inst.Status.Phase.Terminal() && !inst.StopRequested && !inst.DeletionRequested && inst.Status.Phase != api.PhasePending {
			// The stop call returns once the instance has stopped, which
			// may take the whole grace period: it runs on its own rather
			// than hold one of the pod controller's workers, and the pod
			// is marked first, as the poll may see the instance stopped
			// before the call returns. Should it fail, the pod controller
			// force-deletes the pod after its grace period and DeletePod
			// then deletes the instance.
			key := podKey(pod.Namespace, pod.Name)
			p.mu.Lock()
			p.stopping[key] = true
			p.mu.Unlock()
			p.log.Info("stopping instance", "pod", key, "instance", name, "grace", *g)
			grace := time.Duration(*g) * time.Second
			go func() {
				sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), grace+time.Minute)
				defer cancel()
				if _, err := c.StopInstance(sctx, name, grace); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
					p.log.Warn("stopping the instance of a deleted pod failed", "pod", key, "instance", name, "err", err)
				}
			}()
			return nil
		}
	}
	if err := p.tenants.client(pod.Namespace).DeleteInstance(ctx, name, true); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
		return fmt.Errorf("delete instance %s of pod %s/%s: %w", name, pod.Namespace, pod.Name, err)
	}
	p.log.Info("deleted instance", "pod", podKey(pod.Namespace, pod.Name), "instance", name)
	if err := p.deleteObjects(ctx, pod); err != nil {
		p.log.Warn("deleting the volume objects of a deleted pod failed; collected later", "pod", podKey(pod.Namespace, pod.Name), "err", err)
	}
	key := podKey(pod.Namespace, pod.Name)
	p.mu.Lock()
	delete(p.known, key)
	delete(p.refused, key)
	delete(p.stopping, key)
	delete(p.sent, key)
	delete(p.cpu, name)
	notify := p.notify
	p.mu.Unlock()
	if notify != nil {
		done := pod.DeepCopy()
		done.Status = deletedStatus(pod, time.Now())
		notify(done)
	}
	return nil
}

// GetPod returns the pod with its status read from Kanga, or a NotFound
// error when it has no instance.
func (p *Provider) GetPod(ctx context.Context, namespace, name string) (*corev1.Pod, error) {
	if pod := p.refusedPod(namespace, name); pod != nil {
		return pod, nil
	}
	inst, err := p.tenants.client(namespace).GetInstance(ctx, InstanceName(namespace, name))
	if err != nil {
		return nil, vkError(err)
	}
	if node := instanceEnv(&inst, EnvNode); node != p.node {
		return nil, vkerrdefs.NotFoundf("pod %s/%s: instance %s belongs to virtual node %q", namespace, name, inst.Name, node)
	}
	if lp, err := p.pods.Pods(namespace).Get(name); err == nil && string(lp.UID) != instanceEnv(&inst, EnvPodUID) {
		// The instance is an earlier pod's of the same name.
		return nil, vkerrdefs.NotFoundf("pod %s/%s: instance %s belongs to an earlier pod", namespace, name, inst.Name)
	}
	pod := p.podOf(&inst)
	if p.stoppedAfterDelete(podKey(namespace, name), &inst) {
		p.deleteStopped(ctx, namespace, name)
	}
	return pod, nil
}

// refusedPod returns the refused pod namespace/name if it is the pod the
// API server has now (not an earlier pod of the same name).
func (p *Provider) refusedPod(namespace, name string) *corev1.Pod {
	key := podKey(namespace, name)
	p.mu.Lock()
	pod := p.refused[key]
	p.mu.Unlock()
	if pod == nil {
		return nil
	}
	if lp, err := p.pods.Pods(namespace).Get(name); err == nil && lp.UID != pod.UID {
		p.mu.Lock()
		if p.refused[key] == pod {
			delete(p.refused, key)
		}
		p.mu.Unlock()
		return nil
	}
	return pod.DeepCopy()
}

// GetPodStatus returns the status part of GetPod.
func (p *Provider) GetPodStatus(ctx context.Context, namespace, name string) (*corev1.PodStatus, error) {
	pod, err := p.GetPod(ctx, namespace, name)
	if err != nil {
		return nil, err
	}
	return &pod.Status, nil
}

// GetPods returns a pod for each instance this node created, including
// instances whose pod is gone: the pod controller deletes those.
func (p *Provider) GetPods(ctx context.Context) ([]*corev1.Pod, error) {
	insts, err := p.tenants.listInstances(ctx, nil)
	if err != nil {
		return nil, err
	}
	var pods []*corev1.Pod
	for i := range insts {
		// One being deleted, or stopped for its pod's graceful deletion,
		// is no longer the node's running pod (virtual-kubelet's suite
		// wants it gone from the list within a second of the deletion,
		// whatever the grace period). One stopped by an earlier run of
		// the node is listed: the pod controller deletes it if its pod
		// is gone.
		if instanceEnv(&insts[i], EnvNode) != p.node || insts[i].DeletionRequested {
			continue
		}
		p.mu.Lock()
		stopping := p.stopping[podKey(instanceEnv(&insts[i], EnvNamespace), instanceEnv(&insts[i], EnvPodName))]
		p.mu.Unlock()
		if stopping {
			continue
		}
		pods = append(pods, p.podOf(&insts[i]))
	}
	return pods, nil
}

// podOf returns the pod of an instance of this node, with its status: the
// known pod, the API's, or, for an instance whose pod is gone, a stub that
// carries enough for the pod controller to delete it.
func (p *Provider) podOf(inst *api.Instance) *corev1.Pod {
	ns, name := instanceEnv(inst, EnvNamespace), instanceEnv(inst, EnvPodName)
	p.mu.Lock()
	known := p.known[podKey(ns, name)]
	p.mu.Unlock()
	var pod *corev1.Pod
	switch {
	case known != nil:
		pod = known.DeepCopy()
	default:
		if lp, err := p.pods.Pods(ns).Get(name); err == nil && string(lp.UID) == instanceEnv(inst, EnvPodUID) {
			pod = lp.DeepCopy()
			// Adopt it (after a restart): the poll loop reports the
			// status of known pods only.
			p.mu.Lock()
			if p.known[podKey(ns, name)] == nil && !inst.DeletionRequested {
				p.known[podKey(ns, name)] = pod.DeepCopy()
			}
			p.mu.Unlock()
		} else {
			pod = stubPod(inst, ns, name)
		}
	}
	pod.Status = p.status(pod, inst)
	return pod
}

// status is the pod's status from its instance, with its readiness gates'
// conditions as the API server has them (their controllers set them; the
// node's status update writes the whole status, so it carries them over).
func (p *Provider) status(pod *corev1.Pod, inst *api.Instance) corev1.PodStatus {
	st := PodStatus(pod, inst, p.hostIP)
	if len(pod.Spec.ReadinessGates) == 0 {
		return st
	}
	var live []corev1.PodCondition
	if lp, err := p.pods.Pods(pod.Namespace).Get(pod.Name); err == nil && lp.UID == pod.UID {
		live = lp.Status.Conditions
	}
	ApplyReadinessGates(&st, pod, live)
	return st
}

func stubPod(inst *api.Instance, ns, name string) *corev1.Pod {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Namespace:         ns,
			Name:              name,
			UID:               types.UID(instanceEnv(inst, EnvPodUID)),
			CreationTimestamp: metav1.NewTime(inst.CreatedAt),
		},
	}
	for _, c := range inst.Spec.Containers {
		pod.Spec.Containers = append(pod.Spec.Containers, corev1.Container{Name: c.Name, Image: c.Image})
	}
	for _, c := range inst.Spec.InitContainers {
		pod.Spec.InitContainers = append(pod.Spec.InitContainers, corev1.Container{Name: c.Name, Image: c.Image})
	}
	return pod
}

// instanceEnv returns the value of a marker variable of the instance's
// first container.
func instanceEnv(inst *api.Instance, key string) string {
	if len(inst.Spec.Containers) == 0 {
		return ""
	}
	for _, e := range inst.Spec.Containers[0].Env {
		if e.Name == key {
			return e.Value
		}
	}
	return ""
}

// NotifyPods registers the pod controller's callback and starts the loop
// that reports status changes. Kanga has no watch on instance lists, so the
// loop polls once per interval: one list call for all pods.
func (p *Provider) NotifyPods(ctx context.Context, cb func(*corev1.Pod)) {
	p.mu.Lock()
	p.notify = cb
	p.mu.Unlock()
	go p.pollLoop(ctx)
}

func (p *Provider) pollLoop(ctx context.Context) {
	t := time.NewTicker(p.interval)
	defer t.Stop()
	for {
		if err := p.poll(ctx); err != nil && ctx.Err() == nil {
			p.log.Warn("poll instances", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// collectEvery is how many polls apart leftover volume objects are
// collected (the first poll collects too).
const collectEvery = 300

// poll reads every instance once and notifies the pods whose status
// changed since the last report.
func (p *Provider) poll(ctx context.Context) error {
	p.mu.Lock()
	known := make(map[string]*corev1.Pod, len(p.known))
	namespaces := map[string]bool{}
	for k, v := range p.known {
		known[k] = v
		namespaces[v.Namespace] = true
	}
	p.mu.Unlock()
	// One list call per tenant of the known pods' namespaces.
	insts, err := p.tenants.listInstances(ctx, namespaces)
	if err != nil {
		return err
	}
	byName := make(map[string]*api.Instance, len(insts))
	for i := range insts {
		byName[insts[i].Name] = &insts[i]
	}

	p.reportRefused()
	p.syncObjects(ctx, known, byName)
	p.mu.Lock()
	p.polls++
	collect := p.polls%collectEvery == 1
	p.mu.Unlock()
	if collect {
		if err := p.collectObjects(ctx); err != nil && ctx.Err() == nil {
			p.log.Warn("collecting the objects of gone pods' volumes failed", "err", err)
		}
	}
	for key, pod := range known {
		var status corev1.PodStatus
		if inst, ok := byName[InstanceName(pod.Namespace, pod.Name)]; ok {
			status = p.status(pod, inst)
			if p.stoppedAfterDelete(key, inst) {
				if p.deleteStopped(ctx, pod.Namespace, pod.Name) {
					p.mu.Lock()
					notify := p.notify
					p.mu.Unlock()
					out := pod.DeepCopy()
					out.Status = status
					notify(out)
				}
				continue
			}
		} else {
			// Someone removed the instance behind the node's back: say so
			// rather than leave the pod Running forever.
			status = deletedStatus(pod, time.Now())
			status.Phase = corev1.PodFailed
			status.Reason = "KangaInstanceMissing"
			status.Message = "the Kanga instance of this pod no longer exists"
		}
		p.mu.Lock()
		_, still := p.known[key]
		last, sent := p.sent[key]
		if !still || (sent && equality.Semantic.DeepEqual(last, status)) || (sent && last.Reason == "KangaInstanceMissing") {
			p.mu.Unlock()
			continue
		}
		p.sent[key] = status
		notify := p.notify
		p.mu.Unlock()
		out := pod.DeepCopy()
		out.Status = status
		notify(out)
	}
	return nil
}

// stoppedAfterDelete reports whether inst is the instance of a pod whose
// graceful deletion stopped it (DeletePod), and it has stopped.
func (p *Provider) stoppedAfterDelete(key string, inst *api.Instance) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stopping[key] && inst.Status.Phase.Terminal()
}

// deleteStopped ends the graceful deletion of pod namespace/name, whose
// instance has stopped: it deletes the instance. Its callers then report
// the pod's final status, so that no list shows the instance once the pod
// is gone (whichever of the poll and GetPod saw it stopped first).
func (p *Provider) deleteStopped(ctx context.Context, namespace, podName string) bool {
	name := InstanceName(namespace, podName)
	if err := p.tenants.client(namespace).DeleteInstance(ctx, name, true); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
		p.log.Warn("deleting a stopped instance failed; retried on the next poll", "instance", name, "err", err)
		return false
	}
	key := podKey(namespace, podName)
	p.log.Info("deleted instance", "pod", key, "instance", name)
	p.mu.Lock()
	pod := p.known[key]
	p.mu.Unlock()
	if pod != nil {
		if err := p.deleteObjects(ctx, pod); err != nil {
			p.log.Warn("deleting the volume objects of a deleted pod failed; collected later", "pod", key, "err", err)
		}
	}
	p.mu.Lock()
	delete(p.known, key)
	delete(p.sent, key)
	delete(p.stopping, key)
	delete(p.cpu, name)
	p.mu.Unlock()
	return true
}

// reportRefused notifies the Failed status of each refused pod whose
// status in the API server is not Failed yet. It repeats on every poll
// rather than once: the pod controller overwrites the status after a
// failed create (Pending, ProviderFailed), possibly after this report.
func (p *Provider) reportRefused() {
	p.mu.Lock()
	var out []*corev1.Pod
	for _, pod := range p.refused {
		out = append(out, pod)
	}
	notify := p.notify
	p.mu.Unlock()
	for _, pod := range out {
		lp, err := p.pods.Pods(pod.Namespace).Get(pod.Name)
		if err != nil || lp.UID != pod.UID || lp.Status.Phase == corev1.PodFailed {
			continue
		}
		if notify != nil {
			notify(pod.DeepCopy())
		}
	}
}

// GetContainerLogs returns a container's output. Kanga keeps one log per
// container in which each restart appends: without --previous it holds
// every run, with it only the run before the latest restart. --tail and
// --limit-bytes are honoured; --timestamps and --since are not available
// (the log stores no times).
func (p *Provider) GetContainerLogs(ctx context.Context, namespace, podName, containerName string, opts vkapi.ContainerLogOpts) (io.ReadCloser, error) {
	rc, err := p.tenants.client(namespace).Logs(ctx, InstanceName(namespace, podName), client.LogsOptions{
		Follow:    opts.Follow && !opts.Previous,
		Container: containerName,
		Previous:  opts.Previous,
	})
	if err != nil {
		if opts.Previous && errors.Is(err, errdefs.ErrNotFound) {
			// A bad request, as from a kubelet: the API server hands
			// its message on to kubectl, while it hides a 404's.
			return nil, vkerrdefs.AsInvalidInput(err)
		}
		return nil, vkError(err)
	}
	if opts.Tail > 0 && !opts.Follow {
		defer rc.Close()
		data, err := tail(rc, opts.Tail)
		if err != nil {
			return nil, err
		}
		rc = io.NopCloser(bytes.NewReader(data))
	}
	if opts.LimitBytes > 0 {
		rc = limitedReadCloser{io.LimitReader(rc, int64(opts.LimitBytes)), rc}
	}
	return rc, nil
}

type limitedReadCloser struct {
	io.Reader
	io.Closer
}

// tail returns the last n lines of r.
func tail(r io.Reader, n int) ([]byte, error) {
	lines := make([][]byte, 0, n)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		if len(lines) == n {
			lines = lines[1:]
		}
		lines = append(lines, append([]byte(nil), sc.Bytes()...))
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	var b bytes.Buffer
	for _, l := range lines {
		b.Write(l)
		b.WriteByte('\n')
	}
	return b.Bytes(), nil
}

// RunInContainer runs a command in a container (kubectl exec), with a
// terminal and its resizes when asked.
func (p *Provider) RunInContainer(ctx context.Context, namespace, podName, containerName string, cmd []string, attach vkapi.AttachIO) error {
	opts := client.ExecOptions{
		Container: containerName,
		Cmd:       cmd,
		TTY:       attach.TTY(),
		Stdin:     attach.Stdin(),
	}
	if w := attach.Stdout(); w != nil {
		opts.Stdout = w
		defer w.Close()
	}
	if w := attach.Stderr(); w != nil {
		opts.Stderr = w
		defer w.Close()
	}
	if rs := attach.Resize(); rs != nil {
		ch := make(chan api.TerminalSize, 1)
		opts.Resize = ch
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		go func() {
			for {
				select {
				case <-ctx.Done():
					return
				case sz, ok := <-rs:
					if !ok {
						return
					}
					select {
					case ch <- api.TerminalSize{Width: sz.Width, Height: sz.Height}:
					case <-ctx.Done():
						return
					}
				}
			}
		}()
	}
	code, err := p.tenants.client(namespace).Exec(ctx, InstanceName(namespace, podName), opts)
	if err != nil {
		return vkError(err)
	}
	if code != 0 {
		// The exec server type-asserts this exact type to report the
		// exit code to kubectl.
		return utilexec.CodeExitError{Err: fmt.Errorf("command terminated with exit code %d", code), Code: code}
	}
	return nil
}

// AttachToContainer is not supported: Kanga has no attach to a
// container's main process.
func (p *Provider) AttachToContainer(ctx context.Context, namespace, podName, containerName string, attach vkapi.AttachIO) error {
	return fmt.Errorf("attach to %s/%s: Kanga has no attach; use kubectl exec or logs -f: %w", namespace, podName, errdefs.ErrNotImplemented)
}

// PortForward connects stream to a port of the pod's instance. The
// instance's address must be routable from where the virtual node runs:
// true when it runs on a Kanga host.
func (p *Provider) PortForward(ctx context.Context, namespace, pod string, port int32, stream io.ReadWriteCloser) error {
	defer stream.Close()
	inst, err := p.tenants.client(namespace).GetInstance(ctx, InstanceName(namespace, pod))
	if err != nil {
		return vkError(err)
	}
	if inst.Status.IP == "" {
		return fmt.Errorf("port-forward to %s/%s: the instance has no address yet: %w", namespace, pod, errdefs.ErrUnavailable)
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", net.JoinHostPort(inst.Status.IP, strconv.Itoa(int(port))))
	if err != nil {
		return fmt.Errorf("port-forward to %s/%s port %d: %w", namespace, pod, port, err)
	}
	defer conn.Close()
	go func() {
		io.Copy(conn, stream)
		// Half-close: the client is done sending, the server may still
		// answer.
		if tc, ok := conn.(*net.TCPConn); ok {
			tc.CloseWrite()
		}
	}()
	done := make(chan struct{})
	go func() {
		io.Copy(stream, conn)
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
	}
	return nil
}
