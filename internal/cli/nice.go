package cli

import (
	"errors"
	"log/slog"
	"os"
	"strconv"

	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"
)

// defaultDaemonNice is the CPU priority of the daemons (kanga up, server,
// agent): above the machine's ordinary processes, as etcd's operators are
// told to run etcd, so that the API, the embedded etcd, the lease
// keep-alives and the control-plane loop keep their pace when the machine
// is overloaded (issue 22). A thread at nice -5 weighs three times one at
// 0. Children inherit it: containerd and the runtime (the start path);
// CNI plugins run 10 below it, the warm filler at 19. The instances are
// weighed as one cgroup (--instances-cpu-shares), whatever their nice.
const defaultDaemonNice = -5

// addNiceFlag adds the daemons' --nice flag.
func addNiceFlag(f *pflag.FlagSet, n *int) {
	f.IntVar(n, "nice", defaultDaemonNice, "CPU priority (nice, -20 to 19) of this daemon's threads and the containerd it starts, so that the control path keeps its pace on an overloaded machine; 0 leaves it as started")
}

// setDaemonNice sets every thread of this process to nice n. Linux keeps
// a nice value per thread, and a new thread takes its creator's, so
// setting the threads there are now covers those to come.
func setDaemonNice(n int, log *slog.Logger) {
	if n == 0 {
		return
	}
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		log.Warn("setting the daemon's CPU priority failed", "nice", n, "err", err)
		return
	}
	var errs []error
	for _, t := range tasks {
		tid, err := strconv.Atoi(t.Name())
		if err != nil {
			continue
		}
		if err := unix.Setpriority(unix.PRIO_PROCESS, tid, n); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		log.Warn("setting the daemon's CPU priority failed", "nice", n, "err", err)
		return
	}
	log.Info("daemon CPU priority set", "nice", n)
}
