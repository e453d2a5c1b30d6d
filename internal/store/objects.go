package store

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"time"
	"unicode/utf8"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
	"github.com/kanga-run/kanga/internal/secretkeys"
	"github.com/kanga-run/kanga/internal/tenant"
)

// Secrets and configs are tenant objects: a name and a map of keys to
// values.
//
//	/kanga/secrets/<tenant>/<name>  JSON objectRecord, data sealed (AES-256-GCM)
//	/kanga/configs/<tenant>/<name>  JSON objectRecord, data as is
//
// A secret's data is sealed with the active key of the key ring (see
// package secretkeys) and carries its key's ID; the tenant and name are
// bound in as additional data, so a sealed value moved to another record
// does not open. Configs are stored in the clear, text values as text, so
// that an etcd dump of a config reads as the config.
const (
	secretsPrefix = "/kanga/secrets/"
	configsPrefix = "/kanga/configs/"
)

// objectKind is what differs between secrets and configs in the store.
type objectKind struct {
	prefix string
	noun   string
	sealed bool
}

var (
	secretKind = objectKind{prefix: secretsPrefix, noun: "secret", sealed: true}
	configKind = objectKind{prefix: configsPrefix, noun: "config"}
)

type objectRecord struct {
	Name      string    `json:"name"`
	Tenant    string    `json:"tenant"`
	CreatedAt time.Time `json:"createdAt"`
	UpdatedAt time.Time `json:"updatedAt"`
	// A secret's data: the ID of its key and nonce+ciphertext of the JSON
	// of its map.
	KeyID  string `json:"keyId,omitempty"`
	Sealed []byte `json:"sealed,omitempty"`
	// A config's data: UTF-8 values as strings, others base64, as a
	// Kubernetes ConfigMap's data and binaryData.
	Data       map[string]string `json:"data,omitempty"`
	BinaryData map[string][]byte `json:"binaryData,omitempty"`
}

func (k objectKind) key(tenantName, name string) string { return k.prefix + tenantName + "/" + name }

func (k objectKind) scope(ctx context.Context, name string) (string, string, error) {
	t, err := tenant.Name(ctx)
	if err != nil {
		return "", "", err
	}
	// The model package owns the naming rules; this keeps the key layout.
	if name == "" || len(name) > 253 || !validKeySegment(name) {
		return "", "", fmt.Errorf("%s name %q is invalid: %w", k.noun, name, errdefs.ErrInvalidArgument)
	}
	return t, k.key(t, name), nil
}

func validKeySegment(s string) bool {
	for _, c := range s {
		if c == '/' || c < ' ' {
			return false
		}
	}
	return true
}

func (k objectKind) notFound(name string) error {
	return fmt.Errorf("%s %q not found: %w", k.noun, name, errdefs.ErrNotFound)
}

// aad binds a sealed value to its record.
func aad(tenantName, name string) []byte {
	return []byte("kanga/secret/v1\x00" + tenantName + "\x00" + name)
}

// secretKeys returns the key ring, loading (or creating) its file on first
// use.
func (s *Store) secretKeys() (*secretkeys.Ring, error) {
	s.keysMu.Lock()
	defer s.keysMu.Unlock()
	if s.keys != nil {
		return s.keys, nil
	}
	if s.keyFile == "" {
		return nil, fmt.Errorf("secrets: this control plane has no key file (opened without a data directory): %w", errdefs.ErrFailedPrecondition)
	}
	r, err := secretkeys.Load(s.keyFile)
	if err != nil {
		return nil, err
	}
	s.keys = r
	return r, nil
}

// SecretKeyFile is where the key ring lives ("" without a data directory).
func (s *Store) SecretKeyFile() string { return s.keyFile }

// encode puts data into rec as the kind stores it.
func (s *Store) encode(k objectKind, rec *objectRecord, data map[string][]byte) error {
	rec.KeyID, rec.Sealed, rec.Data, rec.BinaryData = "", nil, nil, nil
	if !k.sealed {
		for key, v := range data {
			if utf8.Valid(v) {
				if rec.Data == nil {
					rec.Data = map[string]string{}
				}
				rec.Data[key] = string(v)
				continue
			}
			if rec.BinaryData == nil {
				rec.BinaryData = map[string][]byte{}
			}
			rec.BinaryData[key] = v
		}
		return nil
	}
	ring, err := s.secretKeys()
	if err != nil {
		return err
	}
	plain, err := json.Marshal(data)
	if err != nil {
		return err
	}
	rec.KeyID, rec.Sealed, err = ring.Seal(plain, aad(rec.Tenant, rec.Name))
	clear(plain)
	return err
}

// decode returns rec's data.
func (s *Store) decode(k objectKind, rec *objectRecord) (map[string][]byte, error) {
	if !k.sealed {
		data := make(map[string][]byte, len(rec.Data)+len(rec.BinaryData))
		for key, v := range rec.Data {
			data[key] = []byte(v)
		}
		maps.Copy(data, rec.BinaryData)
		return data, nil
	}
	ring, err := s.secretKeys()
	if err != nil {
		return nil, err
	}
	plain, err := ring.Open(rec.KeyID, rec.Sealed, aad(rec.Tenant, rec.Name))
	if err != nil {
		return nil, fmt.Errorf("secret %q of tenant %q: %w", rec.Name, rec.Tenant, err)
	}
	var data map[string][]byte
	if err := json.Unmarshal(plain, &data); err != nil {
		return nil, fmt.Errorf("secret %q of tenant %q: decode: %v: %w", rec.Name, rec.Tenant, err, errdefs.ErrFailedPrecondition)
	}
	clear(plain)
	return data, nil
}

func decodeRecord(kv *mvccpb.KeyValue) (*objectRecord, error) {
	var rec objectRecord
	if err := json.Unmarshal(kv.Value, &rec); err != nil {
		return nil, fmt.Errorf("store: decode %s: %w", kv.Key, err)
	}
	return &rec, nil
}

// object is a record with its data, as the wrappers below turn it into
// the API's types.
type object struct {
	rec  *objectRecord
	data map[string][]byte
}

func (o object) keys() []api.ObjectKey {
	out := make([]api.ObjectKey, 0, len(o.data))
	for _, k := range slices.Sorted(maps.Keys(o.data)) {
		out = append(out, api.ObjectKey{Name: k, Size: len(o.data[k])})
	}
	return out
}

func (s *Store) createObject(ctx context.Context, k objectKind, name string, data map[string][]byte) (object, error) {
	t, key, err := k.scope(ctx, name)
	if err != nil {
		return object{}, err
	}
	now := time.Now().UTC()
	rec := &objectRecord{Name: name, Tenant: t, CreatedAt: now, UpdatedAt: now}
	if err := s.encode(k, rec, data); err != nil {
		return object{}, err
	}
	val, err := json.Marshal(rec)
	if err != nil {
		return object{}, err
	}
	exists, err := s.createInTenant(ctx, "create "+k.noun, t, key, val)
	if err != nil {
		return object{}, err
	}
	if exists {
		return object{}, fmt.Errorf("%s %q already exists: change it with update, or remove it first: %w", k.noun, name, errdefs.ErrAlreadyExists)
	}
	return object{rec: rec, data: data}, nil
}

// createInTenant puts val at key if nothing is there yet and tenant t
// exists (never into a tenant being deleted, or never created: that is
// ErrNotFound). exists reports a key already taken; nothing is written
// then.
func (s *Store) createInTenant(ctx context.Context, op, t, key string, val []byte) (exists bool, err error) {
	resp, err := s.client.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0),
			clientv3.Compare(clientv3.CreateRevision(tenantKey(t)), ">", 0)).
		Then(clientv3.OpPut(key, string(val))).
		Else(clientv3.OpGet(key, clientv3.WithCountOnly())).
		Commit()
	if err != nil {
		return false, s.etcdErr(ctx, op, err)
	}
	if !resp.Succeeded {
		if resp.Responses[0].GetResponseRange().Count > 0 {
			return true, nil
		}
		return false, fmt.Errorf("tenant %q not found: %w", t, errdefs.ErrNotFound)
	}
	return false, nil
}

func (s *Store) getObject(ctx context.Context, k objectKind, name string) (object, error) {
	_, key, err := k.scope(ctx, name)
	if err != nil {
		return object{}, err
	}
	resp, err := s.client.Get(ctx, key)
	if err != nil {
		return object{}, s.etcdErr(ctx, "get "+k.noun, err)
	}
	if len(resp.Kvs) == 0 {
		return object{}, k.notFound(name)
	}
	rec, err := decodeRecord(resp.Kvs[0])
	if err != nil {
		return object{}, err
	}
	data, err := s.decode(k, rec)
	if err != nil {
		return object{}, err
	}
	return object{rec: rec, data: data}, nil
}

func (s *Store) listObjects(ctx context.Context, k objectKind) ([]object, error) {
	t, err := tenant.Name(ctx)
	if err != nil {
		return nil, err
	}
	resp, err := s.client.Get(ctx, k.prefix+t+"/", clientv3.WithPrefix())
	if err != nil {
		return nil, s.etcdErr(ctx, "list "+k.noun+"s", err)
	}
	out := make([]object, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		rec, err := decodeRecord(kv)
		if err != nil {
			return nil, err
		}
		data, err := s.decode(k, rec)
		if err != nil {
			return nil, err
		}
		out = append(out, object{rec: rec, data: data})
	}
	return out, nil // etcd returns keys sorted: by name
}

func (s *Store) updateObject(ctx context.Context, k objectKind, name string, data map[string][]byte) (object, error) {
	_, key, err := k.scope(ctx, name)
	if err != nil {
		return object{}, err
	}
	for {
		resp, err := s.client.Get(ctx, key)
		if err != nil {
			return object{}, s.etcdErr(ctx, "get "+k.noun, err)
		}
		if len(resp.Kvs) == 0 {
			return object{}, k.notFound(name)
		}
		kv := resp.Kvs[0]
		rec, err := decodeRecord(kv)
		if err != nil {
			return object{}, err
		}
		rec.UpdatedAt = time.Now().UTC()
		if err := s.encode(k, rec, data); err != nil {
			return object{}, err
		}
		val, err := json.Marshal(rec)
		if err != nil {
			return object{}, err
		}
		put, err := s.client.Txn(ctx).
			If(clientv3.Compare(clientv3.ModRevision(key), "=", kv.ModRevision)).
			Then(clientv3.OpPut(key, string(val))).Commit()
		if err != nil {
			return object{}, s.etcdErr(ctx, "update "+k.noun, err)
		}
		if put.Succeeded {
			return object{rec: rec, data: data}, nil
		}
	}
}

func (s *Store) deleteObject(ctx context.Context, k objectKind, name string) error {
	_, key, err := k.scope(ctx, name)
	if err != nil {
		return err
	}
	resp, err := s.client.Delete(ctx, key)
	if err != nil {
		return s.etcdErr(ctx, "delete "+k.noun, err)
	}
	if resp.Deleted == 0 {
		return k.notFound(name)
	}
	return nil
}

func (o object) secret(reveal bool) api.Secret {
	out := api.Secret{Name: o.rec.Name, Tenant: o.rec.Tenant, CreatedAt: o.rec.CreatedAt, UpdatedAt: o.rec.UpdatedAt, Keys: o.keys()}
	if reveal {
		out.Data = o.data
		if out.Data == nil {
			out.Data = map[string][]byte{}
		}
	}
	return out
}

func (o object) config(withData bool) api.Config {
	out := api.Config{Name: o.rec.Name, Tenant: o.rec.Tenant, CreatedAt: o.rec.CreatedAt, UpdatedAt: o.rec.UpdatedAt, Keys: o.keys()}
	if withData {
		out.Data = o.data
	}
	return out
}

// CreateSecret stores a new secret in the caller's tenant, encrypted. The
// answer carries keys and sizes, not the values.
func (s *Store) CreateSecret(ctx context.Context, name string, data map[string][]byte) (api.Secret, error) {
	o, err := s.createObject(ctx, secretKind, name, data)
	return o.secretOr(err)
}

// UpdateSecret replaces the data of the caller's secret name.
func (s *Store) UpdateSecret(ctx context.Context, name string, data map[string][]byte) (api.Secret, error) {
	o, err := s.updateObject(ctx, secretKind, name, data)
	return o.secretOr(err)
}

func (o object) secretOr(err error) (api.Secret, error) {
	if err != nil {
		return api.Secret{}, err
	}
	return o.secret(false), nil
}

// GetSecret returns the caller's secret name; its values only with reveal.
func (s *Store) GetSecret(ctx context.Context, name string, reveal bool) (api.Secret, error) {
	o, err := s.getObject(ctx, secretKind, name)
	if err != nil {
		return api.Secret{}, err
	}
	return o.secret(reveal), nil
}

// ListSecrets returns the caller's secrets by name, without values.
func (s *Store) ListSecrets(ctx context.Context) ([]api.Secret, error) {
	objs, err := s.listObjects(ctx, secretKind)
	if err != nil {
		return nil, err
	}
	out := make([]api.Secret, 0, len(objs))
	for _, o := range objs {
		out = append(out, o.secret(false))
	}
	return out, nil
}

// DeleteSecret removes the caller's secret name.
func (s *Store) DeleteSecret(ctx context.Context, name string) error {
	return s.deleteObject(ctx, secretKind, name)
}

// CreateConfig stores a new config in the caller's tenant.
func (s *Store) CreateConfig(ctx context.Context, name string, data map[string][]byte) (api.Config, error) {
	o, err := s.createObject(ctx, configKind, name, data)
	if err != nil {
		return api.Config{}, err
	}
	return o.config(false), nil
}

// UpdateConfig replaces the data of the caller's config name.
func (s *Store) UpdateConfig(ctx context.Context, name string, data map[string][]byte) (api.Config, error) {
	o, err := s.updateObject(ctx, configKind, name, data)
	if err != nil {
		return api.Config{}, err
	}
	return o.config(false), nil
}

// GetConfig returns the caller's config name with its data.
func (s *Store) GetConfig(ctx context.Context, name string) (api.Config, error) {
	o, err := s.getObject(ctx, configKind, name)
	if err != nil {
		return api.Config{}, err
	}
	return o.config(true), nil
}

// ListConfigs returns the caller's configs by name, without data.
func (s *Store) ListConfigs(ctx context.Context) ([]api.Config, error) {
	objs, err := s.listObjects(ctx, configKind)
	if err != nil {
		return nil, err
	}
	out := make([]api.Config, 0, len(objs))
	for _, o := range objs {
		out = append(out, o.config(false))
	}
	return out, nil
}

// DeleteConfig removes the caller's config name.
func (s *Store) DeleteConfig(ctx context.Context, name string) error {
	return s.deleteObject(ctx, configKind, name)
}

// RotateSecretKey makes a new key the active one, re-encrypts every
// secret of every tenant with it and then drops the old keys no secret
// uses any more. Until it is done the old keys stay in the key file, so a
// rotation cut short (a crash, an etcd error) leaves every secret
// readable; running it again finishes the work.
func (s *Store) RotateSecretKey(ctx context.Context) (api.SecretKeyRotation, error) {
	s.rotateMu.Lock()
	defer s.rotateMu.Unlock()
	ring, err := s.secretKeys()
	if err != nil {
		return api.SecretKeyRotation{}, err
	}
	id, err := ring.Rotate()
	if err != nil {
		return api.SecretKeyRotation{}, err
	}
	out := api.SecretKeyRotation{KeyID: id, Retired: []string{}}
	resp, err := s.client.Get(ctx, secretsPrefix, clientv3.WithPrefix())
	if err != nil {
		return out, s.etcdErr(ctx, "list secrets", err)
	}
	for _, kv := range resp.Kvs {
		n, err := s.reseal(ctx, string(kv.Key), kv, id)
		if err != nil {
			return out, err
		}
		out.Reencrypted += n
	}
	// Volume keys are sealed with the same ring.
	if _, err := s.resealVolumeKeys(ctx, id); err != nil {
		return out, err
	}
	// Which keys are still in use: normally only the new one, unless a
	// replica with an older key file wrote meanwhile.
	resp, err = s.client.Get(ctx, secretsPrefix, clientv3.WithPrefix())
	if err != nil {
		return out, s.etcdErr(ctx, "list secrets", err)
	}
	used, err := s.volumeKeyIDs(ctx)
	if err != nil {
		return out, err
	}
	used[id] = true
	for _, kv := range resp.Kvs {
		rec, err := decodeRecord(kv)
		if err != nil {
			return out, err
		}
		used[rec.KeyID] = true
	}
	var retire []string
	for _, k := range ring.IDs() {
		if !used[k] {
			retire = append(retire, k)
		}
	}
	dropped, err := ring.Retire(retire)
	if err != nil {
		return out, err
	}
	if dropped != nil {
		out.Retired = dropped
	}
	s.logger.Info("secret key rotated", "key", id, "reencrypted", out.Reencrypted, "retired", out.Retired)
	return out, nil
}

// reseal re-encrypts the secret at key with key id unless it uses it
// already, retrying when the secret changes meanwhile. It returns 1 when
// it wrote.
func (s *Store) reseal(ctx context.Context, key string, kv *mvccpb.KeyValue, id string) (int, error) {
	for {
		rec, err := decodeRecord(kv)
		if err != nil {
			return 0, err
		}
		if rec.KeyID == id {
			return 0, nil
		}
		data, err := s.decode(secretKind, rec)
		if err != nil {
			return 0, err
		}
		if err := s.encode(secretKind, rec, data); err != nil {
			return 0, err
		}
		val, err := json.Marshal(rec)
		if err != nil {
			return 0, err
		}
		put, err := s.client.Txn(ctx).
			If(clientv3.Compare(clientv3.ModRevision(key), "=", kv.ModRevision)).
			Then(clientv3.OpPut(key, string(val))).
			Else(clientv3.OpGet(key)).Commit()
		if err != nil {
			return 0, s.etcdErr(ctx, "re-encrypt secret", err)
		}
		if put.Succeeded {
			return 1, nil
		}
		kvs := put.Responses[0].GetResponseRange().Kvs
		if len(kvs) == 0 {
			return 0, nil // removed meanwhile
		}
		kv = kvs[0]
	}
}

// objectOps are the deletions of a tenant's secrets, configs and volumes, for
// DeleteTenant.
func objectOps(tenantName string) []clientv3.Op {
	return []clientv3.Op{
		clientv3.OpDelete(secretsPrefix+tenantName+"/", clientv3.WithPrefix()),
		clientv3.OpDelete(configsPrefix+tenantName+"/", clientv3.WithPrefix()),
		clientv3.OpDelete(volumesPrefix+tenantName+"/", clientv3.WithPrefix()),
	}
}
