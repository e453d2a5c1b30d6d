package volume

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// KeySize is the size of a volume key: fscrypt's v2 policies derive the
// per-file AES-256-XTS keys (64 bytes) from it with HKDF-SHA512, so the
// master key must be at least that long.
const KeySize = 64

// NewKey returns a fresh random volume key. The caller keeps it (the
// control plane, encrypted in its store) and hands it back to Mount; the
// host keeps only the key's identifier.
func NewKey() ([]byte, error) {
	k := make([]byte, KeySize)
	if _, err := rand.Read(k); err != nil {
		return nil, err
	}
	return k, nil
}

// addKeyArg is struct fscrypt_add_key_arg followed by the raw key, as the
// ioctl reads it.
type addKeyArg struct {
	unix.FscryptAddKeyArg
	raw [KeySize]byte
}

// addKey adds a v2 master key to the keyring of the filesystem holding
// dir and returns its identifier (hex), which the kernel derives from the
// key: the same key always gives the same identifier, so comparing it
// with the one recorded at creation tells a wrong key from the right one.
// The keyring belongs to the filesystem and goes when it is unmounted.
func addKey(dir string, key []byte) (string, error) {
	if len(key) != KeySize {
		return "", fmt.Errorf("key is %d bytes, want %d", len(key), KeySize)
	}
	f, err := os.Open(dir)
	if err != nil {
		return "", err
	}
	defer f.Close()
	var arg addKeyArg
	arg.Key_spec.Type = unix.FSCRYPT_KEY_SPEC_TYPE_IDENTIFIER
	arg.Raw_size = KeySize
	copy(arg.raw[:], key)
	defer clear(arg.raw[:])
	if err := ioctl(f, unix.FS_IOC_ADD_ENCRYPTION_KEY, unsafe.Pointer(&arg)); err != nil {
		return "", fmt.Errorf("FS_IOC_ADD_ENCRYPTION_KEY on %s: %w", dir, err)
	}
	return hex.EncodeToString(arg.Key_spec.U[:unix.FSCRYPT_KEY_IDENTIFIER_SIZE]), nil
}

// removeKey takes a key out of the filesystem's keyring, which locks the
// directories it unlocked once no file in them is open.
func removeKey(dir, id string) error {
	raw, err := hex.DecodeString(id)
	if err != nil || len(raw) != unix.FSCRYPT_KEY_IDENTIFIER_SIZE {
		return fmt.Errorf("key identifier %q is not %d hex bytes", id, unix.FSCRYPT_KEY_IDENTIFIER_SIZE)
	}
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	var arg unix.FscryptRemoveKeyArg
	arg.Key_spec.Type = unix.FSCRYPT_KEY_SPEC_TYPE_IDENTIFIER
	copy(arg.Key_spec.U[:], raw)
	if err := ioctl(f, unix.FS_IOC_REMOVE_ENCRYPTION_KEY, unsafe.Pointer(&arg)); err != nil {
		return fmt.Errorf("FS_IOC_REMOVE_ENCRYPTION_KEY on %s: %w", dir, err)
	}
	return nil
}

// setPolicy makes the empty directory dir encrypted with the v2 key id:
// file contents with AES-256-XTS, names with AES-256-CTS, names padded to
// 32 bytes so their lengths leak less.
func setPolicy(dir, id string) error {
	raw, err := hex.DecodeString(id)
	if err != nil || len(raw) != unix.FSCRYPT_KEY_IDENTIFIER_SIZE {
		return fmt.Errorf("key identifier %q is not %d hex bytes", id, unix.FSCRYPT_KEY_IDENTIFIER_SIZE)
	}
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	p := unix.FscryptPolicyV2{
		Version:                   unix.FSCRYPT_POLICY_V2,
		Contents_encryption_mode:  unix.FSCRYPT_MODE_AES_256_XTS,
		Filenames_encryption_mode: unix.FSCRYPT_MODE_AES_256_CTS,
		Flags:                     unix.FSCRYPT_POLICY_FLAGS_PAD_32,
	}
	copy(p.Master_key_identifier[:], raw)
	if err := ioctl(f, unix.FS_IOC_SET_ENCRYPTION_POLICY, unsafe.Pointer(&p)); err != nil {
		return fmt.Errorf("FS_IOC_SET_ENCRYPTION_POLICY on %s: %w", dir, err)
	}
	return nil
}

// policyKey returns the identifier of the v2 key that encrypts dir, or ""
// when dir is not encrypted.
func policyKey(dir string) (string, error) {
	f, err := os.Open(dir)
	if err != nil {
		return "", err
	}
	defer f.Close()
	var arg unix.FscryptGetPolicyExArg
	arg.Size = uint64(len(arg.Policy))
	if err := ioctl(f, unix.FS_IOC_GET_ENCRYPTION_POLICY_EX, unsafe.Pointer(&arg)); err != nil {
		if err == unix.ENODATA {
			return "", nil
		}
		return "", fmt.Errorf("FS_IOC_GET_ENCRYPTION_POLICY_EX on %s: %w", dir, err)
	}
	if arg.Policy[0] != unix.FSCRYPT_POLICY_V2 {
		return "", fmt.Errorf("%s: encryption policy version %d, want 2", dir, arg.Policy[0])
	}
	p := (*unix.FscryptPolicyV2)(unsafe.Pointer(&arg.Policy[0]))
	return hex.EncodeToString(p.Master_key_identifier[:]), nil
}

func ioctl(f *os.File, req uintptr, arg unsafe.Pointer) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var errno unix.Errno
	if err := rc.Control(func(fd uintptr) {
		_, _, errno = unix.Syscall(unix.SYS_IOCTL, fd, req, uintptr(arg))
	}); err != nil {
		return err
	}
	if errno != 0 {
		return errno
	}
	return nil
}
