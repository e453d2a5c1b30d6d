package fill

import (
	"runtime"

	"golang.org/x/sys/unix"
)

// fillNice is the CPU priority (nice value) the filler runs at, and with
// it the CNI plugins and iptables processes it starts. On a 2-core host a
// refill (about 70 ms of plugin processes) would otherwise take CPU from
// the very starts it prepares for: the request path wins every contended
// time slice, and the filler catches up in the gaps.
const fillNice = 19

// LowPriority runs fn on an OS thread of its own at nice fillNice. Child
// processes inherit the nice value of the thread that forks them, and
// os/exec forks from the calling goroutine's thread, which LockOSThread
// pins. The thread's priority is put back before it is released; if that
// fails it stays locked and Go ends it with the goroutine (or, for the
// process's first thread, parks it), so its priority never passes to other
// goroutines.
func LowPriority(fn func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread()
		tid := unix.Gettid()
		// getpriority(2) returns 20 - nice.
		raw, err := unix.Getpriority(unix.PRIO_PROCESS, tid)
		_ = unix.Setpriority(unix.PRIO_PROCESS, tid, fillNice)
		fn()
		if err == nil && unix.Setpriority(unix.PRIO_PROCESS, tid, 20-raw) == nil {
			runtime.UnlockOSThread()
		}
	}()
	<-done
}
