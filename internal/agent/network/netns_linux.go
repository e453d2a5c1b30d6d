package network

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"

	cnins "github.com/containernetworking/plugins/pkg/ns"
	"github.com/kanga-run/kanga/internal/agent/threadns"
	"golang.org/x/sys/unix"
)

// netnsState says whether a path holds a live (bind-mounted) namespace.
type netnsState int

const (
	netnsAbsent  netnsState = iota // no file
	netnsStale                     // file exists but nothing is mounted on it
	netnsMounted                   // a network namespace is mounted on it
)

func statNetNS(path string) (netnsState, error) {
	err := cnins.IsNSorErr(path)
	var notExist cnins.NSPathNotExistErr
	var notNS cnins.NSPathNotNSErr
	switch {
	case err == nil:
		return netnsMounted, nil
	case errors.As(err, &notExist):
		return netnsAbsent, nil
	case errors.As(err, &notNS):
		return netnsStale, nil
	default:
		return netnsAbsent, fmt.Errorf("inspect netns %s: %w", path, err)
	}
}

// createNetNS creates a new network namespace, brings its loopback up and
// bind-mounts it on path so that it outlives every process in it.
//
// containerd's pkg/netns does the same but picks a random file name; Kanga
// names the file after the instance so that List can find orphans by name.
func createNetNS(path string) error {
	// /run is a tmpfs that others may tidy; recreate the directory rather
	// than fail every instance.
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("create netns directory: %w", err)
	}
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if err != nil {
		return fmt.Errorf("create netns mount point: %w", err)
	}
	f.Close()

	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		errc <- threadns.New(unix.CLONE_NEWNET, func() error {
			if err := loopbackUp(); err != nil {
				return err
			}
			src := fmt.Sprintf("/proc/%d/task/%d/ns/net", os.Getpid(), unix.Gettid())
			if err := unix.Mount(src, path, "none", unix.MS_BIND, ""); err != nil {
				return fmt.Errorf("bind mount netns on %s: %w", path, err)
			}
			return nil
		})
	}()
	if err := <-errc; err != nil {
		os.Remove(path)
		return err
	}
	return nil
}

// loopbackUp sets IFF_UP on "lo" in the calling thread's namespace.
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("bring lo up: %w", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return fmt.Errorf("bring lo up: %w", err)
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("bring lo up: get flags: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("bring lo up: set flags: %w", err)
	}
	return nil
}

// removeNetNS unmounts and removes the namespace file; a missing or
// unmounted file is not an error.
func removeNetNS(path string) error {
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil &&
		!errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmount netns %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove netns %s: %w", path, err)
	}
	return nil
}
