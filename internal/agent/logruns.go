package agent

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
	"github.com/kanga-run/kanga/internal/hostcontract"
)

var _ hostcontract.PreviousLogger = (*Agent)(nil)

// A container's output goes to one log across restarts (rotated files,
// see logfile.go), so `kanga logs` shows every run. To serve the run
// before the latest restart on its own (kubectl logs --previous), the
// agent notes in a small file next to the log the logical offset at which
// each restart began: run 0 starts at offset 0, run i at the i-th recorded
// offset. What rotation dropped of a run is gone from it too.

func runsPath(logPath string) string { return logPath + ".runs" }

// markRun records that a run of the container logging to path began at
// offset off.
func markRun(path string, off int64) error {
	f, err := os.OpenFile(runsPath(path), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	if _, err := fmt.Fprintf(f, "%d\n", off); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// runOffsets reads where each run of the log at path begins: 0 for the
// first, then one recorded offset per restart.
func runOffsets(path string) ([]int64, error) {
	offsets := []int64{0}
	f, err := os.Open(runsPath(path))
	if errors.Is(err, os.ErrNotExist) {
		return offsets, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		off, err := strconv.ParseInt(line, 10, 64)
		if err != nil || off < offsets[len(offsets)-1] {
			return nil, fmt.Errorf("%s: bad run offset %q", runsPath(path), line)
		}
		offsets = append(offsets, off)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return offsets, nil
}

// previousRun returns where the run before the current one lies in the
// log at path, [start, end); ok is false when the container has not
// restarted.
func previousRun(path string) (start, end int64, ok bool, err error) {
	offsets, err := runOffsets(path)
	if err != nil || len(offsets) < 2 {
		return 0, 0, false, err
	}
	n := len(offsets)
	return offsets[n-2], offsets[n-1], true, nil
}

// restartTask starts container c again after an exit, noting first where
// its log ends so that the finished run's output can be served on its own.
// A run is recorded only once it has started: a failed attempt is not a
// run.
func (r *runner) restartTask(ctx context.Context, c *ctr) error {
	path := r.a.logPath(r.uid, c.spec.Name)
	end := r.a.logEnd(path)
	if err := r.startTask(ctx, c); err != nil {
		return err
	}
	if err := markRun(path, end); err != nil {
		// The container runs; only --previous loses its boundary.
		r.log.Warn("recording where a run begins in the log", "container", c.spec.Name, "err", err)
	}
	return nil
}

// PreviousLogs returns the output of the run of a container before its
// latest restart (kubectl logs --previous). It fails with not found when
// the container has not restarted.
func (a *Agent) PreviousLogs(ctx context.Context, inst *api.Instance, container string) (io.ReadCloser, error) {
	if err := checkTenant(ctx, inst); err != nil {
		return nil, err
	}
	path := a.logPath(inst.UID, container)
	start, end, ok, err := previousRun(path)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("container %q of instance %q has not restarted, so it has no previous run; drop --previous for its output: %w",
			container, inst.Name, errdefs.ErrNotFound)
	}
	chain, err := a.openChain(path)
	if err != nil {
		return nil, fmt.Errorf("opening the log of container %q of instance %q: %w", container, inst.Name, err)
	}
	return chainReader{chain.section(start, end), chain}, nil
}

// chainReader reads a section of a log and closes its files.
type chainReader struct {
	io.Reader
	chain logChain
}

func (c chainReader) Close() error {
	c.chain.close()
	return nil
}
