package cli

import (
	"io"
	"log/slog"
	"os"
	"runtime"
	"strconv"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// TestSetDaemonNice: every thread of the process gets the niceness, and
// threads the runtime starts afterwards inherit it.
func TestSetDaemonNice(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("requires root (a negative nice value)")
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	t.Cleanup(func() { setAllThreads(0) })
	setDaemonNice(-3, log)

	// Goroutines locked to their threads at once, while the others
	// wait: the runtime has to start new threads for them.
	const n = 8
	var (
		wg      sync.WaitGroup
		release = make(chan struct{})
		nices   = make(chan int, n)
	)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			raw, err := unix.Getpriority(unix.PRIO_PROCESS, 0)
			if err != nil {
				t.Error(err)
			}
			nices <- 20 - raw // getpriority(2) returns 20 - nice
			<-release
		}()
	}
	for range n {
		if nice := <-nices; nice != -3 {
			t.Errorf("a thread at nice %d, want -3", nice)
		}
	}
	close(release)
	wg.Wait()

	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	for _, task := range tasks {
		tid, _ := strconv.Atoi(task.Name())
		raw, err := unix.Getpriority(unix.PRIO_PROCESS, tid)
		if err != nil {
			continue // the thread ended
		}
		if nice := 20 - raw; nice != -3 {
			t.Errorf("thread %d at nice %d, want -3", tid, nice)
		}
	}
}

// setAllThreads sets every thread of the process to nice n
// (setDaemonNice does nothing for 0).
func setAllThreads(n int) {
	tasks, _ := os.ReadDir("/proc/self/task")
	for _, task := range tasks {
		if tid, err := strconv.Atoi(task.Name()); err == nil {
			_ = unix.Setpriority(unix.PRIO_PROCESS, tid, n)
		}
	}
}
