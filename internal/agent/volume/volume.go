package volume

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"time"

	"github.com/kanga-run/kanga/errdefs"
	"github.com/kanga-run/kanga/internal/atomicfile"
)

// Size bounds of a persistent volume. Below 16 MiB the journal and the
// metadata are most of it; above 16 TiB is more than any host here has.
const (
	MinVolumeSize = 16 << 20
	MaxVolumeSize = 16 << 40
)

// Volume is a persistent volume as recorded on the host.
type Volume struct {
	Name string `json:"name"`
	// Size is what the tenant can write, in bytes; the backing file is a
	// little larger (see format) and sparse.
	Size      int64 `json:"size"`
	Encrypted bool  `json:"encrypted,omitempty"`
	// KeyID identifies the volume's key (fscrypt v2 identifier, derived
	// from the key by the kernel); the key itself is never stored here.
	KeyID   string    `json:"keyID,omitempty"`
	Created time.Time `json:"created"`
	// Holder is who has it mounted, nil when free. Not in volume.json:
	// it lives in its own record (holder.json).
	Holder *Holder `json:"-"`
}

// Holder is the one user of a volume (ReadWriteOnce) and where it is
// mounted for it.
type Holder struct {
	ID       string    `json:"id"`
	Target   string    `json:"target"`
	ReadOnly bool      `json:"readOnly,omitempty"`
	Since    time.Time `json:"since"`
}

// MountOptions say who mounts a volume and how.
type MountOptions struct {
	// Holder names the user, normally the instance id; a second holder's
	// Mount is a conflict naming the first.
	Holder   string
	ReadOnly bool
	// Key is the volume's key, required for an encrypted volume.
	Key []byte
}

// Manager keeps a host's persistent volumes and emptyDirs under one root
// directory. Its state is what is on disk under root, so a new Manager on
// the same root (after an agent restart) sees everything the old one
// made; its locks serialise this process's changes to each volume and
// to each instance's emptyDirs.
type Manager struct {
	root  string
	log   *slog.Logger
	locks keyLocks
}

// New returns a Manager rooted at root (normally <data-dir>/volumes).
func New(root string, log *slog.Logger) (*Manager, error) {
	if log == nil {
		log = slog.Default()
	}
	root, err := filepath.Abs(root)
	if err != nil {
		return nil, err
	}
	for _, d := range []string{root, filepath.Join(root, "volumes"), filepath.Join(root, "empty")} {
		// 0700: the tenants' files are reachable only through the mounts
		// the agent hands to their containers.
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("volume root: %w", err)
		}
	}
	return &Manager{root: root, log: log}, nil
}

// Root is the directory the Manager keeps everything under.
func (m *Manager) Root() string { return m.root }

var nameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9_.-]{0,61}[a-z0-9])?$`)

func checkName(field, name string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("%s %q: lower-case letters, digits, '.', '_' and '-', 1 to 63 long, starting and ending with a letter or digit: %w", field, name, errdefs.ErrInvalidArgument)
	}
	return nil
}

func (m *Manager) volDir(name string) string { return filepath.Join(m.root, "volumes", name) }
func (m *Manager) fsDir(name string) string  { return filepath.Join(m.volDir(name), "fs") }

// dataDir is the directory of a volume that its holder sees: the
// filesystem's root cannot be encrypted (and holds lost+found).
func (m *Manager) dataDir(name string) string { return filepath.Join(m.fsDir(name), "data") }
func (m *Manager) image(name string) string   { return filepath.Join(m.volDir(name), "disk.img") }

// Create makes a persistent volume of size bytes: a sparse file with an
// ext4 filesystem whose free space is size. An encrypted volume's data
// directory is encrypted with fscrypt (v2 policy) under key, which must
// be KeySize random bytes (NewKey).
func (m *Manager) Create(ctx context.Context, name string, size int64, encrypted bool, key []byte) (_ Volume, err error) {
	if err := checkName("name", name); err != nil {
		return Volume{}, err
	}
	if size < MinVolumeSize || size > MaxVolumeSize {
		return Volume{}, fmt.Errorf("size %d: must be between %d (16Mi) and %d (16Ti) bytes: %w", size, int64(MinVolumeSize), int64(MaxVolumeSize), errdefs.ErrInvalidArgument)
	}
	switch {
	case encrypted && len(key) != KeySize:
		return Volume{}, fmt.Errorf("key: an encrypted volume needs a %d-byte key, got %d bytes: %w", KeySize, len(key), errdefs.ErrInvalidArgument)
	case !encrypted && key != nil:
		return Volume{}, fmt.Errorf("key: given for volume %q, which is not encrypted: %w", name, errdefs.ErrInvalidArgument)
	}
	defer m.locks.lock("volume/" + name)()

	dir := m.volDir(name)
	if err := os.Mkdir(dir, 0o700); err != nil {
		if errors.Is(err, os.ErrExist) {
			return Volume{}, fmt.Errorf("volume %q: %w", name, errdefs.ErrAlreadyExists)
		}
		return Volume{}, err
	}
	// Until volume.json is written the directory is a volume being made;
	// Cleanup removes one a crash left behind.
	defer func() {
		if err != nil {
			_ = unmountAll(m.fsDir(name), true)
			_ = os.RemoveAll(dir)
		}
	}()
	if err := format(ctx, m.image(name), size, true); err != nil {
		return Volume{}, err
	}
	v := Volume{Name: name, Size: size, Encrypted: encrypted, Created: time.Now().UTC()}
	fs := m.fsDir(name)
	if err := os.Mkdir(fs, 0o700); err != nil {
		return Volume{}, err
	}
	if err := mountImage(m.image(name), fs); err != nil {
		return Volume{}, err
	}
	defer func() {
		if uerr := unmountAll(fs, false); uerr != nil && err == nil {
			err = uerr
		}
	}()
	// 0777 as a Kubernetes emptyDir: the container's user, whoever it is
	// (and whatever user namespace maps it), can write; the host side is
	// closed by the 0700 root.
	data := m.dataDir(name)
	if err := os.Mkdir(data, 0o777); err != nil {
		return Volume{}, err
	}
	if err := os.Chmod(data, 0o777); err != nil { // past the umask
		return Volume{}, err
	}
	if encrypted {
		id, err := addKey(fs, key)
		if err != nil {
			return Volume{}, err
		}
		if err := setPolicy(data, id); err != nil {
			return Volume{}, err
		}
		v.KeyID = id
	}
	if err := writeJSON(filepath.Join(dir, "volume.json"), v); err != nil {
		return Volume{}, err
	}
	m.log.InfoContext(ctx, "volume created", "volume", name, "size", size, "encrypted", encrypted)
	return v, nil
}

// Get returns a volume and its holder.
func (m *Manager) Get(_ context.Context, name string) (Volume, error) {
	if err := checkName("name", name); err != nil {
		return Volume{}, err
	}
	return m.load(name)
}

func (m *Manager) load(name string) (Volume, error) {
	var v Volume
	if err := readJSON(filepath.Join(m.volDir(name), "volume.json"), &v); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return Volume{}, fmt.Errorf("volume %q: %w", name, errdefs.ErrNotFound)
		}
		return Volume{}, err
	}
	h, err := m.holder(name)
	if err != nil {
		return Volume{}, err
	}
	v.Holder = h
	return v, nil
}

func (m *Manager) holder(name string) (*Holder, error) {
	var h Holder
	if err := readJSON(filepath.Join(m.volDir(name), "holder.json"), &h); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		return nil, err
	}
	return &h, nil
}

// List returns the host's volumes by name.
func (m *Manager) List(_ context.Context) ([]Volume, error) {
	ents, err := os.ReadDir(filepath.Join(m.root, "volumes"))
	if err != nil {
		return nil, err
	}
	var vs []Volume
	for _, e := range ents {
		v, err := m.load(e.Name())
		if errors.Is(err, errdefs.ErrNotFound) {
			continue // being made, or left half-made by a crash
		}
		if err != nil {
			return nil, err
		}
		vs = append(vs, v)
	}
	sort.Slice(vs, func(i, j int) bool { return vs[i].Name < vs[j].Name })
	return vs, nil
}

// Mount claims volume name for opts.Holder and mounts its data at target
// (an absolute host path, made if missing). One holder at a time: a claim
// by another holder is errdefs.ErrConflict naming the holder. Mounting
// again for the same holder and target is a no-op that repairs missing
// mounts, so a start step can be retried.
func (m *Manager) Mount(ctx context.Context, name, target string, opts MountOptions) (err error) {
	if err := checkName("name", name); err != nil {
		return err
	}
	if opts.Holder == "" {
		return fmt.Errorf("holder: required: %w", errdefs.ErrInvalidArgument)
	}
	if !filepath.IsAbs(target) || filepath.Clean(target) != target {
		return fmt.Errorf("target %q: must be a clean absolute path: %w", target, errdefs.ErrInvalidArgument)
	}
	defer m.locks.lock("volume/" + name)()
	v, err := m.load(name)
	if err != nil {
		return err
	}
	if v.Encrypted && len(opts.Key) != KeySize {
		return fmt.Errorf("key: volume %q is encrypted and needs its %d-byte key: %w", name, KeySize, errdefs.ErrInvalidArgument)
	}
	if h := v.Holder; h != nil {
		if h.ID != opts.Holder {
			return fmt.Errorf("volume %q is in use by %q: %w", name, h.ID, errdefs.ErrConflict)
		}
		if h.Target != target || h.ReadOnly != opts.ReadOnly {
			return fmt.Errorf("volume %q is already mounted for %q at %s: %w", name, h.ID, h.Target, errdefs.ErrConflict)
		}
		return m.attach(v, *h, opts.Key)
	}
	h := Holder{ID: opts.Holder, Target: target, ReadOnly: opts.ReadOnly, Since: time.Now().UTC()}
	// The claim is on disk before anything is mounted, so a crash in
	// between leaves a record Cleanup or Restore acts on.
	holderFile := filepath.Join(m.volDir(name), "holder.json")
	if err := writeJSON(holderFile, h); err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = unmountAll(target, true)
			_ = unmountAll(m.fsDir(name), true)
			_ = os.Remove(holderFile)
		}
	}()
	if err := m.attach(v, h, opts.Key); err != nil {
		return err
	}
	m.log.InfoContext(ctx, "volume mounted", "volume", name, "holder", h.ID, "target", target, "readOnly", h.ReadOnly)
	return nil
}

// attach makes the mounts a claim stands for, skipping those present:
// the volume's filesystem at its fs dir (unlocked with key when
// encrypted) and its data dir bound at the holder's target.
func (m *Manager) attach(v Volume, h Holder, key []byte) error {
	fs := m.fsDir(v.Name)
	ok, err := mounted(fs)
	if err != nil {
		return err
	}
	if !ok {
		// A loop device still backed by the image is a mount of it that
		// outlived its release, in another mount namespace (a container
		// still running): through a second loop device the kernel would
		// mount the image as a second, independent ext4, and the two
		// would corrupt it.
		devs, err := waitLoopsGone(m.image(v.Name), loopSettle)
		if err != nil {
			return err
		}
		if len(devs) > 0 {
			return fmt.Errorf("volume %q: its filesystem is still mounted outside this agent (%s), by a process of its previous holder: %w", v.Name, devs[0], errdefs.ErrConflict)
		}
		if err := os.MkdirAll(fs, 0o700); err != nil {
			return err
		}
		if err := mountImage(m.image(v.Name), fs); err != nil {
			return err
		}
	}
	if v.Encrypted {
		// Adding a key already there only counts one more user of it.
		id, err := addKey(fs, key)
		if err != nil {
			return err
		}
		if id != v.KeyID {
			_ = removeKey(fs, id)
			return fmt.Errorf("key: not the key of volume %q: %w", v.Name, errdefs.ErrPermissionDenied)
		}
	}
	ok, err = mounted(h.Target)
	if err != nil || ok {
		return err
	}
	if err := os.MkdirAll(h.Target, 0o755); err != nil {
		return err
	}
	return bindMount(m.dataDir(v.Name), h.Target, h.ReadOnly)
}

// Unmount releases holder's claim on volume name: its target and the
// filesystem are unmounted (the kernel then detaches the loop device).
// Unmounting a free volume is a no-op; another holder's is a conflict.
func (m *Manager) Unmount(ctx context.Context, name, holder string) error {
	if err := checkName("name", name); err != nil {
		return err
	}
	defer m.locks.lock("volume/" + name)()
	v, err := m.load(name)
	if err != nil {
		return err
	}
	if v.Holder == nil {
		return nil
	}
	if v.Holder.ID != holder {
		return fmt.Errorf("volume %q is in use by %q, not %q: %w", name, v.Holder.ID, holder, errdefs.ErrConflict)
	}
	if err := m.release(v, false); err != nil {
		return err
	}
	// Return with the loop device gone (autoclear is asynchronous), so
	// that the next holder's Mount finds the volume free.
	if devs, _ := waitLoopsGone(m.image(name), loopSettle); len(devs) > 0 {
		m.log.WarnContext(ctx, "volume released but its filesystem is still mounted in another namespace; it cannot be mounted again until that mount goes", "volume", name, "holder", holder, "device", devs[0])
	}
	m.log.InfoContext(ctx, "volume unmounted", "volume", name, "holder", holder)
	return nil
}

// release unmounts a held volume and drops the claim; the claim stays if
// an unmount fails, so the volume is not handed to someone else while
// still in use.
func (m *Manager) release(v Volume, detach bool) error {
	if err := unmountAll(v.Holder.Target, detach); err != nil {
		return err
	}
	if err := unmountAll(m.fsDir(v.Name), detach); err != nil {
		return err
	}
	if err := os.Remove(filepath.Join(m.volDir(v.Name), "holder.json")); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// Remove deletes a volume and its data. A volume in use is a conflict
// naming its holder.
func (m *Manager) Remove(ctx context.Context, name string) error {
	if err := checkName("name", name); err != nil {
		return err
	}
	defer m.locks.lock("volume/" + name)()
	v, err := m.load(name)
	if err != nil {
		return err
	}
	if v.Holder != nil {
		return fmt.Errorf("volume %q is in use by %q: %w", name, v.Holder.ID, errdefs.ErrConflict)
	}
	// Never RemoveAll through a mount: that would delete the data of a
	// filesystem still attached.
	if err := unmountAll(m.fsDir(name), false); err != nil {
		return err
	}
	if err := os.RemoveAll(m.volDir(name)); err != nil {
		return err
	}
	m.log.InfoContext(ctx, "volume removed", "volume", name)
	return nil
}

// Restore re-attaches every claimed volume as its holder record says:
// after an agent restart (a no-op, the mounts are still there) or a host
// reboot (the filesystems are mounted again). keyFor returns an encrypted
// volume's key, which the host does not keep. Errors are per volume and
// joined; the others are restored all the same. Call it after Cleanup,
// which releases the claims of holders that are gone.
func (m *Manager) Restore(ctx context.Context, keyFor func(name string) ([]byte, error)) error {
	vs, err := m.List(ctx)
	if err != nil {
		return err
	}
	var errs []error
	for _, v := range vs {
		if err := m.restore(ctx, v.Name, keyFor); err != nil {
			errs = append(errs, fmt.Errorf("volume %q: %w", v.Name, err))
		}
	}
	return errors.Join(errs...)
}

func (m *Manager) restore(ctx context.Context, name string, keyFor func(name string) ([]byte, error)) error {
	defer m.locks.lock("volume/" + name)()
	v, err := m.load(name) // again, under the lock
	if err != nil || v.Holder == nil {
		return err
	}
	var key []byte
	if v.Encrypted {
		if keyFor == nil {
			return fmt.Errorf("encrypted and no key source: %w", errdefs.ErrFailedPrecondition)
		}
		if key, err = keyFor(name); err != nil {
			return fmt.Errorf("key: %w", err)
		}
	}
	if err := m.attach(v, *v.Holder, key); err != nil {
		return err
	}
	m.log.InfoContext(ctx, "volume restored", "volume", name, "holder", v.Holder.ID, "target", v.Holder.Target)
	return nil
}

// writeJSON replaces a record atomically and durably: a record that
// survives a power cut is whole, and is the old one or the new one.
func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(path, append(b, '\n'), 0o600)
}

func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}
