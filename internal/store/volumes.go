package store

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
	"github.com/kanga-run/kanga/internal/tenant"
)

// Persistent volumes are tenant objects kept on one host each:
//
//	/kanga/volumes/<tenant>/<name>  JSON volumeRecord
//
// An encrypted volume's key is sealed with the secrets key ring (package
// secretkeys), bound to its tenant, name and ID, as a secret's data is;
// it leaves the store only through HostView.VolumeKey, to the volume's
// own host.
//
// The record also keeps the claim of the one instance that holds the
// volume (ReadWriteOnce). A claim is taken before its instance is stored
// (pending) and confirmed after; it ends with the instance's record, so
// nothing has to release it when a host removes an instance: a claim
// whose instance is gone is free. A pending claim whose instance does
// not exist yet holds for claimGrace, long enough for the create that
// took it to store the instance or to release it.
const volumesPrefix = "/kanga/volumes/"

const claimGrace = 30 * time.Second

type volumeRecord struct {
	Name      string    `json:"name"`
	Tenant    string    `json:"tenant"`
	ID        string    `json:"id"`
	Size      int64     `json:"size"`
	Encrypted bool      `json:"encrypted,omitempty"`
	Host      string    `json:"host"`
	CreatedAt time.Time `json:"createdAt"`
	Phase     string    `json:"phase"`
	Message   string    `json:"message,omitempty"`
	// An encrypted volume's key: the ID of the ring key that sealed it
	// and nonce+ciphertext.
	KeyID     string        `json:"keyId,omitempty"`
	SealedKey []byte        `json:"sealedKey,omitempty"`
	Holder    *volumeHolder `json:"holder,omitempty"`
}

type volumeHolder struct {
	Instance string    `json:"instance"`
	UID      string    `json:"uid"`
	Pending  bool      `json:"pending,omitempty"`
	Since    time.Time `json:"since"`
}

// Volume is a persistent volume as the API and the hosts need it: the
// public object and the name of the volume on its host.
type Volume struct {
	api.PersistentVolume
	ID string
}

// NewVolume describes a volume to record; Key is set for an encrypted
// one.
type NewVolume struct {
	Name      string
	ID        string
	Size      int64
	Encrypted bool
	Host      string
	Key       []byte
}

func volumeKey(t, name string) string { return volumesPrefix + t + "/" + name }

func volumeAAD(t, name, id string) []byte {
	return []byte("kanga/volume-key/v1\x00" + t + "\x00" + name + "\x00" + id)
}

func volumeNotFound(name string) error {
	return fmt.Errorf("volume %q not found: %w", name, errdefs.ErrNotFound)
}

func volumeScope(ctx context.Context, name string) (string, string, error) {
	t, err := tenant.Name(ctx)
	if err != nil {
		return "", "", err
	}
	if name == "" || len(name) > 253 || !validKeySegment(name) {
		return "", "", fmt.Errorf("volume name %q is invalid: %w", name, errdefs.ErrInvalidArgument)
	}
	return t, volumeKey(t, name), nil
}

func decodeVolume(kv *mvccpb.KeyValue) (*volumeRecord, error) {
	var rec volumeRecord
	if err := json.Unmarshal(kv.Value, &rec); err != nil {
		return nil, fmt.Errorf("store: decode %s: %w", kv.Key, err)
	}
	return &rec, nil
}

// CreateVolume records a new volume of the caller's tenant in phase
// Creating. A taken name is ErrAlreadyExists.
func (s *Store) CreateVolume(ctx context.Context, nv NewVolume) (Volume, error) {
	t, key, err := volumeScope(ctx, nv.Name)
	if err != nil {
		return Volume{}, err
	}
	rec := &volumeRecord{Name: nv.Name, Tenant: t, ID: nv.ID, Size: nv.Size, Encrypted: nv.Encrypted,
		Host: nv.Host, CreatedAt: time.Now().UTC(), Phase: api.VolumeCreating}
	if nv.Encrypted {
		ring, err := s.secretKeys()
		if err != nil {
			return Volume{}, err
		}
		if rec.KeyID, rec.SealedKey, err = ring.Seal(nv.Key, volumeAAD(t, nv.Name, nv.ID)); err != nil {
			return Volume{}, err
		}
	}
	val, err := json.Marshal(rec)
	if err != nil {
		return Volume{}, err
	}
	exists, err := s.createInTenant(ctx, "create volume", t, key, val)
	if err != nil {
		return Volume{}, err
	}
	if exists {
		return Volume{}, fmt.Errorf("volume %q already exists: %w", nv.Name, errdefs.ErrAlreadyExists)
	}
	return s.volumeOf(ctx, rec)
}

// holderLive says whether a claim on volume id still holds: its
// instance exists, with its UID or still bound to the volume (the control
// plane re-creates an instance of a lost host under a new UID), or the
// claim is pending and young.
func (s *Store) holderLive(ctx context.Context, t, id string, h *volumeHolder) (bool, error) {
	if h == nil {
		return false, nil
	}
	resp, err := s.client.Get(ctx, instanceKey(t, h.Instance))
	if err != nil {
		return false, s.etcdErr(ctx, "get instance", err)
	}
	if len(resp.Kvs) > 0 {
		inst, err := decodeInstance(resp.Kvs[0])
		if err != nil {
			return false, err
		}
		if inst.UID == h.UID {
			return true, nil
		}
		for _, b := range inst.PersistentVolumes {
			if b.ID == id {
				return true, nil
			}
		}
	}
	return h.Pending && time.Since(h.Since) < claimGrace, nil
}

// volumeOf is the public view of rec, with the holder only if it holds.
func (s *Store) volumeOf(ctx context.Context, rec *volumeRecord) (Volume, error) {
	v := Volume{ID: rec.ID, PersistentVolume: api.PersistentVolume{
		Name: rec.Name, Tenant: rec.Tenant, Size: rec.Size, Encrypted: rec.Encrypted, Host: rec.Host,
		CreatedAt: rec.CreatedAt, Status: api.PersistentVolumeStatus{Phase: rec.Phase, Message: rec.Message},
	}}
	live, err := s.holderLive(ctx, rec.Tenant, rec.ID, rec.Holder)
	if err != nil {
		return Volume{}, err
	}
	if live {
		v.Status.Holder = rec.Holder.Instance
		if rec.Phase == api.VolumeAvailable {
			v.Status.Phase = api.VolumeInUse
		}
	}
	return v, nil
}

func (s *Store) getVolumeRecord(ctx context.Context, name string) (*volumeRecord, *mvccpb.KeyValue, error) {
	_, key, err := volumeScope(ctx, name)
	if err != nil {
		return nil, nil, err
	}
	resp, err := s.client.Get(ctx, key)
	if err != nil {
		return nil, nil, s.etcdErr(ctx, "get volume", err)
	}
	if len(resp.Kvs) == 0 {
		return nil, nil, volumeNotFound(name)
	}
	rec, err := decodeVolume(resp.Kvs[0])
	return rec, resp.Kvs[0], err
}

// GetVolume returns the caller's volume name.
func (s *Store) GetVolume(ctx context.Context, name string) (Volume, error) {
	rec, _, err := s.getVolumeRecord(ctx, name)
	if err != nil {
		return Volume{}, err
	}
	return s.volumeOf(ctx, rec)
}

// ListVolumes returns the caller's volumes by name.
func (s *Store) ListVolumes(ctx context.Context) ([]Volume, error) {
	t, err := tenant.Name(ctx)
	if err != nil {
		return nil, err
	}
	resp, err := s.client.Get(ctx, volumesPrefix+t+"/", clientv3.WithPrefix())
	if err != nil {
		return nil, s.etcdErr(ctx, "list volumes", err)
	}
	out := make([]Volume, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		rec, err := decodeVolume(kv)
		if err != nil {
			return nil, err
		}
		v, err := s.volumeOf(ctx, rec)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}

// CountHostVolumes counts the volumes of every tenant on each host.
func (s *Store) CountHostVolumes(ctx context.Context) (map[string]int, error) {
	resp, err := s.client.Get(ctx, volumesPrefix, clientv3.WithPrefix())
	if err != nil {
		return nil, s.etcdErr(ctx, "list volumes", err)
	}
	out := map[string]int{}
	for _, kv := range resp.Kvs {
		rec, err := decodeVolume(kv)
		if err != nil {
			return nil, err
		}
		out[rec.Host]++
	}
	return out, nil
}

// updateVolume applies fn to the caller's volume name and writes it if
// nothing changed it meanwhile, retrying otherwise.
func (s *Store) updateVolume(ctx context.Context, name string, fn func(*volumeRecord) error) (*volumeRecord, error) {
	for {
		rec, kv, err := s.getVolumeRecord(ctx, name)
		if err != nil {
			return nil, err
		}
		if err := fn(rec); err != nil {
			return nil, err
		}
		val, err := json.Marshal(rec)
		if err != nil {
			return nil, err
		}
		key := string(kv.Key)
		put, err := s.client.Txn(ctx).
			If(clientv3.Compare(clientv3.ModRevision(key), "=", kv.ModRevision)).
			Then(clientv3.OpPut(key, string(val))).Commit()
		if err != nil {
			return nil, s.etcdErr(ctx, "update volume", err)
		}
		if put.Succeeded {
			return rec, nil
		}
	}
}

// SetVolumePhase records the caller's volume's phase and message.
func (s *Store) SetVolumePhase(ctx context.Context, name, phase, message string) error {
	_, err := s.updateVolume(ctx, name, func(r *volumeRecord) error {
		r.Phase, r.Message = phase, message
		return nil
	})
	return err
}

// ClaimVolume makes instance (name and UID) the holder of the caller's
// volume, pending until ConfirmVolumeClaim. A volume held by another
// instance is ErrConflict naming it; one not Available is
// ErrFailedPrecondition.
func (s *Store) ClaimVolume(ctx context.Context, name, instance, uid string) (Volume, error) {
	var out Volume
	_, err := s.updateVolume(ctx, name, func(r *volumeRecord) error {
		if r.Phase != api.VolumeAvailable {
			return fmt.Errorf("volume %q is %s: %w", name, r.Phase, errdefs.ErrFailedPrecondition)
		}
		if h := r.Holder; h != nil && h.UID != uid {
			live, err := s.holderLive(ctx, r.Tenant, r.ID, h)
			if err != nil {
				return err
			}
			if live {
				return fmt.Errorf("volume %q is in use by instance %q: one instance at a time mounts a volume; remove it first (kanga rm %s): %w",
					name, h.Instance, h.Instance, errdefs.ErrConflict)
			}
		}
		r.Holder = &volumeHolder{Instance: instance, UID: uid, Pending: true, Since: time.Now().UTC()}
		out = Volume{ID: r.ID, PersistentVolume: api.PersistentVolume{Name: r.Name, Tenant: r.Tenant, Size: r.Size,
			Encrypted: r.Encrypted, Host: r.Host, CreatedAt: r.CreatedAt,
			Status: api.PersistentVolumeStatus{Phase: api.VolumeInUse, Holder: instance}}}
		return nil
	})
	return out, err
}

// ConfirmVolumeClaim marks the claim of instance uid as made: its
// instance is stored, and the claim ends with it.
func (s *Store) ConfirmVolumeClaim(ctx context.Context, name, uid string) error {
	return s.changeClaim(ctx, name, uid, false)
}

// ReleaseVolumeClaim drops the claim of instance uid (a create that
// failed after the claim).
func (s *Store) ReleaseVolumeClaim(ctx context.Context, name, uid string) error {
	return s.changeClaim(ctx, name, uid, true)
}

func (s *Store) changeClaim(ctx context.Context, name, uid string, release bool) error {
	errNotMine := fmt.Errorf("claim is not %s's", uid)
	_, err := s.updateVolume(ctx, name, func(r *volumeRecord) error {
		if r.Holder == nil || r.Holder.UID != uid {
			return errNotMine
		}
		if release {
			r.Holder = nil
		} else {
			r.Holder.Pending = false
		}
		return nil
	})
	if err == errNotMine {
		return nil
	}
	return err
}

// BeginDeleteVolume moves the caller's volume to Deleting, unless an
// instance holds it (ErrConflict naming it). It returns the volume.
func (s *Store) BeginDeleteVolume(ctx context.Context, name string) (Volume, error) {
	rec, err := s.updateVolume(ctx, name, func(r *volumeRecord) error {
		live, err := s.holderLive(ctx, r.Tenant, r.ID, r.Holder)
		if err != nil {
			return err
		}
		if live {
			return fmt.Errorf("volume %q is in use by instance %q: remove the instance first (kanga rm %s): %w",
				name, r.Holder.Instance, r.Holder.Instance, errdefs.ErrConflict)
		}
		r.Phase, r.Holder = api.VolumeDeleting, nil
		return nil
	})
	if err != nil {
		return Volume{}, err
	}
	return s.volumeOf(ctx, rec)
}

// DeleteVolume removes the caller's volume record.
func (s *Store) DeleteVolume(ctx context.Context, name string) error {
	_, key, err := volumeScope(ctx, name)
	if err != nil {
		return err
	}
	resp, err := s.client.Delete(ctx, key)
	if err != nil {
		return s.etcdErr(ctx, "delete volume", err)
	}
	if resp.Deleted == 0 {
		return volumeNotFound(name)
	}
	return nil
}

// VolumeKey returns the key of the encrypted volume that the host knows
// as id, and only to the volume's own host: the key never goes to a host
// that does not keep the volume.
func (v HostView) VolumeKey(ctx context.Context, id string) ([]byte, error) {
	resp, err := v.s.client.Get(ctx, volumesPrefix, clientv3.WithPrefix())
	if err != nil {
		return nil, v.s.etcdErr(ctx, "list volumes", err)
	}
	for _, kv := range resp.Kvs {
		rec, err := decodeVolume(kv)
		if err != nil {
			return nil, err
		}
		if rec.ID != id {
			continue
		}
		if rec.Host != v.host {
			return nil, fmt.Errorf("volume %s is on host %s, not on %s: %w", id, rec.Host, v.host, errdefs.ErrPermissionDenied)
		}
		if !rec.Encrypted {
			return nil, fmt.Errorf("volume %s is not encrypted: %w", id, errdefs.ErrFailedPrecondition)
		}
		ring, err := v.s.secretKeys()
		if err != nil {
			return nil, err
		}
		key, err := ring.Open(rec.KeyID, rec.SealedKey, volumeAAD(rec.Tenant, rec.Name, rec.ID))
		if err != nil {
			return nil, fmt.Errorf("volume %s: %w", id, err)
		}
		return key, nil
	}
	return nil, fmt.Errorf("volume %s: %w", id, errdefs.ErrNotFound)
}

// VolumeKeyFor is ForHost(host).VolumeKey(ctx, id): the key of an
// encrypted volume, for its own host only.
func (s *Store) VolumeKeyFor(ctx context.Context, host, id string) ([]byte, error) {
	return s.ForHost(host).VolumeKey(ctx, id)
}

// resealVolumeKeys re-encrypts every volume key with ring key id (a
// rotation) and returns how many it rewrote.
func (s *Store) resealVolumeKeys(ctx context.Context, id string) (int, error) {
	resp, err := s.client.Get(ctx, volumesPrefix, clientv3.WithPrefix())
	if err != nil {
		return 0, s.etcdErr(ctx, "list volumes", err)
	}
	ring, err := s.secretKeys()
	if err != nil {
		return 0, err
	}
	n := 0
	for _, kv := range resp.Kvs {
		for {
			rec, err := decodeVolume(kv)
			if err != nil {
				return n, err
			}
			if !rec.Encrypted || rec.KeyID == id {
				break
			}
			aad := volumeAAD(rec.Tenant, rec.Name, rec.ID)
			plain, err := ring.Open(rec.KeyID, rec.SealedKey, aad)
			if err != nil {
				return n, fmt.Errorf("volume %q of tenant %q: %w", rec.Name, rec.Tenant, err)
			}
			rec.KeyID, rec.SealedKey, err = ring.Seal(plain, aad)
			clear(plain)
			if err != nil {
				return n, err
			}
			val, err := json.Marshal(rec)
			if err != nil {
				return n, err
			}
			key := string(kv.Key)
			put, err := s.client.Txn(ctx).
				If(clientv3.Compare(clientv3.ModRevision(key), "=", kv.ModRevision)).
				Then(clientv3.OpPut(key, string(val))).
				Else(clientv3.OpGet(key)).Commit()
			if err != nil {
				return n, s.etcdErr(ctx, "re-encrypt volume key", err)
			}
			if put.Succeeded {
				n++
				break
			}
			kvs := put.Responses[0].GetResponseRange().Kvs
			if len(kvs) == 0 {
				break
			}
			kv = kvs[0]
		}
	}
	return n, nil
}

// volumeKeyIDs are the ring keys the volume keys are sealed with.
func (s *Store) volumeKeyIDs(ctx context.Context) (map[string]bool, error) {
	resp, err := s.client.Get(ctx, volumesPrefix, clientv3.WithPrefix())
	if err != nil {
		return nil, s.etcdErr(ctx, "list volumes", err)
	}
	used := map[string]bool{}
	for _, kv := range resp.Kvs {
		rec, err := decodeVolume(kv)
		if err != nil {
			return nil, err
		}
		if rec.Encrypted {
			used[rec.KeyID] = true
		}
	}
	return used, nil
}
