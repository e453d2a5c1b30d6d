// Package threadns runs a function on one OS thread in another namespace
// and puts the thread back where it was.
//
// Namespaces (setns, unshare) belong to a thread, not to the Go process,
// so the caller's goroutine must hold its thread (runtime.LockOSThread)
// from before the call. The usual Go idiom, leaving the thread locked so
// that Go ends it with its goroutine, fails for one thread: the process's
// first (Go's m0, the thread group leader), which Go parks for good
// instead of ending. /proc/self, /proc/net and other per-process views
// follow the leader, so a leader left in an instance's network namespace
// made the agent read that instance's sockets as the host's (a port
// published over a host listener was admitted) and kept the namespace
// alive after its instance was gone. These functions move the thread back
// and unlock it; only if that fails is the thread left locked.
package threadns

import (
	"errors"
	"fmt"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// New runs fn in a new namespace of kind (CLONE_NEWNET, CLONE_NEWUTS).
func New(kind int, fn func() error) error {
	return run(kind, func() error { return unix.Unshare(kind) }, fn)
}

// Join runs fn in the namespace of kind that path (/proc/PID/ns/...) is.
func Join(path string, kind int, fn func() error) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return run(kind, func() error { return unix.Setns(int(f.Fd()), kind) }, fn)
}

func run(kind int, enter, fn func() error) error {
	name, err := file(kind)
	if err != nil {
		return err
	}
	orig, err := os.Open("/proc/thread-self/ns/" + name)
	if err != nil {
		return fmt.Errorf("open the thread's %s namespace: %w", name, err)
	}
	defer orig.Close()
	if err := enter(); err != nil {
		return fmt.Errorf("enter a %s namespace: %w", name, err)
	}
	ferr := fn()
	if err := unix.Setns(int(orig.Fd()), kind); err != nil {
		return errors.Join(ferr, fmt.Errorf("return to the thread's %s namespace: %w", name, err))
	}
	runtime.UnlockOSThread()
	return ferr
}

func file(kind int) (string, error) {
	switch kind {
	case unix.CLONE_NEWNET:
		return "net", nil
	case unix.CLONE_NEWUTS:
		return "uts", nil
	}
	return "", fmt.Errorf("namespace kind %#x is not supported", kind)
}
