package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/kanga-run/kanga/errdefs"
	"github.com/kanga-run/kanga/internal/hostcontract"
	"github.com/kanga-run/kanga/internal/model"
)

// InstanceFiles answers the host of instance name (of the tenant in ctx,
// with uid) what it needs of the secrets and configs the instance uses:
// its volumes' files and its containers' env from secrets
// (model.ProjectInstance), from the objects' current data. An instance
// that is not placed on host, or has another uid, is NotFound: a host
// learns the secrets of its own instances only, and nothing of the
// others.
func (s *Store) InstanceFiles(ctx context.Context, host, name, uid string) (hostcontract.InstanceFiles, error) {
	inst, err := s.GetInstance(ctx, name)
	if err != nil {
		return hostcontract.InstanceFiles{}, err
	}
	if inst.Status.Host != host || inst.UID != uid {
		return hostcontract.InstanceFiles{}, fmt.Errorf("instance %q (uid %s) is not placed on host %q: %w", name, uid, host, errdefs.ErrNotFound)
	}
	objs := model.ObjectData{Secrets: map[string]map[string][]byte{}, Configs: map[string]map[string][]byte{}}
	for _, ref := range model.ObjectRefs(&inst.Spec) {
		k, m := configKind, objs.Configs
		if ref.Kind == model.KindSecret {
			k, m = secretKind, objs.Secrets
		}
		if _, ok := m[ref.Name]; ok {
			continue
		}
		o, err := s.getObject(ctx, k, ref.Name)
		if errors.Is(err, errdefs.ErrNotFound) {
			continue // deleted since: ProjectInstance says which field needs it
		}
		if err != nil {
			return hostcontract.InstanceFiles{}, err
		}
		m[ref.Name] = o.data
		if o.data == nil {
			m[ref.Name] = map[string][]byte{}
		}
	}
	vols, env, err := model.ProjectInstance(&inst.Spec, objs)
	if err != nil {
		return hostcontract.InstanceFiles{}, fmt.Errorf("instance %q: %w", name, err)
	}
	out := hostcontract.InstanceFiles{Env: env}
	for _, v := range vols {
		hv := hostcontract.VolumeFiles{Name: v.Name, Secret: v.Secret}
		for _, f := range v.Files {
			hv.Files = append(hv.Files, hostcontract.File{Path: f.Path, Mode: f.Mode, Data: f.Data})
		}
		out.Volumes = append(out.Volumes, hv)
	}
	return out, nil
}
