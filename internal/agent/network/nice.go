package network

import (
	"context"
	"os"
	"runtime"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/version"
	"golang.org/x/sys/unix"
)

// helperNice is how much lower than the agent the CNI plugins run. A start
// burst execs several plugins per instance (bridge, host-local, bandwidth,
// ...), each tens of milliseconds of CPU; at the agent's own priority they
// compete with the embedded etcd, the lease keep-alives and the control
// plane in the same process tree (kanga up), which must keep running for
// the platform to stay up. A plugin at nice +10 gets about a tenth of the
// CPU of a nice-0 thread when both want it, and all of it when idle. (The
// warm filler runs its plugins lower still, at nice 19: see
// pool.lowPriority; this adds 10 to the niceness of the calling thread.)
const helperNice = 10

// newNiceExec is libcni's default Exec (what a nil Exec means) with the
// plugins run at helperNice.
func newNiceExec() *niceExec {
	return &niceExec{&invoke.DefaultExec{RawExec: &invoke.RawExec{Stderr: os.Stderr}, PluginDecoder: version.PluginDecoder{}}}
}

// niceExec runs CNI plugins at helperNice above the agent's niceness. A
// child inherits the niceness of the thread that forks it, so the fork
// runs on a thread of its own, lowered for the time of the call.
type niceExec struct{ *invoke.DefaultExec }

func (e *niceExec) ExecPlugin(ctx context.Context, pluginPath string, stdinData []byte, environ []string) ([]byte, error) {
	runtime.LockOSThread()
	tid := unix.Gettid()
	// getpriority(2) returns 20 - nice.
	raw, err := unix.Getpriority(unix.PRIO_PROCESS, tid)
	if err != nil {
		runtime.UnlockOSThread()
		return e.DefaultExec.ExecPlugin(ctx, pluginPath, stdinData, environ)
	}
	nice := 20 - raw
	if err := unix.Setpriority(unix.PRIO_PROCESS, tid, min(nice+helperNice, 19)); err != nil {
		runtime.UnlockOSThread()
		return e.DefaultExec.ExecPlugin(ctx, pluginPath, stdinData, environ)
	}
	out, err := e.DefaultExec.ExecPlugin(ctx, pluginPath, stdinData, environ)
	// Raising the priority back needs CAP_SYS_NICE; without it the thread
	// stays locked and ends with this goroutine, so no other goroutine
	// runs at the lowered priority.
	if unix.Setpriority(unix.PRIO_PROCESS, tid, nice) == nil {
		runtime.UnlockOSThread()
	}
	return out, err
}
