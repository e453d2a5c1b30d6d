package threadns

import (
	"fmt"
	"os"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"
)

// The main goroutine is locked to the process's first thread (m0, the
// thread group leader), the one Go parks instead of ending, so that the
// tests can run code on it.
func init() { runtime.LockOSThread() }

var onLeader = make(chan func())

func TestMain(m *testing.M) {
	done := make(chan int)
	go func() { done <- m.Run() }()
	for {
		select {
		case f := <-onLeader:
			f()
		case code := <-done:
			os.Exit(code)
		}
	}
}

// leaderDo runs f on the thread group leader.
func leaderDo(f func()) {
	ran := make(chan struct{})
	onLeader <- func() { f(); close(ran) }
	<-ran
}

func needRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates namespaces")
	}
}

func link(t *testing.T, path string) string {
	t.Helper()
	s, err := os.Readlink(path)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// A new namespace made on the leader thread must not stay the process's:
// /proc/self follows the leader.
func TestNewOnLeaderLeavesProcessNamespace(t *testing.T) {
	needRoot(t)
	for _, tc := range []struct {
		name string
		kind int
	}{{"net", unix.CLONE_NEWNET}, {"uts", unix.CLONE_NEWUTS}} {
		t.Run(tc.name, func(t *testing.T) {
			before := link(t, "/proc/self/ns/"+tc.name)
			var inside string
			var err error
			leaderDo(func() {
				runtime.LockOSThread() // New unlocks once; init's lock stays
				err = New(tc.kind, func() error {
					inside, err = os.Readlink("/proc/thread-self/ns/" + tc.name)
					return err
				})
			})
			if err != nil {
				t.Fatal(err)
			}
			if inside == before {
				t.Fatalf("fn ran in the process's %s namespace %s, want a new one", tc.name, before)
			}
			if after := link(t, "/proc/self/ns/"+tc.name); after != before {
				t.Fatalf("the process's %s namespace is %s after New, was %s", tc.name, after, before)
			}
		})
	}
}

func TestJoinReturns(t *testing.T) {
	needRoot(t)
	// A namespace to join: a new one, held by a locked thread until the
	// test ends (Go ends that thread with its goroutine).
	target := make(chan string, 1)
	release := make(chan struct{})
	defer close(release)
	go func() {
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWUTS); err != nil {
			target <- ""
			return
		}
		target <- fmt.Sprintf("/proc/%d/task/%d/ns/uts", os.Getpid(), unix.Gettid())
		<-release
	}()
	path := <-target
	if path == "" {
		t.Fatal("unshare failed")
	}
	want := link(t, path)

	runtime.LockOSThread()
	runtime.LockOSThread() // Join unlocks once
	defer runtime.UnlockOSThread()
	before := link(t, "/proc/thread-self/ns/uts")
	var inside string
	if err := Join(path, unix.CLONE_NEWUTS, func() error {
		var err error
		inside, err = os.Readlink("/proc/thread-self/ns/uts")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if inside != want {
		t.Fatalf("fn ran in %s, want the joined %s", inside, want)
	}
	if after := link(t, "/proc/thread-self/ns/uts"); after != before {
		t.Fatalf("thread's uts namespace %s after Join, was %s", after, before)
	}
}

func TestUnsupportedKind(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := New(unix.CLONE_NEWPID, func() error { return nil }); err == nil {
		t.Fatal("New(CLONE_NEWPID) succeeded; want an error")
	}
}
