package virtualnode

import (
	"context"
	"time"

	dto "github.com/prometheus/client_model/go"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	statsv1alpha1 "k8s.io/kubelet/pkg/apis/stats/v1alpha1"
	"k8s.io/utils/ptr"

	"github.com/kanga-run/kanga/api"
)

// podSample is one stats sample of a pod's instance.
type podSample struct {
	namespace, name, uid string
	containers           []string
	created              time.Time
	stats                api.InstanceStats
}

// samples reads the counters of every pod this node knows. A pod whose
// instance cannot answer (not started yet, being deleted) is left out.
func (p *Provider) samples(ctx context.Context) []podSample {
	p.mu.Lock()
	var out []podSample
	for _, pod := range p.known {
		s := podSample{namespace: pod.Namespace, name: pod.Name, uid: string(pod.UID), created: pod.CreationTimestamp.Time}
		for _, c := range pod.Spec.Containers {
			s.containers = append(s.containers, c.Name)
		}
		out = append(out, s)
	}
	p.mu.Unlock()
	kept := out[:0]
	for _, s := range out {
		st, err := p.tenants.client(s.namespace).Stats(ctx, InstanceName(s.namespace, s.name))
		if err != nil {
			continue
		}
		s.stats = st
		kept = append(kept, s)
	}
	return kept
}

// nanoCores is the CPU rate of an instance since its previous sample.
func (p *Provider) nanoCores(instance string, st api.InstanceStats) *uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	prev, ok := p.cpu[instance]
	p.cpu[instance] = cpuSample{at: st.Time, nanos: st.CPUUsageNanos}
	if !ok || !st.Time.After(prev.at) || st.CPUUsageNanos < prev.nanos {
		return nil
	}
	rate := float64(st.CPUUsageNanos-prev.nanos) / st.Time.Sub(prev.at).Seconds()
	return ptr.To(uint64(rate))
}

// GetStatsSummary is the kubelet's /stats/summary, from the instances'
// cgroup and interface counters: each pod's, and each of its running
// containers' from the container's own cgroup.
func (p *Provider) GetStatsSummary(ctx context.Context) (*statsv1alpha1.Summary, error) {
	now := metav1.Now()
	sum := &statsv1alpha1.Summary{Node: statsv1alpha1.NodeStats{NodeName: p.node, StartTime: now}}
	var nodeCPU, nodeMem uint64
	for _, s := range p.samples(ctx) {
		at := metav1.NewTime(s.stats.Time)
		cpu := &statsv1alpha1.CPUStats{
			Time:                 at,
			UsageCoreNanoSeconds: ptr.To(s.stats.CPUUsageNanos),
			UsageNanoCores:       p.nanoCores(InstanceName(s.namespace, s.name), s.stats),
		}
		mem := &statsv1alpha1.MemoryStats{
			Time:            at,
			UsageBytes:      ptr.To(s.stats.MemoryUsage),
			WorkingSetBytes: ptr.To(s.stats.MemoryUsage),
		}
		if s.stats.MemoryLimit > s.stats.MemoryUsage {
			mem.AvailableBytes = ptr.To(s.stats.MemoryLimit - s.stats.MemoryUsage)
		}
		nodeCPU += s.stats.CPUUsageNanos
		nodeMem += s.stats.MemoryUsage
		var ctrs []statsv1alpha1.ContainerStats
		for _, c := range s.stats.Containers {
			ctrs = append(ctrs, statsv1alpha1.ContainerStats{
				Name:      c.Name,
				StartTime: metav1.NewTime(s.created),
				CPU:       &statsv1alpha1.CPUStats{Time: at, UsageCoreNanoSeconds: ptr.To(c.CPUUsageNanos)},
				Memory:    &statsv1alpha1.MemoryStats{Time: at, UsageBytes: ptr.To(c.MemoryUsage), WorkingSetBytes: ptr.To(c.MemoryWorkingSet)},
			})
		}
		sum.Pods = append(sum.Pods, statsv1alpha1.PodStats{
			Containers: ctrs,
			PodRef:     statsv1alpha1.PodReference{Name: s.name, Namespace: s.namespace, UID: s.uid},
			StartTime:  metav1.NewTime(s.created),
			CPU:        cpu,
			Memory:     mem,
			Network: &statsv1alpha1.NetworkStats{
				Time: at,
				InterfaceStats: statsv1alpha1.InterfaceStats{
					Name:    "eth0",
					RxBytes: ptr.To(s.stats.NetRxBytes),
					TxBytes: ptr.To(s.stats.NetTxBytes),
				},
			},
			ProcessStats: &statsv1alpha1.ProcessStats{ProcessCount: ptr.To(s.stats.Pids)},
		})
	}
	sum.Node.CPU = &statsv1alpha1.CPUStats{Time: now, UsageCoreNanoSeconds: ptr.To(nodeCPU)}
	sum.Node.Memory = &statsv1alpha1.MemoryStats{Time: now, UsageBytes: ptr.To(nodeMem), WorkingSetBytes: ptr.To(nodeMem)}
	return sum, nil
}

// GetMetricsResource is the kubelet's /metrics/resource, which
// metrics-server (and so kubectl top and the HPA) scrapes.
func (p *Provider) GetMetricsResource(ctx context.Context) ([]*dto.MetricFamily, error) {
	gauge := dto.MetricType_GAUGE
	counter := dto.MetricType_COUNTER
	fam := func(name, help string, t dto.MetricType) *dto.MetricFamily {
		return &dto.MetricFamily{Name: ptr.To(name), Help: ptr.To(help), Type: &t}
	}
	podCPU := fam("pod_cpu_usage_seconds_total", "Cumulative cpu time consumed by the pod in core-seconds", counter)
	podMem := fam("pod_memory_working_set_bytes", "Current working set of the pod in bytes", gauge)
	ctrCPU := fam("container_cpu_usage_seconds_total", "Cumulative cpu time consumed by the container in core-seconds", counter)
	ctrMem := fam("container_memory_working_set_bytes", "Current working set of the container in bytes", gauge)
	nodeCPU := fam("node_cpu_usage_seconds_total", "Cumulative cpu time consumed by the node in core-seconds", counter)
	nodeMem := fam("node_memory_working_set_bytes", "Current working set of the node in bytes", gauge)
	label := func(kv ...string) []*dto.LabelPair {
		var ls []*dto.LabelPair
		for i := 0; i+1 < len(kv); i += 2 {
			ls = append(ls, &dto.LabelPair{Name: ptr.To(kv[i]), Value: ptr.To(kv[i+1])})
		}
		return ls
	}
	var totalCPU, totalMem float64
	for _, s := range p.samples(ctx) {
		ts := ptr.To(s.stats.Time.UnixMilli())
		cpu := float64(s.stats.CPUUsageNanos) / 1e9
		mem := float64(s.stats.MemoryUsage)
		totalCPU += cpu
		totalMem += mem
		podCPU.Metric = append(podCPU.Metric, &dto.Metric{Label: label("namespace", s.namespace, "pod", s.name), Counter: &dto.Counter{Value: ptr.To(cpu)}, TimestampMs: ts})
		podMem.Metric = append(podMem.Metric, &dto.Metric{Label: label("namespace", s.namespace, "pod", s.name), Gauge: &dto.Gauge{Value: ptr.To(mem)}, TimestampMs: ts})
		// Each running container from its own cgroup.
		for _, c := range s.stats.Containers {
			l := label("container", c.Name, "namespace", s.namespace, "pod", s.name)
			ctrCPU.Metric = append(ctrCPU.Metric, &dto.Metric{Label: l, Counter: &dto.Counter{Value: ptr.To(float64(c.CPUUsageNanos) / 1e9)}, TimestampMs: ts})
			ctrMem.Metric = append(ctrMem.Metric, &dto.Metric{Label: l, Gauge: &dto.Gauge{Value: ptr.To(float64(c.MemoryWorkingSet))}, TimestampMs: ts})
		}
	}
	ts := ptr.To(time.Now().UnixMilli())
	nodeCPU.Metric = []*dto.Metric{{Counter: &dto.Counter{Value: ptr.To(totalCPU)}, TimestampMs: ts}}
	nodeMem.Metric = []*dto.Metric{{Gauge: &dto.Gauge{Value: ptr.To(totalMem)}, TimestampMs: ts}}
	return []*dto.MetricFamily{nodeCPU, nodeMem, podCPU, podMem, ctrCPU, ctrMem}, nil
}
