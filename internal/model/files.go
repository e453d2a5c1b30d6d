package model

import (
	"cmp"
	"fmt"
	"maps"
	"path"
	"slices"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
	"github.com/kanga-run/kanga/internal/expansion"
)

// DefaultFileMode is the mode of a secret's or config's files when the
// volume names none, as in Kubernetes.
const DefaultFileMode = 0o644

// ProjectedFile is one file of a secret or config volume as a host writes
// it under the volume's directory (on tmpfs, for secrets): what the
// host's files step needs, and all it needs, to mount the volume.
type ProjectedFile struct {
	// Path is relative to the mount point, cleaned, without "..".
	Path string
	Mode uint32
	Data []byte
}

// ProjectVolume lays out the files of a secret or config volume from the
// object's current data: every key a file named after it, or only the
// items, at their paths and modes. It is the control plane's to call when
// a host asks for an instance's files, so that the values travel to that
// host only, over its link, and never sit in the instance record. A key
// an item names that the object no longer has is a FailedPrecondition
// (the object changed after the instance was created).
func ProjectVolume(src *api.ObjectVolumeSource, data map[string][]byte) ([]ProjectedFile, error) {
	mode := uint32(DefaultFileMode)
	if src.DefaultMode != nil {
		mode = uint32(*src.DefaultMode)
	}
	var out []ProjectedFile
	if len(src.Items) == 0 {
		for _, k := range slices.Sorted(maps.Keys(data)) {
			out = append(out, ProjectedFile{Path: k, Mode: mode, Data: data[k]})
		}
		return out, nil
	}
	for _, it := range src.Items {
		v, ok := data[it.Key]
		if !ok {
			return nil, fmt.Errorf("volume of %q: key %q is no longer in it: %w", src.Name, it.Key, errdefs.ErrFailedPrecondition)
		}
		m := mode
		if it.Mode != nil {
			m = uint32(*it.Mode)
		}
		out = append(out, ProjectedFile{Path: path.Clean(it.Path), Mode: m, Data: v})
	}
	slices.SortFunc(out, func(a, b ProjectedFile) int { return cmp.Compare(a.Path, b.Path) })
	return out, nil
}

// ObjectData is the data of the secrets and configs an instance refers
// to, by object name and then key.
type ObjectData struct {
	Secrets map[string]map[string][]byte
	Configs map[string]map[string][]byte
}

// ProjectedVolume is the files of one secret or config volume.
type ProjectedVolume struct {
	Name   string
	Secret bool
	Files  []ProjectedFile
}

// EnvFromSecrets reports whether container c takes env from secrets. Such
// a container's env is resolved on its host at start (ResolveEnv, from
// what the control plane answers that host), never at create: the
// instance record carries the spec to the host and sits in the store in
// the clear.
func EnvFromSecrets(c *api.ContainerSpec) bool {
	for _, e := range c.EnvFrom {
		if e.SecretRef != nil {
			return true
		}
	}
	for _, e := range c.Env {
		if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
			return true
		}
	}
	return false
}

// ResolveEnv is container c's env with its references to secrets and
// configs resolved from objs, as Kubernetes resolves it at container
// start: the variables of envFrom in order (a later source wins over an
// earlier one), then the container's own env, which wins over both. f
// names the container in errors. An object or key missing from objs is a
// FailedPrecondition (it was there when the instance was created); errors
// name keys, never values.
func ResolveEnv(f string, c *api.ContainerSpec, objs ObjectData) ([]api.EnvVar, error) {
	var out []api.EnvVar
	at := map[string]int{}
	set := func(name, value string) {
		if i, ok := at[name]; ok {
			out[i].Value = value
			return
		}
		at[name] = len(out)
		out = append(out, api.EnvVar{Name: name, Value: value})
	}
	for j, e := range c.EnvFrom {
		kind, name, all := "config", "", objs.Configs
		if e.SecretRef != nil {
			kind, name, all = "secret", e.SecretRef.Name, objs.Secrets
		} else if e.ConfigMapRef != nil {
			name = e.ConfigMapRef.Name
		}
		data, ok := all[name]
		if !ok {
			return nil, fmt.Errorf("%s.envFrom[%d]: %s %q is gone: %w", f, j, kind, name, errdefs.ErrFailedPrecondition)
		}
		for _, k := range slices.Sorted(maps.Keys(data)) {
			n := e.Prefix + k
			if err := ValidateEnvName(n); err != nil {
				return nil, fmt.Errorf("%s.envFrom[%d]: key %q of %s %q: %w", f, j, k, kind, name, err)
			}
			set(n, string(data[k]))
		}
	}
	var fields []int
	for j, e := range c.Env {
		if e.ValueFrom == nil {
			set(e.Name, e.Value)
			continue
		}
		if e.ValueFrom.FieldRef != nil {
			// The host resolves it at start (ResolveFields).
			set(e.Name, "")
			fields = append(fields, j)
			continue
		}
		kind, sel, all := "config", e.ValueFrom.ConfigMapKeyRef, objs.Configs
		if e.ValueFrom.SecretKeyRef != nil {
			kind, sel, all = "secret", e.ValueFrom.SecretKeyRef, objs.Secrets
		}
		if sel == nil {
			return nil, fmt.Errorf("%s.env[%d].valueFrom has no source: %w", f, j, errdefs.ErrInvalidArgument)
		}
		v, ok := all[sel.Name][sel.Key]
		if !ok {
			return nil, fmt.Errorf("%s.env[%d].valueFrom: %s %q has no key %q any more: %w", f, j, kind, sel.Name, sel.Key, errdefs.ErrFailedPrecondition)
		}
		set(e.Name, string(v))
	}
	for _, j := range fields {
		e := c.Env[j]
		out[at[e.Name]] = api.EnvVar{Name: e.Name, ValueFrom: &api.EnvVarSource{FieldRef: e.ValueFrom.FieldRef}}
	}
	return out, nil
}

// HasFieldRefs reports whether env has variables from fields of the
// instance, which its host resolves at start.
func HasFieldRefs(env []api.EnvVar) bool {
	for _, e := range env {
		if e.ValueFrom != nil && e.ValueFrom.FieldRef != nil {
			return true
		}
	}
	return false
}

// InstanceFields are the values of the fields a FieldRef may name.
type InstanceFields struct {
	PodIP string
}

// ResolveFields resolves the variables of env (container spec's env, with
// its secrets and configs resolved) that take their value from a field of
// the instance, then the $(NAME) references to those variables in the
// literal values of the env (to variables defined before them, as
// Kubernetes orders it), in spec's command and in its args, which it
// returns. Values that came from secrets or configs are left as they are.
func ResolveFields(spec *api.ContainerSpec, env []api.EnvVar, fields InstanceFields) (out []api.EnvVar, command, args []string) {
	if !HasFieldRefs(env) {
		return env, spec.Command, spec.Args
	}
	literal := map[string]bool{}
	for _, e := range spec.Env {
		literal[e.Name] = e.ValueFrom == nil
	}
	known := map[string]string{}
	lookup := func(name string) (string, bool) { v, ok := known[name]; return v, ok }
	out = make([]api.EnvVar, len(env))
	for i, e := range env {
		switch {
		case e.ValueFrom != nil && e.ValueFrom.FieldRef != nil:
			// Validated at create: status.podIP or status.podIPs.
			e = api.EnvVar{Name: e.Name, Value: fields.PodIP}
			known[e.Name] = e.Value
		case literal[e.Name]:
			e.Value = expansion.Expand(e.Value, lookup)
		}
		out[i] = e
	}
	expandAll := func(ss []string) []string {
		if ss == nil {
			return nil
		}
		r := make([]string, len(ss))
		for i, s := range ss {
			r[i] = expansion.Expand(s, lookup)
		}
		return r
	}
	return out, expandAll(spec.Command), expandAll(spec.Args)
}

// ProjectInstance is what the host of an instance needs of its secrets
// and configs: the files of every secret and config volume, in the
// spec's order, and the resolved env of every container that takes env
// from secrets (EnvFromSecrets), by container name.
func ProjectInstance(spec *api.InstanceSpec, objs ObjectData) ([]ProjectedVolume, map[string][]api.EnvVar, error) {
	var vols []ProjectedVolume
	for i, v := range spec.Volumes {
		src, data, secret := v.Config, objs.Configs, false
		if v.Secret != nil {
			src, data, secret = v.Secret, objs.Secrets, true
		}
		if src == nil {
			continue // another kind of volume: not the objects'
		}
		d, ok := data[src.Name]
		if !ok {
			return nil, nil, fmt.Errorf("spec.volumes[%d]: %q is gone: %w", i, src.Name, errdefs.ErrFailedPrecondition)
		}
		files, err := ProjectVolume(src, d)
		if err != nil {
			return nil, nil, fmt.Errorf("spec.volumes[%d]: %w", i, err)
		}
		vols = append(vols, ProjectedVolume{Name: v.Name, Secret: secret, Files: files})
	}
	var env map[string][]api.EnvVar
	for _, sc := range AllContainers(spec) {
		c := sc.Spec
		if !EnvFromSecrets(c) {
			continue
		}
		e, err := ResolveEnv(sc.Field, c, objs)
		if err != nil {
			return nil, nil, err
		}
		if env == nil {
			env = map[string][]api.EnvVar{}
		}
		env[c.Name] = e
	}
	return vols, env, nil
}
