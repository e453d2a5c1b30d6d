package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
	"github.com/kanga-run/kanga/internal/httpserver"
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
	httpserver.RefuseBody(r)
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
	httpserver.RefuseBody(r)
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
//   - the env of a container that takes env from configs only is resolved
//     here into plain env, a snapshot taken at create as Kubernetes takes
//     it at container start: a config is stored in the clear anyway, so
//     its values in the instance record reveal nothing;
//   - the env of a container that takes env from a secret is left as
//     references (configs' too, so that the order of its sources holds):
//     its host resolves it at start from what the control plane answers
//     that host alone (model.ProjectInstance), because the instance record
//     is how the spec reaches the host and sits in etcd in the clear.
//     Secret and config volumes likewise stay references; the host mounts
//     their files (on tmpfs) and follows their updates.
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
	changed := false
	for _, sc := range model.AllContainers(spec) {
		c := sc.Spec
		if model.EnvFromSecrets(c) || (len(c.EnvFrom) == 0 && !hasValueFrom(c.Env)) {
			continue
		}
		env, err := model.ResolveEnv(sc.Field, c, model.ObjectData{Configs: configs})
		if err != nil {
			return false, err
		}
		c.Env, c.EnvFrom, changed = env, nil, true
	}
	return changed, nil
}

func hasValueFrom(env []api.EnvVar) bool {
	for _, e := range env {
		if e.ValueFrom != nil {
			return true
		}
	}
	return false
}
