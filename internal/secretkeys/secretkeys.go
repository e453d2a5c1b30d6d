// Package secretkeys keeps the keys that encrypt tenants' secrets at rest:
// AES-256-GCM keys in one file (mode 0600) under the control plane's data
// directory, next to the admin token. Each sealed value carries the ID of
// its key, so that a rotation can add a key, re-encrypt, and drop the old
// key only once nothing uses it.
//
// The key file never enters etcd: an etcd dump or backup alone reveals no
// secret. Control-plane replicas that share an etcd cluster must share the
// file too (copy it to each replica's data directory, before and after a
// rotation).
package secretkeys

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"

	"github.com/kanga-run/kanga/errdefs"
	"github.com/kanga-run/kanga/internal/atomicfile"
)

// FileName is the key file's name in the data directory.
const FileName = "secret-keys"

// keySize is AES-256's.
const keySize = 32

type key struct {
	ID  string `json:"id"`
	Key []byte `json:"key"`
}

type file struct {
	// Active is the key new values are sealed with.
	Active string `json:"active"`
	Keys   []key  `json:"keys"`
}

// Ring is the set of keys of one key file. It is safe for concurrent use.
type Ring struct {
	path string
	mu   sync.RWMutex
	f    file
	aead map[string]cipher.AEAD
}

// Load reads the key file at path, creating it with one new key (mode
// 0600) when it does not exist.
func Load(path string) (*Ring, error) {
	r := &Ring{path: path}
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		k, err := newKey()
		if err != nil {
			return nil, err
		}
		r.f = file{Active: k.ID, Keys: []key{k}}
		if err := r.build(); err != nil {
			return nil, err
		}
		if err := r.save(); err != nil {
			return nil, err
		}
		return r, nil
	case err != nil:
		return nil, fmt.Errorf("secret keys: %w", err)
	}
	if err := json.Unmarshal(b, &r.f); err != nil {
		return nil, fmt.Errorf("secret keys: %s is not a key file: %v: restore it from a backup; without it no secret can be read: %w", path, err, errdefs.ErrFailedPrecondition)
	}
	if err := r.build(); err != nil {
		return nil, err
	}
	return r, nil
}

func newKey() (key, error) {
	id := make([]byte, 8)
	k := make([]byte, keySize)
	if _, err := rand.Read(id); err != nil {
		return key{}, err
	}
	if _, err := rand.Read(k); err != nil {
		return key{}, err
	}
	return key{ID: hex.EncodeToString(id), Key: k}, nil
}

// build makes the ciphers of r.f's keys and checks the file's shape.
func (r *Ring) build() error {
	aead := make(map[string]cipher.AEAD, len(r.f.Keys))
	for _, k := range r.f.Keys {
		if len(k.Key) != keySize {
			return fmt.Errorf("secret keys: key %s in %s has %d bytes, not %d: %w", k.ID, r.path, len(k.Key), keySize, errdefs.ErrFailedPrecondition)
		}
		block, err := aes.NewCipher(k.Key)
		if err != nil {
			return err
		}
		g, err := cipher.NewGCM(block)
		if err != nil {
			return err
		}
		aead[k.ID] = g
	}
	if aead[r.f.Active] == nil {
		return fmt.Errorf("secret keys: %s names active key %q, which it does not hold: %w", r.path, r.f.Active, errdefs.ErrFailedPrecondition)
	}
	r.aead = aead
	return nil
}

// save writes the key file atomically and durably with mode 0600: a
// crash leaves the old file or the new one, never half of one, and a
// rotation never re-encrypts with a key that a crash could lose.
func (r *Ring) save() error {
	b, err := json.Marshal(r.f)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(r.path), 0o700); err != nil {
		return fmt.Errorf("secret keys: %w", err)
	}
	if err := atomicfile.Write(r.path, b, 0o600); err != nil {
		return fmt.Errorf("secret keys: %w", err)
	}
	return nil
}

// Path is the key file's path.
func (r *Ring) Path() string { return r.path }

// Active returns the ID of the key Seal uses.
func (r *Ring) Active() string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.f.Active
}

// IDs returns the IDs of every key held.
func (r *Ring) IDs() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	ids := make([]string, 0, len(r.f.Keys))
	for _, k := range r.f.Keys {
		ids = append(ids, k.ID)
	}
	return ids
}

// Seal encrypts plaintext with the active key. aad binds the result to
// its place (the record's tenant and name): a sealed value copied to
// another record does not open there. It returns the key's ID and the
// nonce followed by the ciphertext.
func (r *Ring) Seal(plaintext, aad []byte) (string, []byte, error) {
	r.mu.RLock()
	id, g := r.f.Active, r.aead[r.f.Active]
	r.mu.RUnlock()
	nonce := make([]byte, g.NonceSize(), g.NonceSize()+len(plaintext)+g.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return "", nil, err
	}
	return id, g.Seal(nonce, nonce, plaintext, aad), nil
}

// Open decrypts what Seal returned with key id.
func (r *Ring) Open(id string, sealed, aad []byte) ([]byte, error) {
	r.mu.RLock()
	g := r.aead[id]
	r.mu.RUnlock()
	if g == nil {
		return nil, fmt.Errorf("secret keys: the value is sealed with key %q, which %s does not hold (a rotation elsewhere, or the wrong key file): %w", id, r.path, errdefs.ErrFailedPrecondition)
	}
	if len(sealed) < g.NonceSize() {
		return nil, fmt.Errorf("secret keys: sealed value too short: %w", errdefs.ErrFailedPrecondition)
	}
	out, err := g.Open(nil, sealed[:g.NonceSize()], sealed[g.NonceSize():], aad)
	if err != nil {
		return nil, fmt.Errorf("secret keys: value sealed with key %s does not open: %v: %w", id, err, errdefs.ErrFailedPrecondition)
	}
	return out, nil
}

// Rotate adds a new key, makes it the active one and saves the file; the
// old keys stay until Retire, so that values sealed with them still open.
func (r *Ring) Rotate() (string, error) {
	k, err := newKey()
	if err != nil {
		return "", err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	old := r.f
	r.f = file{Active: k.ID, Keys: append(slices.Clone(old.Keys), k)}
	if err := r.build(); err != nil {
		r.f = old
		return "", err
	}
	if err := r.save(); err != nil {
		r.f = old
		_ = r.build()
		return "", err
	}
	return k.ID, nil
}

// Retire drops the keys of ids (never the active one) and saves the file.
// It returns the IDs dropped.
func (r *Ring) Retire(ids []string) ([]string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	old := r.f
	var keep []key
	var dropped []string
	for _, k := range old.Keys {
		if k.ID != old.Active && slices.Contains(ids, k.ID) {
			dropped = append(dropped, k.ID)
			continue
		}
		keep = append(keep, k)
	}
	if len(dropped) == 0 {
		return nil, nil
	}
	r.f = file{Active: old.Active, Keys: keep}
	if err := r.build(); err != nil {
		r.f = old
		return nil, err
	}
	if err := r.save(); err != nil {
		r.f = old
		_ = r.build()
		return nil, err
	}
	return dropped, nil
}
