package virtualnode

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/client"
	"github.com/kanga-run/kanga/errdefs"
)

// The Kanga objects of pod volumes (volumes.go): written before the
// instance, kept current by the poll, deleted with the pod, and collected
// when a pod went while the node was down.

// objectSum identifies the content written to an object, so that the poll
// writes only what changed.
func objectSum(o volumeObject) [32]byte {
	h := sha256.New()
	for _, k := range slices.Sorted(maps.Keys(o.data)) {
		fmt.Fprintf(h, "%d:%s%d:", len(k), k, len(o.data[k]))
		h.Write(o.data[k])
	}
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	return sum
}

// writeObject creates or replaces o in the tenant of kanga: it creates
// first, or, when update says the object should exist, replaces first.
func writeObject(ctx context.Context, kanga *client.Client, o volumeObject, update bool) error {
	create := func() error {
		if o.secret {
			_, err := kanga.CreateSecret(ctx, o.name, o.data)
			return err
		}
		_, err := kanga.CreateConfig(ctx, o.name, o.data)
		return err
	}
	replace := func() error {
		if o.secret {
			_, err := kanga.UpdateSecret(ctx, o.name, o.data)
			return err
		}
		_, err := kanga.UpdateConfig(ctx, o.name, o.data)
		return err
	}
	var err error
	if update {
		if err = replace(); errors.Is(err, errdefs.ErrNotFound) {
			err = create()
		}
	} else if err = create(); errors.Is(err, errdefs.ErrAlreadyExists) {
		err = replace()
	}
	if err != nil {
		kind := "config"
		if o.secret {
			kind = "secret"
		}
		return fmt.Errorf("write %s %s of volume %s: %w", kind, o.name, o.volume, err)
	}
	return nil
}

// writeObjects writes the objects of a pod's volumes before its instance
// is created.
func (p *Provider) writeObjects(ctx context.Context, kanga *client.Client, objs []volumeObject) error {
	for _, o := range objs {
		if err := writeObject(ctx, kanga, o, false); err != nil {
			return err
		}
		p.mu.Lock()
		p.written[o.name] = objectSum(o)
		p.mu.Unlock()
	}
	return nil
}

// deleteObjects deletes the objects of pod's volumes; those already gone
// are no error.
func (p *Provider) deleteObjects(ctx context.Context, pod *corev1.Pod) error {
	kanga := p.tenants.client(pod.Namespace)
	var errs []error
	for _, v := range pod.Spec.Volumes {
		obj, secret := objectVolume(v)
		if !obj {
			continue
		}
		name := volumeObjectName(p.node, pod, v.Name)
		var err error
		if secret {
			err = kanga.DeleteSecret(ctx, name)
		} else {
			err = kanga.DeleteConfig(ctx, name)
		}
		if err != nil && !errors.Is(err, errdefs.ErrNotFound) {
			errs = append(errs, fmt.Errorf("delete the object %s of volume %s: %w", name, v.Name, err))
		}
		p.mu.Lock()
		delete(p.written, name)
		p.mu.Unlock()
	}
	return errors.Join(errs...)
}

// syncObjects brings the objects of the volumes of the known pods up to
// date with their ConfigMaps, Secrets and the pods' metadata, as the
// kubelet refreshes a pod's volumes. A source missing now keeps the files
// as they are (the kubelet keeps them too); so does an itemized volume
// one of whose files has no source any more. insts are the instances, by
// name.
func (p *Provider) syncObjects(ctx context.Context, known map[string]*corev1.Pod, insts map[string]*api.Instance) {
	// No events from the poll: CreatePod reported the missing sources.
	quiet := p.env
	quiet.recorder = nil
	for _, pod := range known {
		if !hasObjectVolumes(pod) {
			continue
		}
		inst := insts[InstanceName(pod.Namespace, pod.Name)]
		if inst == nil || inst.DeletionRequested || inst.StopRequested {
			continue
		}
		if lp, err := p.pods.Pods(pod.Namespace).Get(pod.Name); err == nil && lp.UID == pod.UID {
			pod = lp // labels and annotations as they are now
		}
		vols, err := quiet.podVolumes(pod, p.node)
		if err != nil {
			continue
		}
		for _, o := range vols.objects {
			if o.itemized && !keepItems(&o, inst) {
				continue
			}
			sum := objectSum(o)
			p.mu.Lock()
			same := p.written[o.name] == sum
			p.mu.Unlock()
			if same {
				continue
			}
			if err := writeObject(ctx, p.tenants.client(pod.Namespace), o, true); err != nil {
				p.log.Warn("updating the object of a pod volume failed; retried on the next poll", "pod", podKey(pod.Namespace, pod.Name), "volume", o.volume, "err", err)
				continue
			}
			p.log.Info("updated the object of a pod volume", "pod", podKey(pod.Namespace, pod.Name), "volume", o.volume, "object", o.name)
			p.mu.Lock()
			p.written[o.name] = sum
			p.mu.Unlock()
		}
	}
}

// keepItems restricts an itemized object's data to the keys its volume in
// inst names: the instance's items were fixed at its creation, and a key
// it does not name would otherwise be a stray file. It reports false when
// one of those keys has no data now (its source went): the object is then
// left as it is.
func keepItems(o *volumeObject, inst *api.Instance) bool {
	i := slices.IndexFunc(inst.Spec.Volumes, func(v api.Volume) bool { return v.Name == o.volume })
	if i < 0 {
		return false
	}
	src := inst.Spec.Volumes[i].Config
	if src == nil {
		src = inst.Spec.Volumes[i].Secret
	}
	if src == nil {
		return false
	}
	data := make(map[string][]byte, len(src.Items))
	for _, it := range src.Items {
		v, ok := o.data[it.Key]
		if !ok {
			return false
		}
		data[it.Key] = v
	}
	o.data = data
	return true
}

func hasObjectVolumes(pod *corev1.Pod) bool {
	return slices.ContainsFunc(pod.Spec.Volumes, func(v corev1.Volume) bool { obj, _ := objectVolume(v); return obj })
}

// collectObjects deletes the objects of this node's pod volumes whose pod
// is gone: deleted while the node was down, or whose delete failed. The
// objects are listed before the pods, so that an object written after the
// listing (for a pod the lister may not show yet) is not a candidate.
func (p *Provider) collectObjects(ctx context.Context) error {
	clients, err := p.tenants.all(ctx)
	if err != nil {
		return err
	}
	prefix := objectPrefix(p.node)
	type candidate struct {
		c      *client.Client
		name   string
		secret bool
	}
	var cands []candidate
	for _, c := range clients {
		cfgs, err := c.ListConfigs(ctx)
		if errors.Is(err, errdefs.ErrNotFound) {
			continue
		}
		if err != nil {
			return err
		}
		for _, o := range cfgs {
			if strings.HasPrefix(o.Name, prefix) {
				cands = append(cands, candidate{c, o.Name, false})
			}
		}
		secs, err := c.ListSecrets(ctx)
		if err != nil && !errors.Is(err, errdefs.ErrNotFound) {
			return err
		}
		for _, o := range secs {
			if strings.HasPrefix(o.Name, prefix) {
				cands = append(cands, candidate{c, o.Name, true})
			}
		}
	}
	if len(cands) == 0 {
		return nil
	}
	pods, err := p.pods.List(labels.Everything())
	if err != nil {
		return err
	}
	want := map[string]bool{}
	for _, pod := range pods {
		for _, v := range pod.Spec.Volumes {
			want[volumeObjectName(p.node, pod, v.Name)] = true
		}
	}
	var errs []error
	for _, o := range cands {
		if want[o.name] {
			continue
		}
		if o.secret {
			err = o.c.DeleteSecret(ctx, o.name)
		} else {
			err = o.c.DeleteConfig(ctx, o.name)
		}
		if err != nil && !errors.Is(err, errdefs.ErrNotFound) {
			errs = append(errs, err)
			continue
		}
		p.log.Info("deleted the object of a gone pod's volume", "object", o.name)
		p.mu.Lock()
		delete(p.written, o.name)
		p.mu.Unlock()
	}
	return errors.Join(errs...)
}
