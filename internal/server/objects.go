package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
	"github.com/kanga-run/kanga/internal/model"
)

// ObjectStore keeps the tenants' secrets and configs (*store.Store). The
// tenant comes from the context, except for RotateSecretKey, which works
// on every tenant's secrets.
type ObjectStore interface {
	CreateSecret(ctx context.Context, name string, data map[string][]byte) (api.Secret, error)
	UpdateSecret(ctx context.Context, name string, data map[string][]byte) (api.Secret, error)
	// GetSecret returns the values only with reveal.
	GetSecret(ctx context.Context, name string, reveal bool) (api.Secret, error)
	ListSecrets(ctx context.Context) ([]api.Secret, error)
	DeleteSecret(ctx context.Context, name string) error
	RotateSecretKey(ctx context.Context) (api.SecretKeyRotation, error)

	CreateConfig(ctx context.Context, name string, data map[string][]byte) (api.Config, error)
	UpdateConfig(ctx context.Context, name string, data map[string][]byte) (api.Config, error)
	GetConfig(ctx context.Context, name string) (api.Config, error)
	ListConfigs(ctx context.Context) ([]api.Config, error)
	DeleteConfig(ctx context.Context, name string) error
}

// maxObjectBody bounds the body of a secret or config create or update:
// api.MaxObjectBytes of data grows by a third in base64, plus JSON. Data
// past MaxObjectBytes that still fits gets the 400 naming the field;
// beyond this bound the answer is 413.
const maxObjectBody = 2 << 20

// Secrets' values never reach a log line, an event, an error message or
// the audit log: errors name keys and sizes only (model.ValidateObjectData),
// the audit log records method, path and status, and values leave the
// API only through POST /v1/secrets/{name}/reveal, a call of its own that
// is audited and needs the secrets:reveal scope, which read-only tokens
// do not get.

func (s *Server) createSecret(w http.ResponseWriter, r *http.Request) error {
	var req api.CreateSecretRequest
	if err := decodeJSONLimit(r, &req, maxObjectBody); err != nil {
		return err
	}
	setAuditObject(r.Context(), "secrets/"+req.Name)
	if err := model.ValidateObjectName("name", req.Name); err != nil {
		return err
	}
	if err := model.ValidateObjectData("data", req.Data); err != nil {
		return err
	}
	out, err := s.store.CreateSecret(r.Context(), req.Name, req.Data)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, out)
	return nil
}

func (s *Server) updateSecret(w http.ResponseWriter, r *http.Request) error {
	var req api.UpdateSecretRequest
	if err := decodeJSONLimit(r, &req, maxObjectBody); err != nil {
		return err
	}
	name := r.PathValue("name")
	setAuditObject(r.Context(), "secrets/"+name)
	if err := model.ValidateObjectName("name", name); err != nil {
		return err
	}
	if err := model.ValidateObjectData("data", req.Data); err != nil {
		return err
	}
	out, err := s.store.UpdateSecret(r.Context(), name, req.Data)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) getSecret(w http.ResponseWriter, r *http.Request) error {
	return s.readSecret(w, r, false)
}

func (s *Server) revealSecret(w http.ResponseWriter, r *http.Request) error {
	RefuseBody(r)
	return s.readSecret(w, r, true)
}

func (s *Server) readSecret(w http.ResponseWriter, r *http.Request, reveal bool) error {
	name := r.PathValue("name")
	if err := model.ValidateObjectName("name", name); err != nil {
		return err
	}
	out, err := s.store.GetSecret(r.Context(), name, reveal)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) listSecrets(w http.ResponseWriter, r *http.Request) error {
	list, err := s.store.ListSecrets(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, api.SecretList{Items: list})
	return nil
}

func (s *Server) deleteSecret(w http.ResponseWriter, r *http.Request) error {
	name := r.PathValue("name")
	if err := model.ValidateObjectName("name", name); err != nil {
		return err
	}
	if err := s.store.DeleteSecret(r.Context(), name); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) rotateSecretKey(w http.ResponseWriter, r *http.Request) error {
	RefuseBody(r)
	if err := requireAdmin(r.Context()); err != nil {
		return fmt.Errorf("rotating the secret key: %w", err)
	}
	out, err := s.store.RotateSecretKey(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) createConfig(w http.ResponseWriter, r *http.Request) error {
	var req api.CreateConfigRequest
	if err := decodeJSONLimit(r, &req, maxObjectBody); err != nil {
		return err
	}
	setAuditObject(r.Context(), "configs/"+req.Name)
	if err := model.ValidateObjectName("name", req.Name); err != nil {
		return err
	}
	if err := model.ValidateObjectData("data", req.Data); err != nil {
		return err
	}
	out, err := s.store.CreateConfig(r.Context(), req.Name, req.Data)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, out)
	return nil
}

func (s *Server) updateConfig(w http.ResponseWriter, r *http.Request) error {
	var req api.UpdateConfigRequest
	if err := decodeJSONLimit(r, &req, maxObjectBody); err != nil {
		return err
	}
	name := r.PathValue("name")
	setAuditObject(r.Context(), "configs/"+name)
	if err := model.ValidateObjectName("name", name); err != nil {
		return err
	}
	if err := model.ValidateObjectData("data", req.Data); err != nil {
		return err
	}
	out, err := s.store.UpdateConfig(r.Context(), name, req.Data)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) getConfig(w http.ResponseWriter, r *http.Request) error {
	name := r.PathValue("name")
	if err := model.ValidateObjectName("name", name); err != nil {
		return err
	}
	out, err := s.store.GetConfig(r.Context(), name)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) listConfigs(w http.ResponseWriter, r *http.Request) error {
	list, err := s.store.ListConfigs(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, api.ConfigList{Items: list})
	return nil
}

func (s *Server) deleteConfig(w http.ResponseWriter, r *http.Request) error {
	name := r.PathValue("name")
	if err := model.ValidateObjectName("name", name); err != nil {
		return err
	}
	if err := s.store.DeleteConfig(r.Context(), name); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// resolveObjectRefs checks a validated spec's references to secrets and
// configs against the tenant's objects, and then does what can be done
// without the hosts:
//
//   - every referenced object (and key) must exist in the tenant: 400
//     naming the field otherwise;
//   - env from configs (envFrom configMapRef, valueFrom configMapKeyRef)
//     is resolved here into plain env, a snapshot taken at create as
//     Kubernetes takes it at container start: a config is stored in the
//     clear anyway, so its values in the instance record reveal nothing;
//   - env from secrets and every secret or config volume are refused with
//     501: the instance record is how the spec reaches the host, so a
//     secret resolved into it would sit in etcd in the clear, and mounting
//     files needs the host's files step. Both come with it.
//
// It reports whether it changed the spec.
func (s *Server) resolveObjectRefs(ctx context.Context, spec *api.InstanceSpec) (bool, error) {
	refs := model.ObjectRefs(spec)
	if len(refs) == 0 {
		return false, nil
	}
	keys := map[model.ObjectRef][]string{} // by kind and name
	configs := map[string]map[string][]byte{}
	var errs []error
	for _, ref := range refs {
		obj := model.ObjectRef{Kind: ref.Kind, Name: ref.Name}
		ks, seen := keys[obj]
		if !seen {
			var err error
			switch ref.Kind {
			case model.KindSecret:
				var sec api.Secret
				sec, err = s.store.GetSecret(ctx, ref.Name, false)
				for _, k := range sec.Keys {
					ks = append(ks, k.Name)
				}
			case model.KindConfig:
				var cfg api.Config
				cfg, err = s.store.GetConfig(ctx, ref.Name)
				for _, k := range cfg.Keys {
					ks = append(ks, k.Name)
				}
				configs[ref.Name] = cfg.Data
			}
			if errors.Is(err, errdefs.ErrNotFound) {
				errs = append(errs, fmt.Errorf("%s: %s %q does not exist in this tenant: create it first (kanga %s create %s ...): %w",
					ref.Field, ref.Kind, ref.Name, ref.Kind, ref.Name, errdefs.ErrInvalidArgument))
				keys[obj] = nil
				continue
			}
			if err != nil {
				return false, err
			}
			keys[obj] = ks
		} else if ks == nil {
			continue // reported missing already
		}
		if ref.Key != "" && !slices.Contains(ks, ref.Key) {
			errs = append(errs, fmt.Errorf("%s: %s %q has no key %q: %w", ref.Field, ref.Kind, ref.Name, ref.Key, errdefs.ErrInvalidArgument))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return false, err
	}
	for i, v := range spec.Volumes {
		if v.Secret == nil && v.Config == nil {
			continue // an emptyDir: the host makes it
		}
		kind := "secret"
		if v.Secret == nil {
			kind = "config"
		}
		return false, fmt.Errorf("spec.volumes[%d]: %s volumes are not yet supported by the hosts (files are mounted by a later version): for a config, use envFrom or valueFrom meanwhile: %w",
			i, kind, errdefs.ErrNotImplemented)
	}
	for i, c := range spec.Containers {
		for j, e := range c.EnvFrom {
			if e.SecretRef != nil {
				return false, fmt.Errorf("spec.containers[%d].envFrom[%d].secretRef: env from secrets is not yet supported: the instance record carries env to the host, and a secret's value must not be stored there in the clear: %w",
					i, j, errdefs.ErrNotImplemented)
			}
		}
		for j, e := range c.Env {
			if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
				return false, fmt.Errorf("spec.containers[%d].env[%d].valueFrom.secretKeyRef: env from secrets is not yet supported: the instance record carries env to the host, and a secret's value must not be stored there in the clear: %w",
					i, j, errdefs.ErrNotImplemented)
			}
		}
	}
	for i := range spec.Containers {
		env, err := configEnv(fmt.Sprintf("spec.containers[%d]", i), &spec.Containers[i], configs)
		if err != nil {
			return false, err
		}
		spec.Containers[i].Env, spec.Containers[i].EnvFrom = env, nil
	}
	return true, nil
}

// configEnv is a container's env with its config references resolved:
// the variables of envFrom in order (a later source wins over an earlier
// one), then the container's own env, which wins over both.
func configEnv(f string, c *api.ContainerSpec, configs map[string]map[string][]byte) ([]api.EnvVar, error) {
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
		data := configs[e.ConfigMapRef.Name]
		for _, k := range sortedKeys(data) {
			name := e.Prefix + k
			if err := model.ValidateEnvName(name); err != nil {
				return nil, fmt.Errorf("%s.envFrom[%d]: key %q of config %q: %w", f, j, k, e.ConfigMapRef.Name, err)
			}
			set(name, string(data[k]))
		}
	}
	for _, e := range c.Env {
		v := e.Value
		if e.ValueFrom != nil {
			ref := e.ValueFrom.ConfigMapKeyRef
			v = string(configs[ref.Name][ref.Key])
		}
		set(e.Name, v)
	}
	return out, nil
}

func sortedKeys(m map[string][]byte) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}
